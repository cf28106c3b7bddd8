"""The supervised (SFT) recipe, `--objective sft`:

    open_run -> pipeline (read, truth, split, emergence) -> train_prepared:
        prepare_on_main  (rank 0: tokenizer, encode, data_stats.json, plan, plan.json)
        share_job        (rank 0's job to every rank; each loads its own tokenizer)
        train_everywhere (every rank: model, LoRA, train, evaluate; MLX or torch)
        finish_on_main   (rank 0: finish_run: save, merge, exports, result.json, report.html)

Under torchrun (docs/distributed.md) rank 0 alone prepares the data and writes the run folder;
the other ranks receive the encoded data from it and train. Failures raise; there is no fallback
result. A failed export after training is recorded in result.json (and raised), and
`--export-only RUN` can finish the run.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterable, Iterator

from ..config import TrainingConfig
from ..errors import DataError, IceburgError
from ..records import RejectWriter
from ..run_folder import RunFolder
from ..training.result import TrainingResult, as_dict
from ..training.run_parts import plan_run, run_tokenizer, train_args
from .lineage import start_from_parent, write_train_records
from .run import Tokens, finish_run, make_result, open_run, run_metrics

logger = logging.getLogger(__name__)

# Prefix of the error the other ranks raise when rank 0 stopped (the CLI's RANK0_STOPPED).
RANK0_STOPPED = "rank 0 stopped:"


@dataclass
class SftJob:
    """What rank 0 prepares and every rank trains on (broadcast; the tokenizer is not in it)."""

    run: RunFolder
    base: Any  # ResolvedBase
    cur: Any  # Curriculum
    train_set: Any  # EncodedSet
    eval_set: Any  # EncodedSet
    eval_records: list
    plan: Any  # TrainingPlan
    records_read: int
    records_rejected: int
    stats: dict


@dataclass
class Trained:
    model: Any  # whole on rank 0 (FSDP shards gathered), ready to save
    eval_before: float
    eval_after: float
    out: Any  # TrainOutput
    learning_rate: float


def train_sft(cfg: TrainingConfig, callbacks: Iterable[Any] = (), started: float | None = None) -> TrainingResult:
    """The whole SFT recipe for a validated config, on one process or every rank of torchrun."""
    from ..training.distributed import init_world, shutdown

    world = init_world(_device(cfg), cfg.distributed, cfg.dist_timeout)
    try:
        if not world.is_main:  # rank 0 prepares and writes; this rank gets the data from it
            return train_prepared(cfg, None, None, None, None, callbacks, started, world)
        with stop_others_on_error(world):
            run, base = open_run(cfg)
            rejects = RejectWriter(run.rejects)
        with rejects:
            with stop_others_on_error(world):
                data = prepare_data(cfg, run, rejects)
            return train_prepared(cfg, data, run, base, rejects, callbacks, started, world)
    finally:
        shutdown(world)


def prepare_data(cfg: TrainingConfig, run: RunFolder, rejects: RejectWriter):
    """The pipeline (`iceburg.pipeline.prepare`), plus heldout.jsonl and scores.jsonl."""
    from ..pipeline import prepare
    from ..run_report import heldout_row, score_row

    data = prepare(cfg, rejects)
    run.write_jsonl(run.heldout, map(heldout_row, data.eval_records))  # `iceburg eval`, --compare
    run.write_jsonl(run.scores, map(score_row, data.curriculum.records))  # report.html histograms
    write_train_records(run, data.curriculum.records)  # what a continual run dedups against and replays
    return data


def train_prepared(cfg: TrainingConfig, data, run: RunFolder | None, base, rejects: RejectWriter | None,
                   callbacks: Iterable[Any] = (), started: float | None = None, world=None) -> TrainingResult:
    """Encode -> plan -> LoRA train -> save -> export, for data already through the pipeline
    (`iceburg.pipeline.Prepared`) into the opened run folder `run`. `rejects` receives the
    encode-stage drops and is closed (rejects.jsonl written) before training starts. Shared by
    `train_sft` and each trial of a hyperparameter search (`iceburg.recipes.hpo`), which prepares
    the data once for all trials. Under torchrun the other ranks pass None for
    data/run/base/rejects and write nothing."""
    from ..training.distributed import World

    world = world or World()
    started = time.time() if started is None else started
    job, tokens = None, None
    if world.is_main:
        with stop_others_on_error(world):
            job, tokens = prepare_on_main(cfg, data, run, base, rejects, world)
    job, tokens = share_job(cfg, job, tokens, world)
    trained = train_everywhere(cfg, job, tokens, list(callbacks), world)
    return finish_on_main(cfg, job, tokens, trained, world, started)


@contextmanager
def stop_others_on_error(world) -> Iterator[None]:
    """On rank 0: a user error is broadcast first, so every rank stops with it and none waits."""
    try:
        yield
    except IceburgError as e:
        world.broadcast({"error": str(e)})
        raise


def load_tokens(cfg: TrainingConfig, base, records: list) -> tuple[Tokens, str, Callable | None]:
    """The run's tokenizer with its tool-call template: (tokens, template kind, skip rule);
    tool-calling records need a template that writes their calls (docs/tools.md)."""
    from ..training.tool_render import tool_policy

    tokenizer, eos, added = run_tokenizer(base.path, cfg)
    template, skip = tool_policy(tokenizer, records)
    return Tokens(tokenizer, eos, added), template, skip


def prepare_on_main(cfg: TrainingConfig, data, run: RunFolder, base, rejects: RejectWriter,
                    world) -> tuple[SftJob, Tokens]:
    """Rank 0: encode the curriculum and the held-out records, close rejects.jsonl, write
    data_stats.json, plan, write plan.json."""
    from ..training.distributed import describe
    from ..training.encoding import encode_all

    cur = data.curriculum
    tokens, template, skip = load_tokens(cfg, base, [*cur.records, *data.eval_records])
    # the held-out set is encoded with the same choices (reasoning, turns) so eval losses compare
    opts = dict(strict=cfg.strict, reasoning=cfg.reasoning, train_on=cfg.train_on,
                split_parallel_calls=cfg.split_parallel_calls, supervise_tool_calls=cfg.supervise_tool_calls)
    train_set = encode_all(tokens.tokenizer, cur.records, cfg.max_seq_length, tokens.eos, rejects, cur.weights,
                           skip, overflow=cfg.overflow, **opts)
    eval_set = encode_all(tokens.tokenizer, data.eval_records, cfg.max_seq_length, tokens.eos, rejects, skip=skip,
                          **opts)
    stats = dict(data.stats, rejected=dict(rejects.counts), train_examples=len(train_set.examples),
                 eval_examples=len(eval_set.examples), truncated=train_set.truncated,
                 template_refused=train_set.refused + eval_set.refused,
                 reasoning_dropped=train_set.reasoning_dropped + eval_set.reasoning_dropped,
                 split_parallel_calls=train_set.split_calls + eval_set.split_calls,
                 split_windows=train_set.split, tool_template=template)
    records_rejected = rejects.total
    rejects.close()
    if not train_set.examples:
        raise DataError("no training examples left after filtering and encoding; see rejects.jsonl")
    run.write_json(run.data_stats, stats)
    plan = plan_run(base.path, cfg, train_set.examples, world.size)
    # the world goes into plan.json (config.json stays loadable as --config)
    run.write_json(run.plan, dict(as_dict(plan), world=describe(world), backend=cfg.resolved_backend()))
    job = SftJob(run=run, base=base, cur=cur, train_set=train_set, eval_set=eval_set,
                 eval_records=data.eval_records, plan=plan, records_read=data.records_read,
                 records_rejected=records_rejected, stats=stats)
    return job, tokens


def share_job(cfg: TrainingConfig, job: SftJob | None, tokens: Tokens | None, world) -> tuple[SftJob, Tokens]:
    """Rank 0's job on every rank (pickled once). The other ranks load the tokenizer themselves
    with the same tool-call template; rank 0's error stops them all."""
    job = world.broadcast(job)
    if isinstance(job, dict) and "error" in job:
        raise IceburgError(f"{RANK0_STOPPED} {job['error']}")
    if tokens is None:
        tokens, _, _ = load_tokens(cfg, job.base, [*job.cur.records, *job.eval_records])
    return job, tokens


