"""`iceburg eval RUN`: the tuned model against its base on the run's held-out transcripts.

Each model (the run's `merged/`, and its base or `--against`) is loaded once and
1. answers every prompt of the suite (`suites.py`) greedily, and `samples` more times sampled;
2. gives its loss per held-out transcript (encoded as training encodes them) and per document of
   the shipped general text (`forgetting.py`).
Every answer is scored per prompt (`metrics.py`), and each metric is aggregated with a paired
bootstrap 95% interval of tuned - base (`bootstrap.py`). With `gguf`, the run's GGUF export
answers the same prompts through llama.cpp and is compared with the transformers model it was
made from (the file that ships should behave as evaluated). Gates (`gates.py`) are checked last.
Everything goes to RUN/eval.json: `metrics` holds `{base, tuned, delta, ci95, n}` per metric.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import IceburgError
from ..run_folder import RunFolder
from .bootstrap import ItemValues, paired_bootstrap
from .gates import check_gates, parse_gates
from .heldout import DEFAULT_MAX_NEW_TOKENS, DEFAULT_PROMPTS, prompt_of, read_heldout, run_base_folder
from .metrics import direction, loss_values, score_answers
from .suites import Prompt, build_suite, read_eval_data

logger = logging.getLogger(__name__)


@dataclass
class EvalOptions:
    against: str | None = None
    n_prompts: int = DEFAULT_PROMPTS
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    samples: int = 0  # sampled answers per prompt besides the greedy one
    eval_data: list[str] = field(default_factory=list)
    gguf: bool = False
    gates: list[str] = field(default_factory=list)
    forgetting: bool = True
    seed: int = 0
    threads: int | None = None
    judge: str | None = None  # OpenAI-compatible base URL (judge.py)
    judge_model: str | None = None
    lm_eval: list[str] = field(default_factory=list)  # harness task names or task YAML files (harness.py)


@dataclass
class Side:
    """What one model produced: answers (greedy, then samples) and per-item losses."""

    name: str
    path: str
    greedy: list = field(default_factory=list)
    samples: list[list] = field(default_factory=list)
    record_losses: list = field(default_factory=list)
    text_losses: list = field(default_factory=list)
    seconds: float = 0.0


def _renderable(folder: Path, records: list) -> list[bool]:
    """Per record: whether this model's chat template can write it (tool transcripts need a tool
    format; training skipped the ones it could not render, `tool_render.tool_policy`)."""
    from ..training.encoding import ensure_chat_template
    from ..training.tool_render import tool_policy
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    ensure_chat_template(tok)
    _, skip = tool_policy(tok, records)
    return [skip is None or skip(r) is None for r in records]


def run_side(name: str, folder: Path, records: list, prompts: list[Prompt], opts: EvalOptions,
             max_length: int) -> Side:
    from .forgetting import MAX_TOKENS, general_texts
    from .models import HfModel

    started = time.perf_counter()
    model = HfModel(folder, records, threads=opts.threads)
    side = Side(name, str(folder))
    side.greedy = model.answer(prompts, opts.max_new_tokens)
    side.samples = [model.answer(prompts, opts.max_new_tokens, seed=opts.seed + k + 1) for k in range(opts.samples)]
    side.record_losses = model.record_losses(records, max_length)
    if opts.forgetting:
        side.text_losses = model.text_losses([d["text"] for d in general_texts()], MAX_TOKENS)
    side.seconds = time.perf_counter() - started
    logger.info("%s: %d prompts answered (%d samples each) in %.1f s", name, len(prompts), opts.samples,
                side.seconds)
    return side


def compare(base: dict[str, ItemValues], tuned: dict[str, ItemValues], seed: int, prefix: str = "") -> dict:
    """Paired bootstrap of every metric either side has."""
    out = {}
    for k in sorted(set(base) | set(tuned)):
        n = len(next(iter(base.values())).num)
        empty = ItemValues([0.0] * n, [0.0] * n)
        out[prefix + k] = paired_bootstrap(base.get(k, empty), tuned.get(k, empty), seed=seed)
    return out


def _scorer(cfg: dict):
    from ..emergence.embedding import SentenceEmbedder
    from ..truth.from_config import truth_filter_from

    patterns = cfg.get("truth_patterns")  # a patterns file moved since the run is left out
    settings = dict(cfg, truth_patterns=patterns if patterns and Path(patterns).is_file() else None)
    return truth_filter_from(settings), SentenceEmbedder(use_cache=False)


def side_metrics(side: Side, prompts: list[Prompt], tf, embedder) -> tuple[dict, dict]:
    """(greedy metrics incl. losses, sampled metrics) as ItemValues per metric."""
    greedy = score_answers(tf, embedder, prompts, [side.greedy])
    greedy["heldout_loss"] = loss_values(side.record_losses)
    if side.text_losses:
        greedy["forgetting_loss"] = loss_values(side.text_losses)
    sampled = score_answers(tf, embedder, prompts, side.samples) if side.samples else {}
    return greedy, sampled


def _pair_losses(a: Side, b: Side) -> None:
    """Held-out records either model cannot encode count for neither (paired items)."""
    for i, (x, y) in enumerate(zip(a.record_losses, b.record_losses)):
        if x is None or y is None:
            a.record_losses[i] = b.record_losses[i] = None


def evaluate_run(run_dir: Path, against: str | None = None, n_prompts: int = DEFAULT_PROMPTS,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, reuse_run_losses: bool = False,
                 **options: Any) -> dict[str, Any]:
    """Evaluate the run's merged model against its base (or `against`); writes RUN/eval.json.

    `options`: the other `EvalOptions` fields (samples, eval_data, gguf, gates, forgetting, seed,
    threads). reuse_run_losses: the summary's held-out losses are result.json's (the trainer's,
    just measured) instead of the recomputed ones; the per-record losses are computed either way."""
    opts = EvalOptions(against=against, n_prompts=n_prompts, max_new_tokens=max_new_tokens, **options)
    parse_gates(opts.gates)  # a malformed gate is a user error before any model is loaded
    if opts.samples < 0 or opts.n_prompts < 1 or opts.max_new_tokens < 1:
        raise IceburgError("--samples must be >= 0, --prompts and --max-new-tokens >= 1")
    run = RunFolder(run_dir)
    if not run.is_run():
        raise IceburgError(f"{run.root}: not a finished run folder (no merged/config.json); pass the folder "
                           "iceburg-train printed as 'run folder'")
    cfg = run.read_json(run.config) or {}
    records, labels = _records(run.root, opts)
    from ..config import ModelType

    agent = ModelType.parse(cfg.get("model_type", "base")).agent
    base_name, base_dir = (opts.against, _resolve(opts.against)) if opts.against else run_base_folder(run.root)
    ok = [a and b for a, b in zip(_renderable(run.merged, records), _renderable(base_dir, records))]
    suite = build_suite(records, labels, opts.n_prompts, agent)
    prompts = [p for p in suite.prompts if ok[p.record]]
    max_length = int(cfg.get("max_seq_length", 1024))
    tuned = run_side("tuned", run.merged, records, prompts, opts, max_length)
    base = run_side(base_name, base_dir, records, prompts, opts, max_length)
    _pair_losses(tuned, base)
    tf, embedder = _scorer(cfg)
    (tg, ts), (bg, bs) = side_metrics(tuned, prompts, tf, embedder), side_metrics(base, prompts, tf, embedder)
    metrics = {**compare(bg, tg, opts.seed), **compare(bs, ts, opts.seed, "sampled.")}
    judged = _judge(opts, prompts, base, tuned)
    if judged:
        metrics["judge_win_rate"] = paired_bootstrap(judged[0], judged[1], seed=opts.seed)
    if opts.lm_eval:
        from .harness import lm_eval_metrics

        metrics.update(lm_eval_metrics(list(opts.lm_eval), base_dir, run.merged, opts.seed))
    report = _report(run, cfg, opts, records, prompts, base, tuned, metrics)
    if judged:
        report["judge"] = judged[2]
    _add_prompt_scores(report, prompts, bg, tg)
    if reuse_run_losses and not opts.against:
        result = run.read_json(run.result) or {}
        report["tuned"]["heldout_loss"] = result.get("eval_loss_after", report["tuned"]["heldout_loss"])
        report["base"]["heldout_loss"] = result.get("eval_loss_before", report["base"]["heldout_loss"])
    if opts.gguf:
        report["gguf"] = gguf_agreement(run.root, prompts, tuned, tg, tf, embedder, opts)
    report["gates"] = check_gates(opts.gates, metrics)
    run.write_json(run.eval, report)
    return report


def _judge(opts: EvalOptions, prompts: list[Prompt], base: Side, tuned: Side) -> tuple | None:
    if not opts.judge:
        return None
    if not opts.judge_model:
        raise IceburgError("--judge needs --judge-model NAME (the model the endpoint serves)")
    from .judge import judge_answers

    return judge_answers(opts.judge, opts.judge_model, prompts, base.greedy, tuned.greedy)


def _resolve(spec: str) -> Path:
    from ..base_models import resolve_base_model

    return resolve_base_model(spec).path


def _records(run_dir: Path, opts: EvalOptions) -> tuple[list, list[str]]:
    records = read_heldout(run_dir)
    labels = ["heldout"] * len(records)
    if opts.eval_data:
        extra = read_eval_data(list(opts.eval_data))
        records, labels = records + extra, labels + ["eval-data"] * len(extra)
    return records, labels


def gguf_agreement(run_dir: Path, prompts: list[Prompt], tuned: Side, tuned_values: dict, tf, embedder,
                   opts: EvalOptions) -> dict:
    """The run's GGUF export answers the same prompts greedily through llama.cpp; each metric is
    compared with the transformers model it was exported from (paired bootstrap of gguf - hf)."""
    from ..chat import resolve_chat_target
    from .models import GgufModel

    path = resolve_chat_target(run_dir, gguf=True).path
    started = time.perf_counter()
    answers = GgufModel(path, threads=opts.threads).answer(prompts, opts.max_new_tokens)
    values = score_answers(tf, embedder, prompts, [answers])
    rows = compare({k: v for k, v in tuned_values.items() if k in values}, values, opts.seed)
    for row in rows.values():
        row["transformers"], row["gguf"] = row.pop("base"), row.pop("tuned")
    return {"file": str(path), "seconds": round(time.perf_counter() - started, 1), "metrics": rows,
            "answers": [{"key": p.key, "transformers": t.text, "gguf": g.text}
                        for p, t, g in zip(prompts, tuned.greedy, answers) if p.answer]}


def _summary(side: Side, metrics: dict, key: str) -> dict:
    return {"name": side.name, "path": side.path, "heldout_loss": metrics.get("heldout_loss", {}).get(key),
            "stop_rate": metrics.get("stop_rate", {}).get(key), "seconds": round(side.seconds, 1)}


def _report(run: RunFolder, cfg: dict, opts: EvalOptions, records: list, prompts: list[Prompt], base: Side,
            tuned: Side, metrics: dict) -> dict:
    from .toolcalls import parse_calls

    answer_prompts = [p for p in prompts if p.answer]
    side_by_side, tool_turns = [], []
    for p, b, t in zip(prompts, base.greedy, tuned.greedy):
        if p.answer:
            side_by_side.append({"id": p.key, "suite": p.suite, "question": _question(p.messages),
                                 "reference": p.reference, "base": b.text, "base_stopped": b.stopped,
                                 "tuned": t.text, "tuned_stopped": t.stopped})
        if p.expected is not None:
            tool_turns.append({"id": p.key, "suite": p.suite, "expected": p.expected, "base": parse_calls(b.text),
                               "tuned": parse_calls(t.text), "base_text": b.text, "tuned_text": t.text})
    return {"run": str(run.root), "model_type": cfg.get("model_type"), "heldout_records": len(records),
            "prompts": len(answer_prompts), "tool_prompts": sum(p.expected is not None for p in prompts),
            "max_new_tokens": opts.max_new_tokens, "decoding": "greedy", "samples": opts.samples,
            "eval_data": list(opts.eval_data), "bootstrap": {"resamples": 2000, "seed": opts.seed},
            "tuned": _summary(tuned, metrics, "tuned"), "base": _summary(base, metrics, "base"),
            "metrics": metrics, "side_by_side": side_by_side, "tool_turns": tool_turns}


# Per-prompt values shown beside each answer in eval.json and report.html (which prompts moved).
PROMPT_METRICS = ("truth_pass_rate", "truth_quality", "reference_similarity", "stop_rate", "tool_call_accuracy")


def _add_prompt_scores(report: dict, prompts: list[Prompt], base: dict, tuned: dict) -> None:
    """Each side-by-side row and tool turn gets `scores: {metric: [base, tuned]}`; `order` lists the
    metrics worst regression first (report.html reads both; it sits below this package)."""
    rows = report["side_by_side"] + report["tool_turns"]
    for i, p in enumerate(prompts):
        scores = {k: [base[k].num[i] / base[k].den[i], tuned[k].num[i] / tuned[k].den[i]]
                  for k in PROMPT_METRICS if k in base and k in tuned and base[k].den[i] and tuned[k].den[i]}
        for row in rows:
            if row["id"] == p.key:  # an answer row gets the answer metrics, a tool turn its call accuracy
                row["scores"] = {k: v for k, v in scores.items() if (k == "tool_call_accuracy") == ("expected" in row)}
    report["order"] = [name for name, _ in regressions_first(report["metrics"])]


def _question(messages: list[dict]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] in ("user", "tool")), "")


def regressions_first(metrics: dict) -> list[tuple[str, dict]]:
    """Metrics ordered worst regression first: by the change in the good direction, in units of
    its interval's half width (so a loss and a rate compare); metrics with no direction last."""
    def score(item: tuple[str, dict]) -> tuple[int, float]:
        name, m = item
        d = direction(name)
        if not d or m.get("delta") is None:
            return (1, 0.0)
        ci = m.get("ci95")
        half = (ci[1] - ci[0]) / 2 if ci and ci[1] > ci[0] else max(abs(m["delta"]), 1e-9)
        return (0, d * m["delta"] / half)

    return sorted(metrics.items(), key=score)


