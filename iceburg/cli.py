"""`iceburg-train` / `scripts/train_iceburg_model.py`: flags -> config -> one library call.

The training, data and export flags are generated from `TrainingConfig`'s field metadata (flag,
help, bounds, choices), so a flag and the config key it sets are defined once. Precedence:
defaults < `--config FILE.yaml` < flags. Everything is validated before torch is imported or any
stage runs; user errors print one `error: ...` line and exit with status 2; bugs keep their
traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

from .config import TrainingConfig
from .errors import IceburgError

logger = logging.getLogger("iceburg")

# Prefix of the error other ranks raise when rank 0 stopped (iceburg/training/finetuner.py).
RANK0_STOPPED = "rank 0 stopped:"

# Flags that pick what to do; everything else configures it.
ACTIONS = ("detect_hardware", "features", "configs", "export_only", "filter_only")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, names the flag, exit 2
        sys.stderr.write(f"error: {message} (see --help)\n")
        sys.exit(2)


def _add_config_flag(group: argparse._ArgumentGroup, f_: dataclasses.Field) -> None:
    md = f_.metadata
    names = [md["flag"], *md.get("aliases", ())]
    kw: dict = {"dest": f_.name, "default": argparse.SUPPRESS, "help": md.get("help", "")}
    kind = str(f_.type).replace(" | None", "")
    if md.get("choices"):
        kw["choices"] = list(md["choices"])
    if kind == "bool":
        if md.get("negate"):
            kw["action"] = "store_false"
        elif "None" in str(f_.type):  # tri-state: --x / --no-x / unset (planner decides)
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["action"] = "store_true"
        kw.pop("choices", None)
    elif kind in ("int", "float"):
        kw["type"] = int if kind == "int" else float
    elif kind == "list[str]":
        kw["nargs"] = md.get("nargs", "+")
    group.add_argument(*names, **kw)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="iceburg-train", description="Fine-tune specialised local LLMs from agent "
                "conversation logs: filter, score, LoRA-train, export.")
    act = p.add_argument_group("actions (one of)")
    act.add_argument("--detect-hardware", action="store_true", help="show the detected hardware")
    act.add_argument("--features", action="store_true", help="show optional capabilities and how to enable them")
    act.add_argument("--configs", action="store_true", help="show the resolved configuration of each model type here")
    act.add_argument("--export-only", metavar="DIR", help="export a run folder or any HF model folder "
                     "(to --output-dir when given, else DIR/exports for a run folder)")
    act.add_argument("--filter-only", action="store_true", help="run the truth filter only and write filtered data + report")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--config", metavar="YAML", help="YAML file with TrainingConfig keys (flags override it)")
    groups = {"actions": act, "training": p.add_argument_group("training"),
              "data": p.add_argument_group("data"), "export": p.add_argument_group("export"),
              "hpo": p.add_argument_group("hyperparameter search (docs/hpo.md)")}
    for f_ in dataclasses.fields(TrainingConfig):
        if f_.metadata.get("flag"):
            _add_config_flag(groups[f_.metadata.get("group", "training")], f_)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def make_config(args: argparse.Namespace) -> TrainingConfig:
    """defaults < YAML < flags, validated all at once (raises ConfigError naming every problem)."""
    data = TrainingConfig.from_yaml(args.config).to_dict() if args.config else {}
    fields = {f_.name for f_ in dataclasses.fields(TrainingConfig)}
    data.update({k: v for k, v in vars(args).items() if k in fields})
    return TrainingConfig.from_dict(data).validate()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args._argv = argv
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return _dispatch(args)
    except IceburgError as e:
        if os.environ.get("RANK", "0") == "0" or not str(e).startswith(RANK0_STOPPED):
            sys.stderr.write(f"error: {e}\n")  # rank 0's error is printed once, by rank 0
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: pass --resume (a search: --hpo-resume) with the same --output-name "
                         "to continue\n")
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    chosen = [a for a in ACTIONS if getattr(args, a)]
    if len(chosen) > 1:
        raise IceburgError("choose one action: " + " or ".join("--" + a.replace("_", "-") for a in chosen))
    if args.detect_hardware:
        from .reports import hardware_report

        print(hardware_report(as_json=args.json))
        return 0
    if args.features:
        from .reports import features_report

        print(features_report())
        return 0
    cfg = make_config(args)  # every config error, before any work
    if args.configs:
        from .reports import configs_report

        print(configs_report(cfg))
        return 0
    if args.export_only:
        from .export.cli import export_only, format_export_summary

        out_dir = Path(cfg.output_dir) if "output_dir" in vars(args) else None
        report = export_only(Path(args.export_only), cfg, out_dir)
        print(json.dumps(report, indent=2, default=str) if args.json else format_export_summary(report))
        return 0
    if args.filter_only:
        from .pipeline import filter_only

        report = filter_only(cfg)
        print(json.dumps(report, indent=2, default=str))
        return 0
    if "model_type" not in vars(args) and not _yaml_has(args.config, "model_type"):
        raise IceburgError("nothing to do: pass --model-type TYPE to train (or --detect-hardware, "
                           "--features, --configs, --export-only DIR, --filter-only)")
    from .training.distributed import env_world_size, launch

    if cfg.hpo and cfg.nproc > 1:
        raise IceburgError("--hpo with --nproc: a search runs its trials as separate processes "
                           "(--hpo-workers); drop --nproc")
    if cfg.nproc > 1 and env_world_size() == 1:
        return launch(args._argv, cfg.nproc)  # torchrun starts N copies of this command
    if cfg.hpo:
        from .hpo import run_study
        from .hpo.report import format_summary

        report = run_study(cfg)
        print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else format_summary(report))
        return 0
    from .training.finetuner import ICEBURGFineTuner

    result = ICEBURGFineTuner(cfg).train()
    if os.environ.get("RANK", "0") != "0":
        return 0  # rank 0 prints the summary
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        print(_train_summary(result, cfg))
    return 0 if result.success else 2


def _yaml_has(path: str | None, key: str) -> bool:
    """Whether the --config file sets `key` (a search's best_config.yaml names its model type);
    make_config has already parsed and validated the file."""
    import yaml

    if not path:
        return False
    with open(path, encoding="utf-8") as fh:
        return key in (yaml.safe_load(fh) or {})


def _train_summary(r, cfg: TrainingConfig) -> str:
    from .config import EMBEDDED_BASE, RECOMMENDED

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
    if r.objective != "sft" and r.preference.get("after"):
        b, a = r.preference["before"], r.preference["after"]
        keys = [k for k in ("rewards/accuracies", "rewards/margins", "likelihood_accuracy") if k in a]
        lines.insert(6, f"{r.objective} held-out:    " + ", ".join(f"{k} {b.get(k, float('nan')):.3f} -> {a[k]:.3f}"
                                                           for k in keys))
    for fmt, files in r.export_paths.items():
        lines.append(f"export {fmt + ':':<11} {', '.join(files)}")
    if r.export_error:
        lines.append(f"export failed:     {r.export_error}")
        lines.append(f"                   finish it with: iceburg-train --export-only {r.run_dir} --formats ...")
    if cfg.base_model == EMBEDDED_BASE:
        rec = RECOMMENDED[cfg.model_type]["base_model"]
        lines.append(f"note: trained the embedded demo base {EMBEDDED_BASE}; for a real {cfg.model_type.short} "
                     f"model the original design recommends {rec}: --base-model {rec}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
