"""`ICEBURGFineTuner`: the one-command recipe, a short driver over the library.

    base model -> data pipeline (read, truth, split, emergence) -> encode -> plan -> LoRA train
    -> merge + save -> exports

Each phase is one call into its module (see docs/ARCHITECTURE.md); the run folder's file names
live in `RunFolder`. Failures raise; there is no fallback result. A failed export after training
is recorded in result.json (and raised), and `--export-only RUN` can finish the run. Under torchrun
(docs/distributed.md) rank 0 alone prepares the data, writes the run folder and exports; the
other ranks receive the encoded data from it and train.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from ..config import EMBEDDED_BASE, RECOMMENDED, TrainingConfig
from ..errors import DataError, IceburgError
from ..records import RejectWriter
from ..run_folder import RunFolder
from .result import MetricsLog, TrainingResult, as_dict
from .run_parts import MIN_STEPS_PER_EPOCH
from .run_parts import export_run as _export
from .run_parts import plan_run as _plan
from .run_parts import run_tokenizer as _tokenizer
from .run_parts import train_args as _train_args

logger = logging.getLogger(__name__)


__all__ = ["ICEBURGFineTuner", "TrainingResult", "MIN_STEPS_PER_EPOCH", "train_prepared"]


class ICEBURGFineTuner:
    """Runs the full recipe for one `TrainingConfig`.

    `callbacks` are extra training callbacks (`on_batch/on_step/on_eval`), e.g. to observe the
    exact order examples reach the model.
    """

    def __init__(self, config: TrainingConfig | None = None, callbacks: Iterable[Any] = ()):
        self.config = config or TrainingConfig()
        self.callbacks = list(callbacks)

    def run_dir(self) -> Path:
        cfg = self.config
        if cfg.output_name is None:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
            cfg.output_name = f"{cfg.model_type.value}-{stamp}"
        return Path(cfg.output_dir) / cfg.output_name

    def train(self) -> TrainingResult:
        import torch

        from .distributed import init_world, shutdown

        cfg, started = self.config.validate(), time.time()
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        if cfg.objective != "sft":  # preference tuning: one process (docs/preference.md)
            from .preference import run_preference

            run, base = self._open_run(cfg)
            return run_preference(cfg, run, base, started, self.callbacks)
        world = init_world(_device(cfg), cfg.distributed, cfg.dist_timeout)
        try:
            if not world.is_main:  # rank 0 prepares and writes; this rank gets the data from it
                return train_prepared(cfg, None, None, None, None, self.callbacks, started, world)
            try:
                run, base, rejects, data = self._prepare(cfg)
            except IceburgError as e:
                world.broadcast({"error": str(e)})  # every rank stops with the same error, none waits
                raise
            with rejects:
                return train_prepared(cfg, data, run, base, rejects, self.callbacks, started, world)
        finally:
            shutdown(world)

    def _open_run(self, cfg: TrainingConfig):
        """Create (or reopen for --resume) the run folder and resolve the base model."""
        from ..base_models import resolve_base_model

        run = RunFolder(self.run_dir())
        run.prepare(cfg.resume)
        run.write_json(run.config, cfg.to_dict())
        base = resolve_base_model(cfg.base_model, trust_remote_code=cfg.trust_remote_code)
        _warn_embedded(base, cfg)
        run.write_json(run.base_model, base.to_dict())
        return run, base

    def _prepare(self, cfg: TrainingConfig):
        from ..pipeline import prepare

        run, base = self._open_run(cfg)
        rejects = RejectWriter(run.rejects)
        data = prepare(cfg, rejects)
        from ..run_report import heldout_row, score_row

        run.write_jsonl(run.heldout, map(heldout_row, data.eval_records))  # `iceburg eval`, --compare
        run.write_jsonl(run.scores, map(score_row, data.curriculum.records))  # report.html histograms
        return run, base, rejects, data

def train_prepared(cfg: TrainingConfig, data, run: RunFolder | None, base, rejects: RejectWriter | None,
                   callbacks: Iterable[Any] = (), started: float | None = None, world=None) -> TrainingResult:
    """Encode -> plan -> LoRA train -> save -> export, for data already through the pipeline
    (`iceburg.pipeline.Prepared`) into the prepared run folder `run`. `rejects` receives the
    encode-stage drops and is closed (rejects.jsonl written) before training starts. Shared by
    `ICEBURGFineTuner.train` and each trial of a hyperparameter search (iceburg/hpo), which
    prepares the data once for all trials.

    Under torchrun (`world`, docs/distributed.md) rank 0 passes everything and broadcasts the
    encoded data and plan; the other ranks pass None for data/run/base/rejects and write nothing."""
    from .distributed import World, describe, unwrap, wrap_model
    from .encoding import encode_all
    from .model import build_model
    from .tool_render import tool_policy
    from .trainer import evaluate, train

    world = world or World()
    started = time.time() if started is None else started
    shared: dict[str, Any] = {}
    if world.is_main:
        try:
            cur = data.curriculum
            tokenizer, eos, added_tokens = _tokenizer(base.path, cfg)
            # tool-calling records need a template that writes their calls (docs/tools.md)
            tool_template, skip = tool_policy(tokenizer, [*cur.records, *data.eval_records])
            train_set = encode_all(tokenizer, cur.records, cfg.max_seq_length, eos, rejects, cur.weights, skip,
                                   overflow=cfg.overflow)
            eval_set = encode_all(tokenizer, data.eval_records, cfg.max_seq_length, eos, rejects, skip=skip)
            stats = dict(data.stats, rejected=dict(rejects.counts), train_examples=len(train_set.examples),
                         eval_examples=len(eval_set.examples), truncated=train_set.truncated,
                         split_windows=train_set.split,
                         tool_template=tool_template)
            records_rejected = rejects.total
            rejects.close()
            if not train_set.examples:
                raise DataError("no training examples left after filtering and encoding; see rejects.jsonl")
            run.write_json(run.data_stats, stats)
            plan = _plan(base.path, cfg, train_set.examples, world.size)
            # the world goes into plan.json (config.json stays loadable as --config)
            run.write_json(run.plan, dict(as_dict(plan), world=describe(world), backend=cfg.resolved_backend()))
        except IceburgError as e:
            world.broadcast({"error": str(e)})
            raise
        shared = {"run_name": run.name, "base": base, "cur": cur, "train_set": train_set, "eval_set": eval_set,
                  "eval_records": data.eval_records, "plan": plan, "records_read": data.records_read,
                  "records_rejected": records_rejected, "stats": stats}
    shared = world.broadcast(shared if world.is_main else None)
    if "error" in shared:
        raise IceburgError(f"rank 0 stopped: {shared['error']}")
    if not world.is_main:
        base, cur, plan = shared["base"], shared["cur"], shared["plan"]
        train_set, eval_set, stats = shared["train_set"], shared["eval_set"], shared["stats"]
        records_rejected = shared["records_rejected"]
        run = RunFolder(Path(cfg.output_dir) / shared["run_name"])
        tokenizer, eos, added_tokens = _tokenizer(base.path, cfg)
        tool_policy(tokenizer, [*cur.records, *shared["eval_records"]])

    def build():
        return build_model(base.path, cfg, plan, tokenizer, added_tokens)

    args = _train_args(cfg, plan, tokenizer, eos, run, world.size)
    # shuffled epochs pack best-fit (~12% padding -> see docs/training.md); ordered curricula keep
    # greedy in-order packing so their order survives
    args.best_fit = cur.shuffled
    pos: dict[int, list[int]] = {}  # record -> its examples (several: one per turn, encode_record)
    for new, orig in enumerate(train_set.kept):
        pos.setdefault(orig, []).append(new)

    def order_fn(epoch: int) -> list[int]:
        return [j for i in cur.epoch_order(epoch, cfg.seed) for j in pos.get(i, ())]

    if cfg.resolved_backend() == "mlx":  # one process; same examples, order, loss and run folder
        from .mlx_run import train_on_mlx

        model, eval_before, out = train_on_mlx(base.path, cfg, plan, run, args, train_set.examples,
                                               eval_set.examples, order_fn, added_tokens, callbacks)
    else:
        model = wrap_model(build(), world)
        eval_before = evaluate(model, eval_set.examples, args, world)
        logger.info("eval loss before training: %.4f", eval_before)
        metrics = [MetricsLog(run.metrics)] if world.is_main else []
        if world.is_main and "tensorboard" in cfg.report_to:
            from .tensorboard import TensorBoardLog

            metrics.append(TensorBoardLog(run.tensorboard))
        try:
            out = train(model, train_set.examples, order_fn, eval_set.examples, args,
                        callbacks=[*metrics, *callbacks], world=world)
        finally:
            for m in metrics:
                m.close()
    eval_after = (out.eval_history[-1][1] if out.eval_history
                  else evaluate(model, eval_set.examples, args, world))
    logger.info("eval loss after training: %.4f (before %.4f)", eval_after, eval_before)

    from ..export.huggingface import save_adapter_and_merged

    model = _gather_for_save(model, world, build)
    if not world.is_main:
        return _partial_result(cfg, run, base, out, eval_before, eval_after, plan, shared)
    adapter_dir, merged_dir = save_adapter_and_merged(unwrap(model), tokenizer, run.root, eos, base.path,
                                                      cfg.trust_remote_code)
    result = TrainingResult(
        model_name=cfg.output_name or run.name, run_dir=run.root, adapter_dir=adapter_dir,
        merged_dir=merged_dir, base_model=base.to_dict(), train_loss=out.train_loss,
        eval_loss_before=eval_before, eval_loss_after=eval_after, eval_history=out.eval_history,
        steps=out.steps, supervised_tokens=out.supervised_tokens, total_tokens=out.total_tokens,
        records_read=data.records_read, records_rejected=records_rejected,
        train_examples=len(train_set.examples), eval_examples=len(eval_set.examples),
        truncated_examples=train_set.truncated, training_seconds=out.wall_seconds, wall_seconds=0.0,
        plan=as_dict(plan), resumed_from_step=out.resumed_from, learning_rate=args.learning_rate)
    try:
        _export(result, cfg, run, base, stats, started)
    finally:  # report.html, also after a failed export (the CLI rebuilds it after --compare)
        from ..run_report import build_report

        build_report(run.root)
    return result


def _device(cfg: TrainingConfig) -> str:
    """The device kind the processes will train on (picks the distributed backend)."""
    import torch

    return cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")


def _gather_for_save(model, world, build):
    """The model rank 0 can save whole: DDP replicas already are; FSDP shards are gathered
    (every rank takes part) into a fresh unsharded model on rank 0."""
    if world.active and world.mode == "fsdp":
        from .distributed import gather_full_model

        return gather_full_model(model, world, build)
    return model


def _partial_result(cfg, run, base, out, eval_before, eval_after, plan, payload) -> TrainingResult:
    """What a non-zero rank returns: the same figures, no files (rank 0 writes them)."""
    return TrainingResult(
        model_name=cfg.output_name or run.name, run_dir=run.root, adapter_dir=run.adapter,
        merged_dir=run.merged, base_model=base.to_dict(), train_loss=out.train_loss,
        eval_loss_before=eval_before, eval_loss_after=eval_after, eval_history=out.eval_history,
        steps=out.steps, supervised_tokens=out.supervised_tokens, total_tokens=out.total_tokens,
        records_read=payload["records_read"], records_rejected=payload["records_rejected"],
        train_examples=len(payload["train_set"].examples), eval_examples=len(payload["eval_set"].examples),
        truncated_examples=payload["train_set"].truncated, training_seconds=out.wall_seconds,
        wall_seconds=0.0, plan=as_dict(plan), resumed_from_step=out.resumed_from)


def _warn_embedded(base, cfg: TrainingConfig) -> None:
    if base.source == "embedded":
        rec = RECOMMENDED[cfg.model_type]["base_model"]
        logger.warning("using the embedded base model %s. The original design recommends %s for %s; "
                       "pass --base-model %s to use it.", cfg.base_model or EMBEDDED_BASE, rec,
                       cfg.model_type.short, rec)