def format_eval(report: dict[str, Any], width: int = 400, answers: int = 8) -> str:
    """The metrics table (worst regression first), the gates, then answers side by side."""
    b, t = report["base"], report["tuned"]
    lines = [f"held-out loss:  base {_num(b['heldout_loss']).strip()} -> tuned {_num(t['heldout_loss']).strip()}",
             f"stop rate:      base {_num(b['stop_rate']).strip()} -> tuned {_num(t['stop_rate']).strip()}", "",
             f"{'metric':<28} {'base':>9} {'tuned':>9} {'delta':>9}  {'95% CI of delta':<21} {'n':>4}"]
    for name, m in regressions_first(report.get("metrics", {})):
        if name.startswith("rubric_") and not m.get("n"):
            continue
        ci = m.get("ci95")
        lines.append(f"{name:<28} {_num(m['base'])} {_num(m['tuned'])} {_num(m['delta'], True)}  "
                     f"{(f'[{ci[0]:+.4f}, {ci[1]:+.4f}]' if ci else 'n/a'):<21} {m['n']:>4}")
    lines.append(f"({report['prompts']} answer prompts, {report.get('tool_prompts', 0)} tool turns, greedy, "
                 f"budget {report['max_new_tokens']} tokens; paired bootstrap, 2,000 resamples)")
    g = report.get("gguf")
    if g:
        lines += ["", f"GGUF ({g['file']}) vs transformers, same prompts:"]
        for k in ("truth_pass_rate", "stop_rate", "reference_similarity", "tool_call_accuracy"):
            if k in g["metrics"] and g["metrics"][k]["n"]:
                m = g["metrics"][k]
                ci = m.get("ci95")
                lines.append(f"  {k:<26} hf {_num(m['transformers'])} gguf {_num(m['gguf'])} "
                             f"delta {_num(m['delta'], True)} CI {ci or 'n/a'}")
    lines += [""] + [r["message"] for r in report.get("gates", [])]
    for i, s in enumerate(report["side_by_side"][:answers], 1):
        lines += ["", f"[{i}] Q: {_clip(s['question'], width)}",
                  f"    base{'' if s['base_stopped'] else ' (no stop)'}:  {_clip(s['base'], width)}",
                  f"    tuned{'' if s['tuned_stopped'] else ' (no stop)'}: {_clip(s['tuned'], width)}"]
    return "\n".join(lines)


def _num(x: float | None, signed: bool = False) -> str:
    return f"{'n/a':>9}" if x is None else (f"{x:>+9.4f}" if signed else f"{x:>9.4f}")


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
