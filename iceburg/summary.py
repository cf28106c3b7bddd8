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
    """The proof figure worth a glance per format (full proofs: result.json / report.html); the
    training table and `--export-only` both print it."""
    if not isinstance(rep, dict):
        return ""
    if fmt == "ollama":
        template, check = rep.get("template") or {}, rep.get("template_check") or {}
        return f"template {template.get('family', '?')}, Go check {check.get('status', '?')}"
    if fmt == "huggingface":
        return f"{rep.get('bytes', 0) / 2**20:.0f} MiB" if rep.get("bytes") else ""
    if fmt == "gguf":
        parts = []
        for name, entry in (rep.get("files") or {}).items():
            v = entry.get("verify") or {}
            fig = (f", max |logit diff| {v['max_abs_logit_diff']:.3g}, argmax {v['argmax_agreement']:.1%}"
                   if "max_abs_logit_diff" in v else "")
            parts.append(f"{name}: proof {entry.get('proof')}{fig}")
        return "; ".join(parts)
    if fmt == "onnx" and "fp32" in rep:
        return f"onnxruntime max |logit diff| {rep['fp32'].get('max_abs_diff_single', float('nan')):.3g}"
    return ""


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


def export_only_table(report: dict[str, Any]) -> str:
    """`--export-only`'s summary: the same rows as the training table's exports."""
    return format_table(export_rows({k: v["report"] for k, v in report.items()},
                                    {k: v["files"] for k, v in report.items()}))
