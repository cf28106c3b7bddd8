"""The compact end-of-run table: one row per stage (stage, outcome, key figure, path).

Replaces the dict reprs the CLI used to print; `--json` prints the full machine-readable result
instead. Built from `TrainingResult.to_dict()` / the export-only report, so both commands share it.
"""

from __future__ import annotations

from typing import Any

from .export import export_status, exporters


def format_table(rows: list[tuple[str, str, str, str]]) -> str:
    head = ("stage", "outcome", "key figure", "path")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(3)]
    lines = []
    for r in [head, *rows]:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r[:3], widths)) + "  " + str(r[3]))
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 4)
    return "\n".join(lines)


def export_rows(reports: dict[str, Any], paths: dict[str, list[str]],
                error: str | None = None) -> list[tuple[str, str, str, str]]:
    """One row per export: its status from its own proof (proven / measured / written, not verified:
    why / failed: why), never a blanket "ok"; a failed export (`error`) gets its own row."""
    rows = []
    for fmt, rep in reports.items():
        files = paths.get(fmt, [])
        rows.append((f"export {fmt}", export_status(fmt, rep), export_figure(fmt, rep), files[0] if len(files) == 1
                     else (f"{len(files)} files in {_common_dir(files)}" if files else "")))
    if error:
        rows.append(("export", "failed", error[:200], ""))
    return rows


def export_figure(fmt: str, rep: Any) -> str:
    """The proof figure worth a glance, as the exporter declares it (full proofs: result.json /
    report.html); the training table and `--export-only` both print it."""
    spec = exporters().get(fmt)
    return spec.headline(rep) if spec is not None and isinstance(rep, dict) else ""


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
    return rows + export_rows(r.get("export_reports") or {}, r.get("export_paths") or {}, r.get("export_error"))


def export_only_table(report: dict[str, Any]) -> str:
    """`--export-only`'s summary: the same rows as the training table's exports."""
    return format_table(export_rows({k: v["report"] for k, v in report.items()},
                                    {k: v["files"] for k, v in report.items()}))
