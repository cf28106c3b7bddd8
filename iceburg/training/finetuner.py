"""`ICEBURGFineTuner`: the one-command pipeline, a thin orchestrator over the stage modules.

resolve base -> load + validate data -> truth filter -> split -> emergence + curriculum ->
hardware plan -> encode (assistant-only masks) -> LoRA train -> merge + save -> exports.

Each phase lives in its own module; this file only wires them together and writes the run
folder (see docs/ARCHITECTURE.md). Failures raise; there is no fallback result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from ..config import EMBEDDED_BASE, RECOMMENDED, TrainingConfig
from ..errors import DataError, IceburgError
from ..records import Record, Reject, RejectWriter

logger = logging.getLogger(__name__)

# Below this many optimizer steps per epoch, small data sets barely train (measured: 3 steps/epoch
# on the 53 surveyor transcripts moved eval loss by 0.1; 8+ steps gave several times more).
MIN_STEPS_PER_EPOCH = 8


@dataclass
class TrainingResult:
    """What a finished run measured. Only produced when training really completed."""

    model_name: str
    run_dir: Path
    adapter_dir: Path
    merged_dir: Path
    base_model: dict[str, Any]
    train_loss: float
    eval_loss_before: float
    eval_loss_after: float
    eval_history: list[tuple[int, float]]
    steps: int
    supervised_tokens: int
    total_tokens: int
    records_read: int
    records_rejected: int
    train_examples: int
    eval_examples: int
    truncated_examples: int
    training_seconds: float
    wall_seconds: float
    plan: dict[str, Any] = field(default_factory=dict)
    resumed_from_step: int = 0
    learning_rate: float = 0.0
    export_paths: dict[str, list[str]] = field(default_factory=dict)
    export_reports: dict[str, Any] = field(default_factory=dict)
    success: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("run_dir", "adapter_dir", "merged_dir"):
            d[k] = str(d[k])
        return d


class MetricsLog:
    """A training callback writing one JSON line per step and per evaluation."""

    def __init__(self, path: Path):
        self.path = path
        self._fh = open(path, "a", encoding="utf-8")

    def _write(self, obj: dict) -> None:
        self._fh.write(json.dumps(obj) + "\n")
        self._fh.flush()

    def on_batch(self, example_ids: list[str]) -> None:
        pass

    def on_step(self, step: int, metrics: dict) -> None:
        self._write({"type": "train", **metrics})

    def on_eval(self, step: int, eval_loss: float) -> None:
        self._write({"type": "eval", "step": step, "eval_loss": eval_loss})

    def close(self) -> None:
        self._fh.close()


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def eval_bucket(record: Record, seed: int) -> float:
    """A stable number in [0, 1) from the record's content and the seed (hash bucketing): the
    split does not change when records are added, removed or reordered."""
    h = hashlib.sha256(f"{seed}:{record.content_hash()}".encode()).hexdigest()
    return int(h[:12], 16) / 16 ** 12


def split_eval(records: list[Record], fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Held-out split: the round(fraction x n) records with the lowest hash buckets (at least one
    when there are >= 10). Ranking instead of thresholding keeps the eval size exact on small
    sets; hashing keeps the choice stable when records are reordered. The embedded iceburg-tiny
    base is pre-trained without the records this holds out under the default seed and fraction."""
    if fraction <= 0 or len(records) < 2:
        return records, []
    n_eval = max(1 if len(records) >= 10 else 0, int(round(len(records) * fraction)))
    ranked = sorted(range(len(records)), key=lambda i: eval_bucket(records[i], seed))
    ev = set(ranked[:n_eval])
    return [r for i, r in enumerate(records) if i not in ev], [r for i, r in enumerate(records) if i in ev]


