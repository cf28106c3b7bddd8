"""Exporters describe themselves (ExporterSpec), and every export's status comes from its own proof:
proven / measured / written, not verified: why / failed: why, in result.json, the end-of-run
table and report.html (issue 33; issue 24 "Exporters describe themselves")."""

from __future__ import annotations

import dataclasses
import importlib
import json

import pytest

from iceburg.config import EXPORT_FORMATS, TrainingConfig
from iceburg.export import ExportContext, export_model, exporters
from iceburg.export.base import worst_status

try:
    import llama_cpp  # noqa: F401

    HAVE_LLAMA = True
except ImportError:
    HAVE_LLAMA = False
needs_llama = pytest.mark.skipif(not HAVE_LLAMA, reason="llama-cpp-python is not installed")


def test_each_exporter_declares_itself_and_config_names_the_same():
    specs = exporters()
    # config.py keeps the names for the --formats flag (it sits below export in the layer contract)
    assert tuple(specs) == EXPORT_FORMATS
    assert [s.order for s in specs.values()] == sorted(s.order for s in specs.values())
    assert list(specs).index("gguf") < list(specs).index("ollama")  # FROM points at the GGUF file
    fields = {f.name for f in dataclasses.fields(TrainingConfig)}
    for spec in specs.values():
        assert callable(importlib.import_module(spec.module).export), spec.name
        assert set(spec.options) <= fields, spec.options
        assert spec.summary and spec.headline({}) is not None
        assert spec.status({}).startswith(("written, not verified", "failed")), spec.name  # no proof, no "proven"


def test_worst_status_orders_failed_before_unverified_before_measured():
    assert worst_status(["proven", "measured", "written, not verified: x", "failed: y"]) == "failed: y"
    assert worst_status(["proven", "written, not verified: x", "measured"]) == "written, not verified: x"
    assert worst_status(["proven", "measured"]) == "measured" and worst_status(["proven"]) == "proven"


def test_huggingface_copy_is_read_back(tiny_model_dir, tmp_path):
    from iceburg.summary import export_rows

    proven = export_model(tiny_model_dir, tmp_path / "a", ["huggingface"], ExportContext(name="t"))["huggingface"]
    assert proven.report["status"] == "proven" and proven.report["copy_check"]["differ"] == []
    assert proven.report["copy_check"]["files"] >= 3
    off = export_model(tiny_model_dir, tmp_path / "b", ["huggingface"],
                       ExportContext(name="t", verify=False))["huggingface"]
    assert off.report["status"] == "written, not verified: verification turned off"
    rows = export_rows({"huggingface": off.report}, {"huggingface": [str(p) for p in off.files]})
    assert rows[0][1] == "written, not verified: verification turned off"


@needs_llama
@pytest.mark.llama
def test_ollama_without_go_is_written_not_verified(tiny_model_dir, tmp_path, monkeypatch):
    """Go absent on the real code path (PATH holds no `go`): the Ollama export says so, the GGUF
    it points at is still proven, and the end-of-run table and report.html repeat it."""
    from iceburg.run_report import exports_section
    from iceburg.summary import export_rows, format_table

    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    results = export_model(tiny_model_dir, tmp_path / "run" / "exports", ["gguf", "ollama"],
                           ExportContext(name="tiny", quantization=["f16"]))
    status = results["ollama"].report["status"]
    assert status.startswith("written, not verified: go not found"), status
    assert results["gguf"].report["status"] == "proven"
    assert results["ollama"].report["gguf_reused"]  # the GGUF exporter's proof is carried over
    assert results["ollama"].report["gguf_proof"]["verify"]["judgement"]["verdict"] == "proven"
    table = format_table(export_rows({k: r.report for k, r in results.items()},
                                     {k: [str(p) for p in r.files] for k, r in results.items()}))
    assert "written, not verified: go not found" in table and " ok " not in table

    run = tmp_path / "run"
    (run / "result.json").write_text(json.dumps({"export_reports": {k: r.report for k, r in results.items()},
                                                 "export_paths": {}}, default=str))
    page = exports_section(run)
    assert "written, not verified: go not found" in page and "proven" in page
    assert "max_abs_logit_diff" in page and "issue 6" in page  # F16's limit and its source


def test_old_reports_without_status_say_so(tmp_path):
    from iceburg.run_report import exports_section

    (tmp_path / "result.json").write_text(json.dumps({"export_reports": {"gguf": {"files": {}}}}))
    assert "not recorded" in exports_section(tmp_path)