def epoch_order(job: SftJob, seed: int) -> Callable[[int], list[int]]:
    """Example order per epoch: the curriculum's record order, each record's examples in a row
    (several: one per turn or window, encode_record)."""
    pos: dict[int, list[int]] = {}
    for new, orig in enumerate(job.train_set.kept):
        pos.setdefault(orig, []).append(new)

    def order_fn(epoch: int) -> list[int]:
        return [j for i in job.cur.epoch_order(epoch, seed) for j in pos.get(i, ())]

    return order_fn


def train_everywhere(cfg: TrainingConfig, job: SftJob, tokens: Tokens, callbacks: list, world) -> Trained:
    """Every rank: LoRA model, evaluation before, training (MLX or torch), evaluation after."""
    from ..training.model import build_model
    from ..training.trainer import evaluate

    args = train_args(cfg, job.plan, tokens.tokenizer, tokens.eos, job.run, world.size)
    # shuffled epochs pack best-fit (~12% padding -> see docs/training.md); ordered curricula keep
    # greedy in-order packing so their order survives
    args.best_fit = job.cur.shuffled
    order_fn = epoch_order(job, cfg.seed)
    build = partial(build_model, job.base.path, cfg, job.plan, tokens.tokenizer, tokens.added)
    if cfg.continue_from:  # the next version starts from the previous one's adapter (recipes/continual.py)
        build = partial(start_from_parent, build, cfg.continue_from)
    with run_metrics(cfg, job.run, world.is_main) as logs:
        if cfg.resolved_backend() == "mlx":  # one process; same examples, order, loss and run folder
            from ..training.mlx_run import train_on_mlx

            model, before, out = train_on_mlx(job.base.path, cfg, job.plan, job.run.mlx_work, args,
                                              job.train_set.examples, job.eval_set.examples, order_fn,
                                              tokens.added, [*logs, *callbacks])
        else:
            model, before, out = _train_torch(build, job, args, order_fn, [*logs, *callbacks], world)
    after = out.eval_history[-1][1] if out.eval_history else evaluate(model, job.eval_set.examples, args, world)
    logger.info("eval loss after training: %.4f (before %.4f)", after, before)
    return Trained(_gather_for_save(model, world, build), before, after, out, args.learning_rate)


