"""The compact end-of-run table: one row per stage (stage, outcome, key figure, path).

Replaces the dict reprs the CLI used to print; `--json` prints the full machine-readable result
instead. Built from `TrainingResult.to_dict()` / the export-only report, so both commands share it.
"""

from __future__ import annotations

from typing import Any


def format_table(rows: list[tuple[str, str, str, str]]) -> str:
    head = ("stage", "outcome", "key figure", "path")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(3)]
    lines = []
    for r in [head, *rows]:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r[:3], widths)) + "  " + str(r[3]))
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 4)
    return "\n".join(lines)


def export_rows(reports: dict[str, Any], paths: dict[str, list[str]]) -> list[tuple[str, str, str, str]]:
    rows = []
    for fmt, rep in reports.items():
        files = paths.get(fmt, [])
        rows.append((f"export {fmt}", "ok", export_figure(fmt, rep), files[0] if len(files) == 1 else
                     (f"{len(files)} files in {_common_dir(files)}" if files else "")))
    return rows


def export_figure(fmt: str, rep: Any) -> str:
    """The one proof number worth a glance per format (full proofs: result.json / report.html)."""
    if not isinstance(rep, dict):
        return ""
    keys = ("proof", "max_abs_logit_diff", "max_abs_diff_single", "argmax_agreement", "family", "status", "bytes")
    found = []
    for key in keys:
        val = _find(rep, key)
        if val is not None and not isinstance(val, (dict, list)):
            found.append(f"{key.replace('_', ' ')} {_num(val)}")
    return "; ".join(found[:2])


def _find(obj: Any, key: str, depth: int = 0) -> Any:
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        if depth < 3:
            for v in obj.values():
                got = _find(v, key, depth + 1)
                if got is not None:
                    return got
    return None


def _num(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _common_dir(files: list[str]) -> str:
    import os

    return os.path.dirname(os.path.commonprefix(files)) or "."


def train_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    base = r.get("base_model") or {}
    plan = r.get("plan") or {}
    rate = r["supervised_tokens"] / r["training_seconds"] if r.get("training_seconds") else 0.0
    rows = [
        ("base model", base.get("source", "?"), f"{base.get('spec')} ({(base.get('param_count') or 0) / 1e6:.1f}M "
         "params)", str(base.get("path", ""))),
        ("data", "ok", f"{r['records_read']} read, {r['records_rejected']} rejected, {r['train_examples']} train / "
         f"{r['eval_examples']} eval", str(r["run_dir"]) + "/rejects.jsonl"),
        ("training", "ok", f"{r['steps']} steps, {r['supervised_tokens']} supervised tokens in "
         f"{r['training_seconds']:.0f} s ({rate:.0f}/s), {plan.get('device', '?')}", str(r["adapter_dir"])),
        ("eval loss", "better" if r["eval_loss_after"] < r["eval_loss_before"] else "NOT better",
         f"{r['eval_loss_before']:.4f} -> {r['eval_loss_after']:.4f}", str(r["run_dir"]) + "/metrics.jsonl"),
        ("merged model", "ok", "transformers safetensors", str(r["merged_dir"])),
    ]
    return rows + export_rows(r.get("export_reports") or {}, r.get("export_paths") or {})
