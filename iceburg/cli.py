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

from .config import SECTION_TITLES, TrainingConfig, section_of
from .errors import ConfigError, IceburgError

logger = logging.getLogger("iceburg")

# Prefix of the error other ranks raise when rank 0 stopped (iceburg/recipes/sft.py: RANK0_STOPPED).
RANK0_STOPPED = "rank 0 stopped:"

# Flags that pick what to do; everything else configures it.
ACTIONS = ("detect_hardware", "features", "configs", "export_only", "filter_only", "report")


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
        if md.get("action"):  # "extend": `--gate A --gate B` collects both
            kw["action"] = md["action"]
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
    act.add_argument("--report", metavar="RUN", help="(re)build RUN/report.html from the run folder's files")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--config", metavar="YAML", help="YAML file with TrainingConfig keys (flags override it)")
    # one help section per config section (iceburg/config.py SECTIONS); --model-type is an action
    groups = {name: p.add_argument_group(title) for name, title in SECTION_TITLES.items()}
    for f_ in dataclasses.fields(TrainingConfig):
        if f_.metadata.get("flag"):
            where = act if f_.metadata.get("group") == "actions" else groups[_section(f_.name)]
            _add_config_flag(where, f_)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def make_config(args: argparse.Namespace) -> TrainingConfig:
    """defaults < YAML < flags, validated all at once (raises ConfigError naming every problem)."""
    data, problems = TrainingConfig.yaml_values(args.config) if args.config else ({}, [])
    fields = {f_.name for f_ in dataclasses.fields(TrainingConfig)}
    data.update({k: v for k, v in vars(args).items() if k in fields})
    try:
        cfg = TrainingConfig.from_dict(data)
    except (TypeError, ValueError) as e:  # a value the dataclass itself refuses (an unknown model type)
        raise ConfigError(problems + [str(e)]) from None
    problems += cfg.problems()
    if problems:
        raise ConfigError(problems)
    return cfg


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args._argv = argv
    from .logs import setup_logging

    setup_logging(args.verbose)
    if getattr(args, "json", False):  # machine-readable output: no bars on stderr either
        from .progress import set_enabled

        set_enabled(False)
    try:
        return _dispatch(args)
    except IceburgError as e:
        if os.environ.get("RANK", "0") == "0" or not str(e).startswith(RANK0_STOPPED):
            sys.stderr.write(f"error: {e}\n")  # rank 0's error is printed once, by rank 0
        return getattr(e, "exit_status", 2)  # 3: an evaluation gate failed (evaluation/release.py)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: pass --resume (a search: --hpo-resume) with the same --output-name "
                         "to continue\n")
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    chosen = [a for a in ACTIONS if getattr(args, a)]
    if len(chosen) > 1:
        raise IceburgError("choose one action: " + " or ".join("--" + a.replace("_", "-") for a in chosen))
    status = _action_without_config(args)
    if status is not None:
        return status
    cfg = make_config(args)  # every config error, before any work
    if cfg.gates:  # a malformed --gate is refused before training, not after it
        from .evaluation import parse_gates

        parse_gates(cfg.gates)
    if args.configs:
        from .reports import configs_report

        print(configs_report(cfg))
        return 0
    if args.export_only:
        from .export.cli import export_only
        from .summary import export_only_table

        out_dir = Path(cfg.output_dir) if "output_dir" in vars(args) else None
        report = export_only(Path(args.export_only), cfg, out_dir)
        print(json.dumps(report, indent=2, default=str) if args.json else export_only_table(report))
        return 0
    if (cfg.curate_tasks or cfg.curate_workers != 1) and not args.filter_only:
        raise IceburgError("--curate-tasks / --curate-workers curate data: add --filter-only "
                           "(they do not apply to training)")
    if args.filter_only:
        return _filter_only(cfg)
    return _train(args, cfg)


def _action_without_config(args: argparse.Namespace) -> int | None:
    """--detect-hardware, --features, --report RUN (no training config needed); None: none given."""
    if args.detect_hardware:
        from .reports import hardware_report

        # --base-model B (and --max-seq-length, --model-type, ...): also the plan for that base
        config = make_config(args) if "base_model" in vars(args) else None
        print(hardware_report(as_json=args.json, config=config))
        return 0
    if args.features:
        from .reports import features_report

        print(features_report())
        return 0
    if args.report:
        from .run_report import build_report

        print(build_report(Path(args.report)))
        return 0
    return None


