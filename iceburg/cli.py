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

from .config import EMBEDDED_BASE, RECOMMENDED, ModelType, TrainingConfig, config_help
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
    act.add_argument("--report", metavar="RUN", help="(re)build RUN/report.html from the run folder's files")
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
    a = p.add_argument_group("after training")
    a.add_argument("--compare", dest="compare_prompts", type=int, default=S, help=H["compare_prompts"])
    a.add_argument("--compare-max-new-tokens", type=int, default=S, help=H["compare_max_new_tokens"])
    a.add_argument("--report-to", nargs="+", default=S, help=H["report_to"])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def make_config(args: argparse.Namespace) -> TrainingConfig:
    data = TrainingConfig.from_yaml(args.config).to_dict() if args.config else {}
    skip = {"detect_hardware", "features", "configs", "export_only", "filter_only", "json", "config", "verbose",
            "report"}
    for k, v in vars(args).items():
        if k not in skip and v is not None:
            data[k] = v
    return TrainingConfig.from_dict(data)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .logs import setup_logging

    setup_logging(args.verbose)
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
    if args.report:
        from .report import build_report

        print(build_report(Path(args.report)))
        return 0
    if args.export_only:
        from .export.cli import export_only

        report = export_only(Path(args.export_only), make_config(args))
        print(json.dumps(report, indent=2, default=str) if args.json else _summary(report, Path(args.export_only)))
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

    print(_chosen(cfg), file=sys.stderr)
    result = ICEBURGFineTuner(cfg).train()
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        print(_train_summary(result, cfg))
    return 0


def _summary(report: dict, folder: Path) -> str:
    from .summary import export_rows, format_table

    paths = {fmt: list(entry.get("files") or []) for fmt, entry in report.items()}
    return format_table(export_rows({fmt: entry.get("report") for fmt, entry in report.items()}, paths)) + f"\nfull proofs: --json, or iceburg-train --report {folder}"


def _chosen(cfg: TrainingConfig) -> str:
    """The settings that decide how long the run takes, printed before it starts."""
    steps = f"max {cfg.max_steps} steps" if cfg.max_steps else f"{cfg.epochs} epoch(s)"
    return (f"training {cfg.model_type.short} on {cfg.base_model}: {steps}, rows of {cfg.max_seq_length} tokens, "
            f"batch {cfg.batch_size or 'planned'} x {cfg.gradient_accumulation_steps or 'planned'}, "
            f"data {', '.join(cfg.data_path) or 'bundled sample'}, threads {cfg.num_threads or 'default'}")


def _train_summary(r, cfg: TrainingConfig) -> str:
    from .summary import format_table, train_rows

    lines = [format_table(train_rows(r.to_dict())), f"report: {r.run_dir / 'report.html'}"]
    eval_json = Path(r.run_dir) / "eval.json"
    if cfg.compare_prompts and eval_json.is_file():
        from .evaluation import format_eval

        lines += ["", format_eval(json.loads(eval_json.read_text(encoding="utf-8")))]
    lines.append(f"try it: iceburg chat {r.run_dir}")
    if cfg.base_model == EMBEDDED_BASE:
        lines.append(f"note: trained the embedded demo base {EMBEDDED_BASE}; for a real model use "
                     "--base-model smollm2-135m (embedded, offline) or your own (e.g. --base-model "
                     f"{RECOMMENDED[cfg.model_type]['base_model']})")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
