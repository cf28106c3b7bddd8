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
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from ..config import EMBEDDED_BASE, RECOMMENDED, TrainingConfig
from ..errors import ConfigError, DataError, IceburgError
from ..records import RejectWriter
from ..run_folder import RunFolder
from .result import MetricsLog, TrainingResult, as_dict

logger = logging.getLogger(__name__)

# Below this many optimizer steps per epoch, small data sets barely train (measured: 3 steps/epoch
# on the 53 surveyor transcripts moved eval loss by 0.1; 8+ steps gave several times more).
MIN_STEPS_PER_EPOCH = 8

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
            run, base = self._open_run(cfg)
            return self._train_preference(cfg, run, base, started)
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

    def _train_preference(self, cfg: TrainingConfig, run: RunFolder, base, started: float) -> TrainingResult:
        """--objective dpo|orpo|kto: pairs (read or mined) -> the same encoding, plan and LoRA ->
        the preference loop (training/preference.py) -> the same merge, save and exports."""
        from ..export.huggingface import save_adapter_and_merged
        from ..preference.data import write_jsonl
        from ..preference.pipeline import prepare_preferences
        from .model import build_model
        from .preference import PreferenceArgs, encode_kto, encode_pairs, train_preference

        with RejectWriter(run.rejects) as rejects:
            data = prepare_preferences(cfg, rejects)
            tokenizer, eos, added_tokens = _tokenizer(base.path, cfg)
            enc = encode_kto if cfg.objective == "kto" else encode_pairs
            train_set, dropped = enc(tokenizer, data.train, cfg.max_seq_length, eos)
            eval_set, dropped_eval = enc(tokenizer, data.eval, cfg.max_seq_length, eos)
            for ex_id in dropped + dropped_eval:
                src, _, line = ex_id.rpartition(":")
                rejects.drop("encode", None, [f"the prompt fills --max-seq-length {cfg.max_seq_length}: no "
                                              "answer token left to compare"], source=src, line=int(line or 0))
            stats = dict(data.stats, rejected=dict(rejects.counts), train_examples=len(train_set),
                         eval_examples=len(eval_set))
            records_rejected = rejects.total
        if not train_set:
            raise DataError("no preference examples left after encoding; see rejects.jsonl")
        run.write_json(run.data_stats, stats)
        write_jsonl(run.preferences, data.pairs or data.train + data.eval)
        seqs = [e for d in train_set for e in ((d.chosen, d.rejected) if cfg.objective != "kto" else (d.completion, d.kl))]
        plan = _plan(base.path, cfg, seqs)
        run.write_json(run.plan, as_dict(plan))
        model = build_model(base.path, cfg, plan, tokenizer, added_tokens)
        args = _train_args(cfg, plan, tokenizer, eos, run)
        # One micro-batch of B pairs is 2B unpadded sequences (chosen and rejected, or answer and
        # its KL mismatch): half the planner's rows keeps the same memory budget.
        args.micro_batch_size = max(1, plan.micro_batch_size // 2)
        args.checkpoint_dir, args.resume = None, False  # preference runs do not checkpoint (yet)
        metrics = MetricsLog(run.metrics)
        try:
            out = train_preference(model, train_set, eval_set, args, PreferenceArgs(cfg.objective, cfg.preference_beta),
                                   callbacks=[metrics, *self.callbacks])
        finally:
            metrics.close()
        logger.info("%s held-out before: %s; after: %s", cfg.objective, out.eval_before, out.eval_after)
        adapter_dir, merged_dir = save_adapter_and_merged(model, tokenizer, run.root, eos, base.path,
                                                          cfg.trust_remote_code)
        result = TrainingResult(
            model_name=cfg.output_name or run.name, run_dir=run.root, adapter_dir=adapter_dir,
            merged_dir=merged_dir, base_model=base.to_dict(), train_loss=out.train_loss,
            eval_loss_before=out.eval_before.get("loss", math.nan), eval_loss_after=out.eval_after.get("loss", math.nan),
            eval_history=[(out.steps, out.eval_after.get("loss", math.nan))], steps=out.steps,
            supervised_tokens=sum(sum(e.mask) for e in seqs) * out.pairs_seen // len(train_set),
            total_tokens=sum(len(e.input_ids) for e in seqs) * out.pairs_seen // len(train_set),
            records_read=int(data.stats.get("load", {}).get("lines", 0)), records_rejected=records_rejected,
            train_examples=len(train_set), eval_examples=len(eval_set),
            truncated_examples=sum(e.truncated for e in seqs), training_seconds=out.wall_seconds, wall_seconds=0.0,
            plan=as_dict(plan), learning_rate=args.learning_rate, objective=cfg.objective,
            preference={"before": out.eval_before, "after": out.eval_after, "pairs_seen": out.pairs_seen,
                        "data": data.stats})
        _export(result, cfg, run, base, stats, started)
        return result


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
            train_set = encode_all(tokenizer, cur.records, cfg.max_seq_length, eos, rejects, cur.weights, skip)
            eval_set = encode_all(tokenizer, data.eval_records, cfg.max_seq_length, eos, rejects, skip=skip)
            stats = dict(data.stats, rejected=dict(rejects.counts), train_examples=len(train_set.examples),
                         eval_examples=len(eval_set.examples), truncated=train_set.truncated,
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


def _tokenizer(path: Path, cfg: TrainingConfig):
    """The base's tokenizer with a chat template, and the end-of-turn ids training supervises."""
    from .encoding import ensure_chat_template, eos_ids
    from .model import generation_config, load_tokenizer

    tokenizer = load_tokenizer(path, cfg)
    added = ensure_chat_template(tokenizer)
    return tokenizer, eos_ids(tokenizer, generation_config(path)), added


def _plan(path: Path, cfg: TrainingConfig, examples: list, world_size: int = 1):
    """The hardware plan, from the config on the meta device before any weight is loaded. Small
    data sets need enough optimizer steps: the effective batch is capped so an epoch has at
    least MIN_STEPS_PER_EPOCH steps when the data allows (counted in packed rows)."""
    from ..hardware import configure_cpu_allocator, plan_training

    tokens = sum(len(e.input_ids) for e in examples)
    rows = tokens / cfg.max_seq_length if cfg.packing else len(examples)
    supervised = sum(e.supervised for e in examples) / max(1, tokens)  # sizes the logits (planner)
    plan = plan_training(Path(path), cfg, num_examples=max(1, math.ceil(rows / MIN_STEPS_PER_EPOCH)),
                         world_size=world_size, supervised_fraction=supervised)
    if plan.device == "cpu":
        configure_cpu_allocator()  # the planner's CPU estimate assumes freed memory is returned
    from .accel import gpu_option_problems

    problems = gpu_option_problems(cfg.attn_implementation, bool(cfg.use_liger), plan.device)
    if problems:
        raise ConfigError(problems)
    return plan


def _train_args(cfg: TrainingConfig, plan, tokenizer, eos: set[int], run: RunFolder, world_size: int = 1):
    from .trainer import TrainArgs

    return TrainArgs(
        epochs=cfg.epochs, max_steps=cfg.max_steps,
        learning_rate=cfg.resolved_learning_rate(plan.model.get("hidden_size")),
        warmup_ratio=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
        micro_batch_size=plan.micro_batch_size, grad_accum=plan.gradient_accumulation_steps,
        max_length=cfg.max_seq_length, packing=cfg.packing, eval_steps=cfg.eval_steps,
        save_steps=cfg.save_steps, seed=cfg.seed, device=plan.device, precision=plan.precision,
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos),
        checkpoint_dir=run.checkpoint, resume=cfg.resume, world_size=world_size,
        varlen=cfg.attn_implementation.startswith("flash_attention"), liger=bool(cfg.use_liger))


def _export(result: TrainingResult, cfg: TrainingConfig, run: RunFolder, base, data_stats: dict,
            started: float) -> None:
    """Run the requested exports; result.json is written either way (with the failure, if any)."""
    from ..export import export_model
    from ..export.base import build_export_context

    error: IceburgError | None = None
    if cfg.export_formats:
        ctx = build_export_context(
            cfg, name=cfg.model_type.value, model_type=cfg.model_type, adapter_dir=result.adapter_dir,
            base_model=cfg.base_model, max_seq_length=cfg.max_seq_length,
            run_info={"config": cfg.to_dict(), "data": data_stats, "eval_loss_before": result.eval_loss_before,
                      "eval_loss_after": result.eval_loss_after, "train_loss": result.train_loss,
                      "base": base.to_dict()})
        try:
            results = export_model(result.merged_dir, run.exports, list(cfg.export_formats), ctx)
            result.export_paths = {k: [str(p) for p in v.files] for k, v in results.items()}
            result.export_reports = {k: v.report for k, v in results.items()}
        except IceburgError as e:
            error = e
            result.export_error, result.success = str(e), False
    result.wall_seconds = time.time() - started
    run.write_json(run.result, result.to_dict())
    if error is not None:
        raise error

