"""`report.html`: one self-contained page per run folder (opens offline, no scripts, no links out).

Built only from the files the run wrote, so `iceburg-train --report RUN` (or `iceburg report RUN`)
rebuilds it at any time: metrics.jsonl (loss curves), data_stats.json + rejects.jsonl (the data
funnel), heldout.jsonl + scores.jsonl when present (score histograms, curriculum categories),
plan.json + metrics' peak RSS (memory plan vs measured), result.json (exports and their proofs),
eval.json (before/after answers). Plots are matplotlib PNGs embedded as base64 data URIs; a
section whose file is absent says so instead of drawing an empty chart.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from .run_folder import RunFolder

logger = logging.getLogger(__name__)

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;vertical-align:top;
text-align:left;font-size:.92em}img{max-width:100%}.muted{color:#777}pre{white-space:pre-wrap;margin:0;
font-family:inherit}.qa td{width:33%}"""


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _figure(width: float = 7.5, height: float = 3.4):
    import matplotlib

    matplotlib.use("Agg")  # no display needed; the report is built headless
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _table(rows: Iterable[Iterable[Any]], head: Iterable[str] | None = None, cls: str = "") -> str:
    out = [f'<table class="{cls}">']
    if head:
        out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in head) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{c if str(c).startswith('<pre>') else html.escape(str(c))}</td>"
                                    for c in row) + "</tr>")
    return "".join(out) + "</table>"