class ICEBURGFineTuner:
    """Runs the full pipeline for one `TrainingConfig`.

    `callbacks` are extra training callbacks (`on_batch/on_step/on_eval`), e.g. to observe the
    exact order examples reach the model.
    """

    def __init__(self, config: TrainingConfig | None = None, callbacks: Iterable[Any] = ()):
        self.config = config or TrainingConfig()
        self.callbacks = list(callbacks)

    # -- phases ---------------------------------------------------------------------------------
    def run_dir(self) -> Path:
        cfg = self.config
        if cfg.output_name is None:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
            cfg.output_name = f"{cfg.model_type.value}-{stamp}"
        return Path(cfg.output_dir) / cfg.output_name

    def load_records(self, rejects: RejectWriter, stats: dict) -> list[Record]:
        from ..data import sample_data_path
        from ..data.loader import read_records

        cfg = self.config
        paths = cfg.data_path or [str(sample_data_path(cfg.model_type))]
        records = list(read_records(paths, rejects, strict=cfg.strict, stats=stats))
        for r in records:
            r.agent_type = r.agent_type or cfg.model_type.agent
        if not records:
            raise DataError(f"--data-path {', '.join(paths)}: no valid records ({stats.get('rejected', 0)} "
                            "line(s) rejected; see rejects.jsonl for the reasons)")
        return records

    def train(self) -> TrainingResult:
        import torch

        from ..base_models import resolve_base_model
        from ..hardware import plan_training
        from .curriculum import plain_curriculum
        from .encoding import encode, ensure_chat_template, eos_ids
        from .trainer import TrainArgs, evaluate, train

        cfg = self.config.validate()
        started = time.time()
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        run = self.run_dir()
        if run.exists() and (run / "result.json").exists() and not cfg.resume:
            raise IceburgError(f"--output-name: run folder {run} already holds a finished run; choose "
                               "another --output-name or delete it")
        if run.exists() and not cfg.resume and any(run.iterdir()):
            raise IceburgError(f"run folder {run} exists (an interrupted run?); pass --resume to continue "
                               "it or choose another --output-name")
        run.mkdir(parents=True, exist_ok=True)
        _write_json(run / "config.json", cfg.to_dict())

        # 1. base model
        base = resolve_base_model(cfg.base_model, trust_remote_code=cfg.trust_remote_code)
        if base.source == "embedded":
            rec = RECOMMENDED[cfg.model_type]["base_model"]
            logger.warning("using the embedded default base model %s (a tiny demo model). The original "
                           "design recommends %s for %s; pass --base-model %s to use it.",
                           EMBEDDED_BASE, rec, cfg.model_type.short, rec)
        _write_json(run / "base_model.json", base.to_dict())

        # 2. data
        load_stats: dict[str, int] = {}
        with RejectWriter(run / "rejects.jsonl") as rejects:
            records = self.load_records(rejects, load_stats)
            data_stats: dict[str, Any] = {"load": load_stats}
            if cfg.use_truth_filter:
                from ..truth import TruthFilter

                truth_system = None
                if cfg.truth_patterns:
                    from ..truth import PatternTruthSystem

                    truth_system = PatternTruthSystem.from_file(cfg.truth_patterns)
                records, tstats = TruthFilter(min_quality_score=cfg.min_quality_score, truth_system=truth_system).filter(
                    records, agent_type=cfg.model_type.agent, rejects=rejects)
                data_stats["truth_filter"] = _as_dict(tstats)
            if not records:
                raise DataError("the truth filter removed every record; lower --min-quality-score or "
                                "check rejects.jsonl for the reasons")
            train_recs, eval_recs = split_eval(records, cfg.eval_fraction, cfg.seed)
            from ..evaluation import write_heldout

            write_heldout(run, eval_recs)  # for `iceburg eval` and the report's before/after answers
            if cfg.use_emergence_weighting:
                from ..emergence import EmergenceProcessor

                from ..emergence import EmbeddingNoveltyDetector

                proc = EmergenceProcessor(detector=EmbeddingNoveltyDetector(dedup_threshold=cfg.semantic_dedup),
                                          rejects=rejects)
                scored, estats = proc.process(train_recs, agent_type=cfg.model_type.agent)
                curriculum = proc.create_curriculum(scored, strategy=cfg.curriculum_strategy)
                data_stats["emergence"] = _as_dict(estats)
            else:
                curriculum = plain_curriculum(train_recs)
            data_stats["curriculum"] = curriculum.strategy
            from ..report import write_scores

            write_scores(run, curriculum.records)

            # 3. tokenizer + encoding (assistant-only masks); records with nothing to learn -> rejects
            tokenizer = load_tokenizer(base.path, cfg)
            added_tokens = ensure_chat_template(tokenizer)
            eos = eos_ids(tokenizer, _generation_config(base.path))
            examples, keep_idx, truncated = [], [], 0
            for i, (rec, w) in enumerate(zip(curriculum.records, curriculum.weights)):
                rec.weight = float(w)
                ex = encode(tokenizer, rec, cfg.max_seq_length, eos)
                if ex is None:
                    rejects.write(Reject("encode", [f"no assistant token within max_seq_length={cfg.max_seq_length}"],
                                         rec.source, rec.line, record=rec.to_json()))
                    continue
                truncated += ex.truncated
                examples.append(ex)
                keep_idx.append(i)
            eval_examples = [e for e in (encode(tokenizer, r, cfg.max_seq_length, eos) for r in eval_recs) if e]
            records_rejected = rejects.total
            data_stats["rejected"] = dict(rejects.counts)
        if not examples:
            raise DataError("no training examples left after filtering and encoding; see rejects.jsonl")
        data_stats.update(train_examples=len(examples), eval_examples=len(eval_examples), truncated=truncated)
        _write_json(run / "data_stats.json", data_stats)
        pos = {orig: new for new, orig in enumerate(keep_idx)}

        # 4. plan (from the config on the meta device, before any weight is loaded), then the model.
        # Small data sets need enough optimizer steps: the effective batch is capped so an epoch
        # has at least MIN_STEPS_PER_EPOCH steps when the data allows (counted in packed rows).
        rows = sum(len(e.input_ids) for e in examples) / cfg.max_seq_length if cfg.packing else len(examples)
        plan = plan_training(Path(base.path), cfg, num_examples=max(1, math.ceil(rows / MIN_STEPS_PER_EPOCH)))
        _write_json(run / "plan.json", _as_dict(plan))
        if plan.device == "cpu":
            from ..hardware import configure_cpu_allocator

            configure_cpu_allocator()  # the planner's CPU estimate assumes freed memory is returned
        model = load_model(base.path, cfg, plan)
        if added_tokens and len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer))

        def order_fn(epoch: int) -> list[int]:
            return [pos[i] for i in curriculum.epoch_order(epoch, cfg.seed) if i in pos]

        # 5. LoRA
        model = apply_lora(model, plan, cfg)
        args = TrainArgs(
            epochs=cfg.epochs, max_steps=cfg.max_steps,
            learning_rate=cfg.resolved_learning_rate(getattr(model.config, "hidden_size", None)),
            warmup_ratio=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
            micro_batch_size=plan.micro_batch_size, grad_accum=plan.gradient_accumulation_steps,
            max_length=cfg.max_seq_length, packing=cfg.packing, eval_steps=cfg.eval_steps,
            save_steps=cfg.save_steps, seed=cfg.seed, device=plan.device, precision=plan.precision,
            pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos),
            checkpoint_dir=run / "checkpoint", resume=cfg.resume)
        if not plan.use_qlora:  # 4-bit weights are already placed on the GPU
            model.to(plan.device)

        # 6. train
        eval_before = evaluate(model, eval_examples, args)
        logger.info("eval loss before training: %.4f", eval_before)
        sinks = [MetricsLog(run / "metrics.jsonl")]
        if "tensorboard" in cfg.report_to:
            from .tensorboard import TensorBoardLog

            sinks.append(TensorBoardLog(run / "tensorboard"))
        try:
            out = train(model, examples, order_fn, eval_examples, args, callbacks=[*sinks, *self.callbacks])
        finally:
            for sink in sinks:
                sink.close()
        eval_after = out.eval_history[-1][1] if out.eval_history else evaluate(model, eval_examples, args)
        logger.info("eval loss after training: %.4f (before %.4f)", eval_after, eval_before)

        # 7. save adapter + merged model
        from ..export.huggingface import save_adapter_and_merged

        adapter_dir, merged_dir = save_adapter_and_merged(model, tokenizer, run, eos)
        result = TrainingResult(
            model_name=cfg.output_name or run.name, run_dir=run, adapter_dir=adapter_dir, merged_dir=merged_dir,
            base_model=base.to_dict(), train_loss=out.train_loss, eval_loss_before=eval_before,
            eval_loss_after=eval_after, eval_history=out.eval_history, steps=out.steps,
            supervised_tokens=out.supervised_tokens, total_tokens=out.total_tokens,
            records_read=load_stats.get("lines", 0), records_rejected=records_rejected,
            train_examples=len(examples), eval_examples=len(eval_examples), truncated_examples=truncated,
            training_seconds=out.wall_seconds, wall_seconds=0.0, plan=_as_dict(plan),
            resumed_from_step=out.resumed_from, learning_rate=args.learning_rate)

        # 8. exports
        formats = [f for f in cfg.export_formats if f != "huggingface"]
        if "huggingface" in cfg.export_formats or formats:
            from ..export import ExportContext, export_model

            ctx = ExportContext(model_type=cfg.model_type, name=f"{cfg.model_type.value}",
                                quantization=list(cfg.quantization), onnx_int8=cfg.onnx_int8, max_seq_length=cfg.max_seq_length,
                                adapter_dir=adapter_dir, base_model=cfg.base_model,
                                run_info={"config": cfg.to_dict(), "data": data_stats,
                                          "eval_loss_before": eval_before, "eval_loss_after": eval_after,
                                          "train_loss": out.train_loss, "base": base.to_dict()})
            results = export_model(merged_dir, run / "exports", list(cfg.export_formats), ctx)
            result.export_paths = {k: [str(p) for p in v.files] for k, v in results.items()}
            result.export_reports = {k: v.report for k, v in results.items()}
        result.wall_seconds = time.time() - started
        _write_json(run / "result.json", result.to_dict())
        self.after_run(run, bool(eval_recs))
        return result

    def after_run(self, run: Path, has_heldout: bool) -> None:
        """Base vs tuned answers to a few held-out prompts (--compare N), then report.html."""
        from ..report import build_report

        cfg = self.config
        if cfg.compare_prompts and has_heldout:
            from ..evaluation import evaluate_run

            evaluate_run(run, n_prompts=cfg.compare_prompts, max_new_tokens=cfg.compare_max_new_tokens,
                         reuse_run_losses=True)
        build_report(run)


