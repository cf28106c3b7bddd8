"""`--export-only` on a plain Hugging Face folder: dispatch, model card, atomic output."""

from __future__ import annotations

import json

import pytest

from iceburg.cli import build_parser, main, make_config
from iceburg.errors import ExportError, IceburgError
from iceburg.export import ExportContext, export_model
from iceburg.export.cli import export_only


def test_export_only_plain_folder_writes_hf_and_proven_gguf(tmp_path, tiny_model_dir):
    cfg = make_config(build_parser().parse_args(
        ["--output-dir", str(tmp_path), "--formats", "huggingface", "gguf", "--quantization", "f16"]))
    report = export_only(tiny_model_dir, cfg)
    out = tmp_path / f"export-{tiny_model_dir.name}"
    merged = out / "huggingface" / "merged"
    assert (merged / "model.safetensors").exists() and "iceburg" in (merged / "README.md").read_text()
    gguf_files = [f for f in report["gguf"]["files"] if f.endswith(".gguf")]
    assert gguf_files and all(json.dumps(report["gguf"]["report"]).count('"passed"') >= 1 for _ in gguf_files)
    assert not [p for p in out.rglob("*") if ".partial" in p.name or "unverified" in p.name]


def test_unknown_format_and_missing_folder_are_user_errors(tmp_path, tiny_model_dir):
    with pytest.raises(ExportError, match="unknown format"):
        export_model(tiny_model_dir, tmp_path, ["tflite"], ExportContext())
    cfg = make_config(build_parser().parse_args([]))
    with pytest.raises(IceburgError, match="no such folder"):
        export_only(tmp_path / "nope", cfg)
    assert main(["--export-only", str(tmp_path / "nope")]) == 2
