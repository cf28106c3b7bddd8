"""`iceburg chat | eval | report`: use and inspect what `iceburg-train` produced.

  iceburg chat RUN_OR_MODEL [--prompt TEXT] [--gguf]   talk to a run's model (or any model/GGUF)
  iceburg eval RUN [--against BASE] [--gate RULE]      metrics with 95% intervals, gates -> eval.json
  iceburg report RUN                                   (re)build RUN/report.html

Each subcommand parses its flags and calls one library function (chat.py, evaluation.py,
run_report.py). User errors print one `error: ...` line and exit with status 2; a failed
`iceburg eval --gate` exits with status 3.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import IceburgError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        sys.stderr.write(f"error: {message} (see --help)\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="iceburg", description="Use and inspect models trained by iceburg-train.")
    p.add_argument("-v", "--verbose", action="store_true", help="show third-party logging (debug)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    c = sub.add_parser("chat", help="chat with a run's model, a model folder, a .gguf or a base name")
    c.add_argument("target", help="run folder, Hugging Face folder, .gguf file or base model name (smollm2-135m)")
    c.add_argument("--prompt", help="answer this one message and exit (for scripts)")
    c.add_argument("--gguf", action="store_true", help="with a run folder: use its GGUF export (llama.cpp)")
    c.add_argument("--system", help="system prompt (default: the run's; none for other models)")
    c.add_argument("--max-new-tokens", type=int, default=512, help="answer budget in tokens (default 512)")
    c.add_argument("--threads", type=int, default=None, help="CPU threads (default: the runtime's)")
    e = sub.add_parser("eval", help="tuned vs base with 95%% intervals: truth verdict, stop rate, tool calls, "
                       "forgetting, ...; gates (docs/evaluation.md)")
    e.add_argument("run", help="a finished run folder")
    e.add_argument("--against", help="compare with this base (default: the run's own base)")
    e.add_argument("--prompts", type=int, default=None, help="answer prompts per suite (default 16)")
    e.add_argument("--max-new-tokens", type=int, default=None, help="answer budget for the stop rate (default 384)")
    e.add_argument("--eval-data", nargs="+", default=[], metavar="FILE",
                   help="also evaluate on these transcripts (any shape the loader reads)")
    e.add_argument("--samples", type=int, default=0, metavar="K",
                   help="also K sampled answers per prompt (metrics 'sampled.*'; default 0)")
    e.add_argument("--gguf", action="store_true", help="also answer with the run's GGUF export through llama.cpp "
                   "and compare it with the transformers model")
    e.add_argument("--gate", action="append", default=[], metavar="RULE", dest="gates",
                   help="e.g. 'tool_call_accuracy>=base', 'truth_pass_rate>=base-0.02'; exit 3 when one fails")
    e.add_argument("--judge", metavar="URL", help="also an LLM judge: an OpenAI-compatible endpoint (e.g. "
                   "http://127.0.0.1:8080/v1), tuned vs base in both orders -> judge_win_rate")
    e.add_argument("--judge-model", metavar="NAME", help="the model name the --judge endpoint serves")
    e.add_argument("--lm-eval", nargs="+", default=[], metavar="TASK", help="also lm-evaluation-harness tasks "
                   "(names, or task YAML files) on both models -> lm_eval.<task>.<metric>")
    e.add_argument("--no-forgetting", action="store_true", help="skip the general-text loss")
    e.add_argument("--seed", type=int, default=0, help="bootstrap and sampling seed (default 0)")
    e.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    e.add_argument("--json", action="store_true", help="print eval.json instead of the summary")
    r = sub.add_parser("report", help="(re)build RUN/report.html")
    r.add_argument("run", help="a run folder")
    _add_loop_parsers(sub)
    _add_version_parsers(sub)
    _add_inspect_parser(sub)
    _add_generate_parser(sub)
    return p


def _add_inspect_parser(sub) -> None:
    """`iceburg inspect`: records as the model sees them, supervised tokens marked (docs/data.md)."""
    i = sub.add_parser("inspect", help="each record as the model sees it: supervised tokens highlighted, token "
                       "counts, and why a record would be dropped (codes)")
    i.add_argument("data", nargs="+", help="JSONL files (any shape the loader reads)")
    i.add_argument("--base-model", required=True, help="base whose tokenizer and chat template to use")
    i.add_argument("--type", dest="agent_type", help="agent type for the truth filter's rubric (surveyor, ...)")
    i.add_argument("--html", metavar="OUT", help="also write a self-contained HTML page")
    i.add_argument("--max-seq-length", type=int, default=2048, help="as in training (default 2048)")
    i.add_argument("--train-on", choices=("all", "last", "final"), default="all", help="as in training")
    i.add_argument("--reasoning", choices=("keep", "drop"), default="keep", help="as in training")
    i.add_argument("--split-parallel-calls", action="store_true", help="as in training")
    i.add_argument("--supervise-tool-calls", choices=("all", "name", "none"), default="all", help="as in training")
    i.add_argument("--min-quality-score", type=float, default=None, help="truth filter threshold (default: the run's)")


def _add_version_parsers(sub) -> None:
    """`iceburg models | publish | rollback`: the versions of each model type (docs/loop.md)."""
    m = sub.add_parser("models", help="list each model type's versions (lineage.json): parent, gates, published")
    m.add_argument("root", nargs="?", default="runs", help="folder holding runs/<type>/lineage.json (default runs)")
    pb = sub.add_parser("publish", help="publish a version that passed its gates: Modelfile, ollama create")
    pb.add_argument("run", help="a run folder listed in its folder's lineage.json (runs/<type>/vN)")
    rb = sub.add_parser("rollback", help="point iceburg-<type>:latest back at an earlier published version")
    rb.add_argument("type", help="model type (surveyor, dissident, ...)")
    rb.add_argument("version", help="the version, e.g. v1")
    rb.add_argument("--root", default="runs", help="folder holding the lineages (default runs)")


def _add_loop_parsers(sub) -> None:
    """`iceburg serve` and `iceburg collect`: the first half of the loop (docs/loop.md)."""
    s = sub.add_parser("serve", help="OpenAI-compatible server over a run's GGUF (llama-cpp-python's server)")
    s.add_argument("target", help="a run folder (its GGUF export), a .gguf file, or a line of versions: its "
                   "folder (runs/surveyor) or its model type (surveyor), served at lineage.json's current version")
    s.add_argument("--root", default="runs", help="where a model type's lineage is looked up (default runs)")
    s.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000, help="listen port (default 8000)")
    s.add_argument("--name", help="model name to answer as (default: the run's model type, else the file name)")
    s.add_argument("--n-ctx", type=int, default=2048, help="context length in tokens (default 2048)")
    s.add_argument("--threads", type=int, default=None, help="CPU threads (default: llama.cpp's)")
    c = sub.add_parser("collect", help="recording proxy: forwards to --upstream, logs each chat exchange "
                       "as a training record in LOG/<agent>/YYYY-MM-DD.jsonl")
    c.add_argument("--upstream", required=True, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:11434/v1")
    c.add_argument("--log", required=True, metavar="DIR", help="log folder (train with --data-path DIR/<agent>)")
    c.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    c.add_argument("--port", type=int, default=8011, help="listen port (default 8011)")
    c.add_argument("--agent-map", action="append", default=[], metavar="MODEL=TYPE",
                   help="agent type for requests naming MODEL without an X-Iceburg-Agent header (repeatable)")
    c.add_argument("--max-body-bytes", type=int, default=8 * 2**20, help="larger requests get 413 (default 8 MiB)")
    c.add_argument("--timeout", type=float, default=600.0, help="upstream read timeout in seconds (default 600)")
    c.add_argument("--fsync", choices=("always", "interval", "never"), default="interval",
                   help="log durability: fsync every line, at most once a second (default), or never")
    c.add_argument("--timing", action="store_true", help="keep each request's own time in the proxy (upstream "
                   "waits excluded): GET /_iceburg/timing (docs/loop.md)")
    c.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                   help="uvicorn's event loop (default auto: uvloop where installed)")
    c.add_argument("--http", choices=("auto", "h11", "httptools"), default="auto",
                   help="uvicorn's HTTP parser (default auto: httptools where installed)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .logs import setup_logging

    setup_logging(args.verbose)
    if getattr(args, "json", False):  # machine-readable output: no bars on stderr either
        from .progress import set_enabled

        set_enabled(False)
    try:
        return {"chat": _chat, "eval": _eval, "report": _report, "serve": _serve,
                "collect": _collect, "models": _models, "publish": _publish, "rollback": _rollback,
                "inspect": _inspect, "generate": _generate}[args.command](args)
    except IceburgError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


def _inspect(args: argparse.Namespace) -> int:
    from .training.inspection import inspect_base, print_terminal, write_html

    items = inspect_base(args.base_model, args.data, agent_type=args.agent_type, max_length=args.max_seq_length,
                         min_quality_score=args.min_quality_score, train_on=args.train_on, reasoning=args.reasoning,
                         split_parallel_calls=args.split_parallel_calls,
                         supervise_tool_calls=args.supervise_tool_calls)
    print_terminal(items)
    if args.html:
        title = f"iceburg inspect {' '.join(args.data)} ({args.base_model})"
        print(f"wrote {write_html(args.html, items, title)}")
    return 0


def _chat(args: argparse.Namespace) -> int:
    from .chat import chat_loop, load_chat_model, resolve_chat_target, with_system

    target = resolve_chat_target(args.target, gguf=args.gguf)
    if args.system is not None:
        target.system = args.system
    model = load_chat_model(target, threads=args.threads)
    if args.prompt is None:
        chat_loop(model, args.max_new_tokens)
        return 0
    out = sys.stdout
    ans = model.answer(with_system([{"role": "user", "content": args.prompt}], model.system), args.max_new_tokens,
                       on_text=lambda t: (out.write(t), out.flush()))
    out.write("\n")
    if not ans.stopped:
        sys.stderr.write(f"note: the answer reached the {args.max_new_tokens}-token budget without an end-of-turn token\n")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .evaluation import (DEFAULT_MAX_NEW_TOKENS, DEFAULT_PROMPTS, GATE_EXIT, evaluate_run, failed,
                             format_eval)
    from .run_report import build_report

    report = evaluate_run(args.run, against=args.against, n_prompts=args.prompts or DEFAULT_PROMPTS,
                          max_new_tokens=args.max_new_tokens or DEFAULT_MAX_NEW_TOKENS, samples=args.samples,
                          eval_data=args.eval_data, gguf=args.gguf, gates=args.gates,
                          forgetting=not args.no_forgetting, seed=args.seed, threads=args.threads,
                          judge=args.judge, judge_model=args.judge_model, lm_eval=args.lm_eval)
    path = build_report(args.run)
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else
          format_eval(report) + f"\n\neval.json and {path} written")
    bad = failed(report["gates"])
    for g in bad:
        sys.stderr.write(f"{g['message']}\n")
    return GATE_EXIT if bad else 0


def _report(args: argparse.Namespace) -> int:
    from .run_report import build_report

    print(build_report(args.run))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .recipes.lineage import current_run, lineage_target, lineage_file
    from .serve.server import resolve_serve_target, serve

    spec, folder = args.target, lineage_target(args.target, Path(args.root))
    if folder is not None:  # a line of versions: its current one, read at each start (rollback + restart)
        run, version = current_run(folder)
        sys.stderr.write(f"{lineage_file(folder)}: current version {version} ({run})\n")
        spec = str(run)
    target = resolve_serve_target(spec, args.name)
    sys.stderr.write(f"serving {target.gguf} as {target.name!r} at http://{args.host}:{args.port}/v1 "
                     "(Ctrl-C to stop)\n")
    serve(spec, host=args.host, port=args.port, name=args.name, n_ctx=args.n_ctx, threads=args.threads)
    return 0


def _collect(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .serve.proxy import ProxyConfig, run_proxy

    bad = [m for m in args.agent_map if "=" not in m or not all(x.strip() for x in m.split("=", 1))]
    if bad:
        raise ConfigError([f"--agent-map {m!r}: expected MODEL=TYPE, e.g. --agent-map llama3.2:3b=surveyor"
                           for m in bad])
    cfg = ProxyConfig(upstream=args.upstream, log_dir=args.log, host=args.host, port=args.port,
                      agent_map=dict(m.split("=", 1) for m in args.agent_map), max_body_bytes=args.max_body_bytes,
                      timeout_s=args.timeout, fsync=args.fsync, timing=args.timing,
                      loop=args.loop, http=args.http)
    sys.stderr.write(f"recording {cfg.upstream_display} at http://{args.host}:{args.port} into {cfg.log_dir} "
                     "(Ctrl-C to stop)\n")
    run_proxy(cfg)
    return 0


def _models(args: argparse.Namespace) -> int:
    from .recipes.lineage import format_models

    print(format_models(Path(args.root)))
    return 0


def _publish(args: argparse.Namespace) -> int:
    from .recipes.lineage import publish, read_lineage, version_of

    run = Path(args.run)
    entry = version_of(read_lineage(run.parent), run.name)
    if entry is None:
        raise IceburgError(f"{run}: not a version in {run.parent / 'lineage.json'} (versions are recorded by "
                           "iceburg-train --continue-from)")
    print("\n".join(publish(run.parent, entry["version"])))
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from .config import ModelType
    from .recipes.lineage import find_lineages, rollback

    short = ModelType.parse(args.type).short
    found = find_lineages(Path(args.root), short)
    if len(found) != 1:
        raise IceburgError(f"{len(found)} lineages of {short} under {args.root} ({', '.join(map(str, found)) or 'none'});"
                           " pass --root the folder of the one to roll back")
    print("\n".join(rollback(found[0], args.version)))
    return 0


def _add_generate_parser(sub) -> None:
    """`iceburg generate`: curiosity-driven training data from a teacher endpoint (docs/emergence.md)."""
    g = sub.add_parser("generate", help="new training records where the data is thin: seeds -> teacher prompts and "
                       "answers -> truth filter, dedup (no held-out leakage), emergence; resumable job folder")
    g.add_argument("--model-type", required=True, help="agent type (base, surveyor, dissident, synthesist, oracle)")
    g.add_argument("--teacher", required=True, metavar="URL", help="OpenAI-compatible base URL, e.g. "
                   "http://127.0.0.1:8000/v1 (iceburg serve, llama.cpp, Ollama's /v1, a hosted API)")
    g.add_argument("--teacher-model", metavar="NAME", help="model name to request (default: the endpoint's first)")
    g.add_argument("--budget", type=int, required=True, metavar="N", help="curated records to keep")
    g.add_argument("--job", dest="job_dir", metavar="DIR", help="job folder (default generated/<type>); rerun the "
                   "same command to resume: finished teacher calls are never repeated")
    g.add_argument("--data-path", nargs="+", default=[], help="existing transcripts (default: the bundled sample)")
    g.add_argument("--heldout", nargs="+", default=[], metavar="SET", help="more held-out sets never to copy: "
                   "run folders (their heldout.jsonl) or data files")
    g.add_argument("--seed-strategy", dest="strategy", choices=("curiosity", "random"), default="curiosity",
                   help="rank seeds by curiosity signals (default) or at random")
    g.add_argument("--student", default="iceburg-tiny", help="base whose instruction-following difficulty ranks "
                   "seeds (default iceburg-tiny); 'none' to skip")
    g.add_argument("--max-items", type=int, default=None, help="items tried at most (default 4 x budget)")
    g.add_argument("--ask-max-tokens", type=int, default=96, help="token budget of a new prompt (default 96)")
    g.add_argument("--answer-max-tokens", type=int, default=384, help="token budget of an answer (default 384)")
    g.add_argument("--temperature", type=float, default=0.8, help="teacher sampling temperature (default 0.8)")
    g.add_argument("--seed", type=int, default=42, help="sampling and split seed (default 42, as iceburg-train --seed)")
    g.add_argument("--eval-fraction", type=float, default=0.1, help="held-out share never copied (default 0.1; "
                   "as iceburg-train --eval-fraction)")
    g.add_argument("--min-quality-score", type=float, default=0.7, help="truth filter threshold (default 0.7)")
    g.add_argument("--timeout", dest="timeout_s", type=float, default=120.0, help="seconds per request (default 120)")
    g.add_argument("--retries", type=int, default=3, help="retries per request (default 3)")
    g.add_argument("--rate-limit", type=float, default=0.0, help="requests per second at most (default: no limit)")
    g.add_argument("--threads", type=int, default=None, help="CPU threads for the student (default: torch's)")
    g.add_argument("--tool-choice", default="auto", metavar="CHOICE", help="for seeds with tools (their definitions "
                   "are sent): auto (default: the teacher decides), none, required, or a function name to call")


def _generate(args: argparse.Namespace) -> int:
    from .generation import GenerateSettings, generate

    fields = {k: v for k, v in vars(args).items() if k not in ("command", "verbose")}
    fields["job_dir"] = fields["job_dir"] or str(Path("generated") / args.model_type)
    fields["student"] = None if str(args.student).lower() == "none" else args.student
    summary = generate(GenerateSettings(**fields))
    print(json.dumps(summary, indent=2))
    if summary["kept"] < summary["budget"]:
        sys.stderr.write(f"note: kept {summary['kept']} of {summary['budget']} after {summary['items']} items "
                         "(--max-items reached); rerun with a larger --max-items to continue the job\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