def _as_dict(obj: Any) -> Any:
    if obj is None:
        return None
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    return obj


def load_tokenizer(path: Path, cfg: TrainingConfig):
    """The base's fast tokenizer (offsets are needed for assistant-only masking)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    if not getattr(tokenizer, "is_fast", False):
        raise IceburgError(f"{path}: a fast (Rust) tokenizer is needed for assistant-only masking "
                           "(offsets); add tokenizer.json to the folder")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _generation_config(path: Path):
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(path)
    except OSError:  # no generation_config.json: the tokenizer's EOS is used
        return None


def load_model(path: Path, cfg: TrainingConfig, plan=None):
    """The model from a local HF folder; safetensors only, no remote code by default.

    QLoRA (plan.use_qlora, CUDA only) loads the base in 4-bit NF4 with bitsandbytes; otherwise
    the base loads in the planned precision (fp32 on CPU).
    """
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if not any(path.glob("*.safetensors")):
        raise IceburgError(f"base model folder {path} has no .safetensors weights; iceburg never "
                           "unpickles .bin files. Convert it with safetensors or use another base")
    torch.manual_seed(cfg.seed)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(getattr(plan, "precision", "fp32"), torch.float32)
    kwargs: dict[str, Any] = {}
    if plan is not None and getattr(plan, "use_qlora", False):
        try:
            from transformers import BitsAndBytesConfig
            import bitsandbytes  # noqa: F401
        except ImportError as e:
            from ..errors import MissingDependencyError

            raise MissingDependencyError("bitsandbytes (for QLoRA)", "pip install 'iceburg[qlora]'") from e
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype if dtype != torch.float32 else torch.bfloat16)
        kwargs["device_map"] = {"": 0}
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=cfg.trust_remote_code,
                                                 use_safetensors=True, dtype=dtype, **kwargs)
    if kwargs.get("quantization_config") is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=bool(getattr(plan, "gradient_checkpointing", False)))
    return model


def apply_lora(model, plan, cfg: TrainingConfig):
    import torch
    from peft import LoraConfig, TaskType, get_peft_model

    if plan.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    torch.manual_seed(cfg.seed)
    lcfg = LoraConfig(r=plan.lora_r, lora_alpha=plan.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(plan.lora_target_modules) or "all-linear", bias="none",
                      task_type=TaskType.CAUSAL_LM)
    model = get_peft_model(model, lcfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("LoRA r=%d alpha=%d on %s: %d trainable of %d parameters (%.2f%%)", plan.lora_r,
                plan.lora_alpha, lcfg.target_modules, trainable, total, 100 * trainable / total)
    return model