def _filter_only(cfg: TrainingConfig) -> int:
    """--filter-only: streamed read + truth, or datatrove curation with --curate-tasks N."""
    if cfg.curate_workers != 1 and not cfg.curate_tasks:
        raise IceburgError("--curate-workers: only applies with --curate-tasks N (datatrove tasks)")
    if cfg.curate_tasks:
        from .curate import curate

        report = curate(cfg)
    else:
        from .pipeline import filter_only

        report = filter_only(cfg)
    print(json.dumps(report, indent=2, default=str))
    return 0


def _train(args: argparse.Namespace, cfg: TrainingConfig) -> int:
    """Training: a search (--hpo N), N processes (--nproc, torchrun), or one run; then the summary."""
    wants = ("model_type", "continue_from")  # --continue-from RUN: the parent's model type (docs/loop.md)
    if not any(k in vars(args) or _yaml_has(args.config, k) for k in wants):
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
    from .recipes.finetuner import ICEBURGFineTuner

    print(_chosen(cfg), file=sys.stderr)
    result = ICEBURGFineTuner(cfg).train()
    if os.environ.get("RANK", "0") != "0":
        return 0  # rank 0 prints the summary
    if cfg.compare_prompts and result.eval_examples and result.success and not cfg.gates:  # gates wrote eval.json
        from .evaluation import evaluate_run
        from .run_report import build_report

        evaluate_run(result.run_dir, n_prompts=cfg.compare_prompts, max_new_tokens=cfg.compare_max_new_tokens,
                     reuse_run_losses=True)
        build_report(result.run_dir)
    print(json.dumps(result.to_dict(), indent=2, default=str) if args.json else _train_summary(result, cfg))
    return 0 if result.success else 2


def _chosen(cfg: TrainingConfig) -> str:
    """The settings that decide how long the run takes, printed before it starts."""
    steps = f"max {cfg.max_steps} steps" if cfg.max_steps else f"{cfg.epochs} epoch(s)"
    return (f"training {cfg.model_type.short} on {cfg.base_model}: {steps}, rows of {cfg.max_seq_length} tokens, "
            f"batch {cfg.batch_size or 'planned'} x {cfg.gradient_accumulation_steps or 'planned'}, "
            f"data {', '.join(cfg.data_path) or 'bundled sample'}, threads {cfg.num_threads or 'default'}")


def _yaml_has(path: str | None, key: str) -> bool:
    """Whether the --config file sets `key` (a search's best_config.yaml names its model type);
    make_config has already parsed and validated the file."""
    import yaml

    if not path:
        return False
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    return key in data or key in (data.get(_section(key)) or {})


def _section(name: str) -> str:
    """A config key's section; a key not yet placed in one is listed under training (a test
    (tests/test_config.py) requires every key to have its section)."""
    try:
        return section_of(name)
    except KeyError:
        return "train"


def _train_summary(r, cfg: TrainingConfig) -> str:
    """The end-of-run table, the --compare answers, and where to go next."""
    from .config import EMBEDDED_BASE, RECOMMENDED
    from .run_folder import RunFolder
    from .summary import format_table, train_rows

    run = RunFolder(r.run_dir)
    lines = [format_table(train_rows(r.to_dict())), f"report: {run.report}"]
    if r.objective != "sft" and r.preference.get("after"):
        b, a = r.preference["before"], r.preference["after"]
        keys = [k for k in ("rewards/accuracies", "rewards/margins", "likelihood_accuracy") if k in a]
        keys = sorted(a) if r.objective == "grpo" else keys  # grpo: each held-out reward (docs/grpo.md)
        lines.append(f"{r.objective} held-out: " + ", ".join(f"{k} {b.get(k, float('nan')):.3f} -> {a[k]:.3f}"
                                                         for k in keys))
    if r.export_error:
        lines.append(f"export failed: {r.export_error}")
        lines.append(f"finish it with: iceburg-train --export-only {r.run_dir} --formats ...")
    if cfg.compare_prompts and run.eval.is_file():
        from .evaluation import format_eval

        lines += ["", format_eval(run.read_json(run.eval))]
    lines.append(f"try it: iceburg chat {r.run_dir}")
    if cfg.base_model == EMBEDDED_BASE:
        rec = RECOMMENDED[cfg.model_type]["base_model"]
        lines.append(f"note: trained the embedded demo base {EMBEDDED_BASE}; for a real model use --base-model "
                     f"smollm2-135m (embedded, offline) or your own (the original design recommends {rec} for "
                     f"{cfg.model_type.short}: --base-model {rec})")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