def _train_torch(build, job: SftJob, args, order_fn, callbacks: list, world):
    from ..training.distributed import wrap_model
    from ..training.trainer import evaluate, train

    model = wrap_model(build(), world)
    before = evaluate(model, job.eval_set.examples, args, world)
    logger.info("eval loss before training: %.4f", before)
    out = train(model, job.train_set.examples, order_fn, job.eval_set.examples, args, callbacks=callbacks,
                world=world)
    return model, before, out


def finish_on_main(cfg: TrainingConfig, job: SftJob, tokens: Tokens, trained: Trained, world,
                   started: float) -> TrainingResult:
    """Every rank gets the same `TrainingResult`; rank 0 alone saves, merges, exports and writes
    result.json and report.html (`finish_run`)."""
    from ..training.distributed import unwrap

    out = trained.out
    result = make_result(
        cfg, job.run, job.base, job.plan, train_loss=out.train_loss, eval_loss_before=trained.eval_before,
        eval_loss_after=trained.eval_after, eval_history=out.eval_history, steps=out.steps,
        supervised_tokens=out.supervised_tokens, total_tokens=out.total_tokens, records_read=job.records_read,
        records_rejected=job.records_rejected, train_examples=len(job.train_set.examples),
        eval_examples=len(job.eval_set.examples), truncated_examples=job.train_set.truncated,
        training_seconds=out.wall_seconds, resumed_from_step=out.resumed_from, learning_rate=trained.learning_rate)
    if not world.is_main:
        return result
    return finish_run(cfg, job.run, job.base, unwrap(trained.model), tokens, result, job.stats, started)


def _device(cfg: TrainingConfig) -> str:
    """The device kind the processes will train on (picks the distributed backend)."""
    import torch

    return cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")


def _gather_for_save(model, world, build):
    """The model rank 0 can save whole: DDP replicas already are; FSDP shards are gathered
    (every rank takes part) into a fresh unsharded model on rank 0."""
    if world.active and world.mode == "fsdp":
        from ..training.distributed import gather_full_model

        return gather_full_model(model, world, build)
    return model
