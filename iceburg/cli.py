"""`iceburg-train` / `scripts/train_iceburg_model.py`: flags -> config -> one library call.

Precedence: defaults < `--config FILE.yaml` < flags. User errors print `error: ...` on one line
and exit with status 2; bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .config import EMBEDDED_BASE, ModelType, TrainingConfig, config_help
from .errors import IceburgError

logger = logging.getLogger("iceburg")
H = config_help()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, names the flag, exit 2
        sys.stderr.write(f"error: {message} (see --help)\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="iceburg-train", description="Fine-tune specialised local LLMs from agent "
                "conversation logs: filter, score, LoRA-train, export.")
    act = p.add_argument_group("actions (one of)")
    act.add_argument("--detect-hardware", action="store_true", help="show the detected hardware")
    act.add_argument("--features", action="store_true", help="show optional capabilities and how to enable them")
    act.add_argument("--configs", action="store_true", help="show the resolved configuration of each model type here")
    act.add_argument("--model-type", choices=[m.short for m in ModelType], help="train this model type: " + H["model_type"])
    act.add_argument("--export-only", metavar="DIR", help="export a run folder or any HF model folder")
    act.add_argument("--filter-only", action="store_true", help="run the truth filter only and write filtered data + report")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--config", metavar="YAML", help="YAML file with TrainingConfig keys (flags override it)")
    S = argparse.SUPPRESS
    t = p.add_argument_group("training")
    t.add_argument("--base-model", default=S, help=H["base_model"])
    t.add_argument("--data-path", nargs="+", default=S, help=H["data_path"])
    t.add_argument("--output-dir", default=S, help=H["output_dir"])
    t.add_argument("--output-name", default=S, help=H["output_name"])
    t.add_argument("--resume", action="store_true", default=S, help=H["resume"])
    t.add_argument("--epochs", type=int, default=S, help=H["epochs"])
    t.add_argument("--max-steps", type=int, default=S, help=H["max_steps"])
    t.add_argument("--learning-rate", type=float, default=S, help=H["learning_rate"])
    t.add_argument("--batch-size", type=int, default=S, help=H["batch_size"])
    t.add_argument("--grad-accum", dest="gradient_accumulation_steps", type=int, default=S,
                   help=H["gradient_accumulation_steps"])
    t.add_argument("--max-seq-length", type=int, default=S, help=H["max_seq_length"])
    t.add_argument("--no-packing", dest="packing", action="store_false", default=S, help="one transcript per row")
    t.add_argument("--eval-fraction", type=float, default=S, help=H["eval_fraction"])
    t.add_argument("--eval-steps", type=int, default=S, help=H["eval_steps"])
    t.add_argument("--save-steps", type=int, default=S, help=H["save_steps"])
    t.add_argument("--seed", type=int, default=S, help=H["seed"])
    t.add_argument("--threads", "--num-threads", dest="num_threads", type=int, default=S, help=H["num_threads"])
    t.add_argument("--device", default=S, help=H["device"])
    t.add_argument("--precision", default=S, help=H["precision"])
    t.add_argument("--lora-r", type=int, default=S, help=H["lora_r"])
    t.add_argument("--lora-alpha", type=int, default=S, help=H["lora_alpha"])
    t.add_argument("--qlora", dest="use_qlora", action="store_true", default=S, help=H["use_qlora"])
    t.add_argument("--trust-remote-code", action="store_true", default=S, help=H["trust_remote_code"])
    d = p.add_argument_group("data")
    d.add_argument("--min-quality-score", type=float, default=S, help=H["min_quality_score"])
    d.add_argument("--truth-patterns", default=S, help=H["truth_patterns"])
    d.add_argument("--no-truth-filter", dest="use_truth_filter", action="store_false", default=S)
    d.add_argument("--no-emergence", dest="use_emergence_weighting", action="store_false", default=S,
                   help="plain shuffled training (no novelty scoring or curriculum)")
    d.add_argument("--semantic-dedup", type=float, default=S, help=H["semantic_dedup"])
    d.add_argument("--curriculum", dest="curriculum_strategy", default=S, help=H["curriculum_strategy"])
    d.add_argument("--strict", action="store_true", default=S, help=H["strict"])
    e = p.add_argument_group("export")
    e.add_argument("--formats", dest="export_formats", nargs="+", default=S, help=H["export_formats"])
    e.add_argument("--quantization", nargs="+", default=S, help=H["quantization"])
    e.add_argument("--onnx-int8", action="store_true", default=S, help=H["onnx_int8"])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def make_config(args: argparse.Namespace) -> TrainingConfig:
    data = TrainingConfig.from_yaml(args.config).to_dict() if args.config else {}
    skip = {"detect_hardware", "features", "configs", "export_only", "filter_only", "json", "config", "verbose"}
    for k, v in vars(args).items():
        if k not in skip and v is not None:
            data[k] = v
    return TrainingConfig.from_dict(data)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return _dispatch(args)
    except IceburgError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: pass --resume with the same --output-name to continue\n")
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.detect_hardware:
        from .hardware import hardware_report

        print(hardware_report(as_json=args.json))
        return 0
    if args.features:
        from .hardware import features_report

        print(features_report())
        return 0
    if args.configs:
        from .hardware import configs_report

        print(configs_report(make_config(args)))
        return 0
    if args.export_only:
        from .export.cli import export_only

        report = export_only(Path(args.export_only), make_config(args))
        print(json.dumps(report, indent=2, default=str) if args.json else _summary(report))
        return 0
    if args.filter_only:
        from .truth import run_filter_only

        cfg = make_config(args).validate()
        out = Path(cfg.output_dir) / (cfg.output_name or "filtered")
        paths = cfg.data_path
        if not paths:
            from .data import sample_data_path

            paths = [str(sample_data_path(cfg.model_type))]
        report = run_filter_only(paths, out, cfg)
        print(json.dumps(report, indent=2, default=str))
        return 0
    if args.model_type is None:
        raise IceburgError("nothing to do: pass --model-type TYPE to train (or --detect-hardware, "
                           "--features, --configs, --export-only DIR, --filter-only)")
    cfg = make_config(args)
    from .training.finetuner import ICEBURGFineTuner

    result = ICEBURGFineTuner(cfg).train()
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        print(_train_summary(result, cfg))
    return 0


def _summary(report: dict) -> str:
    return "\n".join(f"{k}: {v}" for k, v in report.items())


def _train_summary(r, cfg: TrainingConfig) -> str:
    lines = [
        f"run folder:        {r.run_dir}",
        f"base model:        {r.base_model.get('spec')} ({r.base_model.get('source')})",
        f"records:           {r.records_read} read, {r.records_rejected} rejected (see rejects.jsonl), "
        f"{r.train_examples} train / {r.eval_examples} eval",
        f"steps:             {r.steps} ({r.supervised_tokens} supervised tokens, {r.training_seconds:.1f} s)",
        f"train loss:        {r.train_loss:.4f}",
        f"eval loss:         {r.eval_loss_before:.4f} -> {r.eval_loss_after:.4f}",
        f"adapter:           {r.adapter_dir}",
        f"merged model:      {r.merged_dir}",
    ]
    for fmt, files in r.export_paths.items():
        lines.append(f"export {fmt + ':':<11} {', '.join(files)}")
    if cfg.base_model == EMBEDDED_BASE:
        from .config import RECOMMENDED

        rec = RECOMMENDED[cfg.model_type]["base_model"]
        lines.append(f"note: trained the embedded demo base {EMBEDDED_BASE}; for a real {cfg.model_type.short} "
                     f"model the original design recommends {rec}: --base-model {rec}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