def _pre(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


def _tuned_answer(row: dict) -> str:
    """The tuned answer of a side-by-side row (text) or of a tool turn (its text; `tuned` holds the
    parsed calls there), with the calls it made written out."""
    if "tuned_text" not in row:
        return row.get("tuned", "")
    calls = row.get("tuned") or []
    made = "calls: " + json.dumps(calls) + "\n" if calls else "no tool call\n"
    return made + row["tuned_text"]


def loss_section(run: Path) -> str:
    metrics = _read_jsonl(RunFolder(run).metrics)
    train = [(m["step"], m["loss"]) for m in metrics if m.get("type") == "train"]
    evals = [(m["step"], m["eval_loss"]) for m in metrics if m.get("type") == "eval"]
    result = _read_json(RunFolder(run).result) or {}
    if not train:
        return "<p class='muted'>no metrics.jsonl (training did not start)</p>"
    fig, ax = _figure()
    ax.plot(*zip(*train), label="train loss (per step)", lw=1)
    if result.get("eval_loss_before") is not None:
        evals = [(0, result["eval_loss_before"])] + evals
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss (held out)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy per supervised token")
    ax.legend()
    ax.grid(alpha=.3)
    last = [m for m in metrics if m.get("type") == "train"][-1]
    rows = [("steps", len(train)), ("supervised tokens", last.get("supervised_tokens", "")),
            ("supervised tokens/s (last step)", last.get("supervised_tokens_per_s", "not recorded")),
            ("eval loss before -> after", f"{result.get('eval_loss_before', float('nan')):.4f} -> "
                                          f"{result.get('eval_loss_after', float('nan')):.4f}" if result else "n/a")]
    return _png(fig) + _table(rows)


def funnel_section(run: Path) -> str:
    stats = _read_json(RunFolder(run).data_stats) or {}
    rejects = _read_jsonl(RunFolder(run).rejects)
    if not stats:
        return "<p class='muted'>no data_stats.json</p>"
    read = (stats.get("load") or {}).get("lines", 0)
    by_stage = Counter(r.get("stage", "?") for r in rejects)
    # the stable reject code (docs/data.md); rejects files older than the codes show the first reason
    by_reason = Counter((r.get("stage", "?"), r.get("code") or (r.get("reasons") or ["?"])[0][:60]) for r in rejects)
    train, evals = stats.get("train_examples", 0), stats.get("eval_examples", 0)
    labels = ["read"] + [f"rejected: {s}" for s in by_stage] + ["train", "eval"]
    values = [read] + [-n for n in by_stage.values()] + [train, evals]
    fig, ax = _figure(7.5, 0.5 + 0.35 * len(labels))
    colors = ["#4477aa"] + ["#cc6677"] * len(by_stage) + ["#228833", "#ccbb44"]
    ax.barh(labels[::-1], [abs(v) for v in values][::-1], color=colors[::-1])
    ax.set_xlabel("records (JSONL lines)")
    rows = [(s, reason, n) for (s, reason), n in by_reason.most_common(15)]
    return _png(fig) + _table(rows, ("stage", "code", "records")) if rows else _png(fig)


def scores_section(run: Path) -> str:
    scored = _read_jsonl(RunFolder(run).scores)
    if not scored:
        return "<p class='muted'>no scores.jsonl in this run (written by runs with the emergence stage)</p>"
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    for ax, key in zip(axes[:2], ("quality_score", "emergence_score")):
        vals = [r[key] for r in scored if r.get(key) is not None]
        ax.hist(vals, bins=20, color="#4477aa")
        ax.set_title(f"{key} (n={len(vals)})")
    cats = Counter(r.get("category") or "none" for r in scored)
    axes[2].bar(list(cats), list(cats.values()), color="#228833")
    axes[2].set_title("curriculum categories")
    axes[2].tick_params(axis="x", rotation=30)
    return _png(fig)


def memory_section(run: Path) -> str:
    plan = _read_json(RunFolder(run).plan) or {}
    peaks = [m["peak_rss_mib"] for m in _read_jsonl(RunFolder(run).metrics) if "peak_rss_mib" in m]
    if not plan:
        return "<p class='muted'>no plan.json</p>"
    # the peak expected with the allocator the run used (glibc's heap included); older plan.json
    # files have only the fixed-threshold estimate
    est = plan.get("expected_peak_bytes", plan.get("estimated_peak_bytes", 0)) / 2**20
    rows = [("device", plan.get("device")), ("precision", plan.get("precision")),
            ("micro-batch x accumulation", f"{plan.get('micro_batch_size')} x {plan.get('gradient_accumulation_steps')}"),
            ("LoRA r / alpha", f"{plan.get('lora_r')} / {plan.get('lora_alpha')}"),
            ("planned peak (MiB)", f"{est:.0f}" + (f" ({plan['cpu_allocator']})" if plan.get("cpu_allocator") else "")),
            ("measured peak RSS (MiB)", f"{max(peaks):.0f}" if peaks else "not recorded")]
    if not peaks:
        return _table(rows)
    fig, ax = _figure(5, 2.2)
    ax.barh(["measured peak RSS", "planned peak"], [max(peaks), est], color=["#cc6677", "#4477aa"])
    ax.set_xlabel("MiB")
    return _png(fig) + _table(rows)


def exports_section(run: Path) -> str:
    result = _read_json(RunFolder(run).result) or {}
    reports = result.get("export_reports") or {}
    if not reports:
        return "<p class='muted'>no exports in result.json</p>"
    rows = []
    for fmt, rep in reports.items():
        files = ", ".join(Path(p).name for p in (result.get("export_paths") or {}).get(fmt, []))
        rows.append((fmt, _export_status(rep), files, _pre(_proof_lines(rep))))
    if result.get("export_error"):
        rows.append(("(export)", "failed", "", _pre(str(result["export_error"]))))
    return _table(rows, ("format", "status", "files", "proof (limits and their sources beside the figures)"))


def _criterion_line(prefix: str, c: dict) -> str:
    """One rule of a proof: measured value, limit, status and the limit's source on one line."""
    m = c.get("measured")
    shown = f"{m:.4g}" if isinstance(m, float) else str(m)
    return f"{prefix}{c['criterion']}: {shown} (limit {c.get('limit')}: {c.get('status')}; source: {c.get('source')})"


def _export_status(rep: Any) -> str:
    """The status export_model recorded from the exporter's own proof (proven / measured / written,
    not verified: why / failed: why). run_report sits beside export in the layer contract and
    cannot ask the exporter, so a report without one (an older run) says so instead of guessing."""
    if isinstance(rep, dict) and rep.get("status"):
        return str(rep["status"])
    return "not recorded (exported by an older iceburg; rerun --export-only to prove it)"


def _proof_lines(rep: Any, prefix: str = "", depth: int = 0) -> str:
    """Scalars of an export report, flattened (nested dicts as a.b); long lists are summarised."""
    if not isinstance(rep, dict):
        return f"{prefix}{rep}"
    lines = []
    for k, v in rep.items():
        if isinstance(v, dict) and depth < 4:
            lines.append(_proof_lines(v, f"{prefix}{k}.", depth + 1))
        elif isinstance(v, list) and v and all(isinstance(c, dict) and "criterion" in c for c in v):
            lines += [_criterion_line(prefix, c) for c in v]
        elif isinstance(v, (list, tuple)) and len(str(v)) > 120:
            lines.append(f"{prefix}{k}: [{len(v)} items]")
        else:
            lines.append(f"{prefix}{k}: {v if len(str(v)) <= 160 else str(v)[:157] + '...'}")
    return "\n".join(line for line in lines if line)


def _num(v, digits: int) -> str:
    """A figure, or 'not measured' where eval.json has none (e.g. no usable held-out record)."""
    return "not measured" if v is None else f"{v:.{digits}f}"


def answers_section(run: Path) -> str:
    ev = _read_json(RunFolder(run).eval)
    if not ev:
        return f"<p class='muted'>no eval.json: run <code>iceburg eval {html.escape(str(run))}</code></p>"
    b, t = ev["base"], ev["tuned"]
    head = _table([("held-out loss", _num(b.get("heldout_loss"), 4), _num(t.get("heldout_loss"), 4)),
                   (f"stop rate ({ev['prompts']} prompts, budget {ev['max_new_tokens']})",
                    _num(b.get("stop_rate"), 2), _num(t.get("stop_rate"), 2))], ("", f"base ({b['name']})", "tuned"))
    rows = [(_pre(s["question"]), _pre(s["base"] + ("" if s["base_stopped"] else " [no stop]")),
             _pre(s["tuned"] + ("" if s["tuned_stopped"] else " [no stop]"))) for s in ev["side_by_side"]]
    return head + _table(rows, ("held-out question", "base", "tuned"), cls="qa")


def _metric_num(x: float | None, sign: str = "") -> str:
    return "n/a" if x is None else f"{x:{sign}.4f}"


def evaluation_section(run: Path) -> str:
    """eval.json's metrics, worst regression first, with the gates, the GGUF check, and per metric the
    prompts where the tuned model did worse (docs/evaluation.md)."""
    ev = _read_json(RunFolder(run).eval) or {}
    metrics = ev.get("metrics")
    if not metrics:
        return "<p class='muted'>no metrics in eval.json: run <code>iceburg eval RUN</code></p>"
    rows = [(k, _metric_num(m["base"]), _metric_num(m["tuned"]), _metric_num(m["delta"], "+"),
             "n/a" if not m["ci95"] else "[{:+.4f}, {:+.4f}]".format(*m["ci95"]), m["n"])
            for k, m in ((k, metrics[k]) for k in ev.get("order", sorted(metrics))) if m["n"]]
    out = [_table(rows, ("metric (worst regression first)", "base", "tuned", "tuned - base", "95% CI", "n"))]
    out += [_table([(g["gate"], "passed" if g["passed"] else "FAILED", g["message"]) for g in ev.get("gates", [])],
                   ("gate", "verdict", "detail"))] if ev.get("gates") else []
    g = ev.get("gguf")
    if g:
        out.append(f"<p>GGUF {html.escape(g['file'])} vs the transformers model, same prompts:</p>" + _table(
            [(k, _metric_num(m["transformers"]), _metric_num(m["gguf"]), _metric_num(m["delta"], "+"))
             for k, m in g["metrics"].items() if m["n"]], ("metric", "transformers", "gguf", "gguf - transformers")))
    for k in ("truth_pass_rate", "truth_quality", "reference_similarity", "stop_rate", "tool_call_accuracy"):
        worse = [r for r in ev.get("side_by_side", []) + ev.get("tool_turns", [])
                 if k in r.get("scores", {}) and r["scores"][k][1] < r["scores"][k][0]]
        if worse:
            out.append(f"<details><summary>{k}: {len(worse)} prompt(s) where tuned did worse</summary>" + _table(
                [(_pre(r.get("question", r["id"])), f"{r['scores'][k][0]:.3f}", f"{r['scores'][k][1]:.3f}",
                  _pre(_tuned_answer(r))) for r in worse],
                ("prompt", "base", "tuned", "tuned answer"), cls="qa") + "</details>")
    return "".join(out)


SECTIONS = (("Loss", loss_section), ("Data funnel", funnel_section), ("Scores and curriculum", scores_section),
            ("Hardware plan vs measured memory", memory_section), ("Exports and their proofs", exports_section),
            ("Evaluation: base vs tuned", evaluation_section), ("Before / after answers", answers_section))


def build_report(run_dir: Path) -> Path:
    """Write RUN/report.html from the run folder's files; returns its path."""
    from .errors import IceburgError

    run = Path(run_dir)
    if not (RunFolder(run).config).is_file():
        raise IceburgError(f"{run}: not a run folder (no config.json); pass the folder iceburg-train printed")
    cfg = _read_json(RunFolder(run).config)
    base = _read_json(RunFolder(run).base_model) or {}
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>iceburg run {html.escape(run.name)}</title>"
             f"<style>{_CSS}</style></head><body><h1>iceburg run {html.escape(run.name)}</h1>",
             _table([("model type", cfg.get("model_type")), ("base model", f"{base.get('spec')} ({base.get('source')}, "
                      f"{(base.get('param_count') or 0) / 1e6:.1f}M parameters)"),
                     ("data", ", ".join(cfg.get("data_path") or ["bundled sample"]))])]
    for title, section in SECTIONS:
        parts.append(f"<h2>{title}</h2>{section(run)}")
    parts.append("</body></html>")
    out = RunFolder(run).report
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("".join(parts), encoding="utf-8")
    tmp.replace(out)
    return out


def heldout_row(r: Any) -> dict:
    """A held-out record as RUN/heldout.jsonl stores it (read back by `evaluation.read_heldout`)."""
    return {"source": r.source, "line": r.line, "record": r.to_json()}


def score_row(r: Any) -> dict:
    """One training record's scores for the histograms: quality (the truth filter's, else the
    record's own), emergence score and category, curriculum weight."""
    return {"id": r.id, "quality_score": r.signals.get("truth.quality", r.quality_score),
            "emergence_score": r.signals.get("emergence.score", r.emergence_score),
            "category": r.metadata.get("emergence.category"), "weight": r.weight}
