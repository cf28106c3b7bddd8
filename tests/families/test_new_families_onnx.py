"""ONNX on the new fixture families (issue 32): exported and proven where the exporter supports the
architecture, refused by name where it does not (export/onnx.py REFUSED; docs/export_ollama_onnx.md
"New families").

Measured one by one on the fixtures (2026-12-06, 2-core Xeon, one thread): smollm3 and ministral3
export and pass the proof (max |dlogit| 3.1e-6 / 3.3e-6 vs torch, greedy 8 tokens equal; 14 s /
7 s); qwen3.5 and granite4 (recurrent state), gpt-oss (grouped_mm MoE experts) and gemma4 (global
heads wider than local) failed and are refused before any export attempt.
"""

from __future__ import annotations

import json

import pytest

from iceburg import families
from iceburg.errors import ExportError
from iceburg.export import onnx as onnx_export
from iceburg.export.base import ExportContext

PROVEN = ["smollm3", "ministral3"]
REFUSED = {"qwen3.5": "Gated DeltaNet", "granite4": "Mamba-2", "gpt-oss": "grouped_mm", "gemma4": "global heads"}


def test_every_new_family_is_exported_or_refused():
    """Nothing of the six is left untested: each is in the proven cell or refused by its record's model_types."""
    assert sorted(PROVEN + list(REFUSED)) == sorted(["qwen3.5", "gemma4", "gpt-oss", "smollm3", "granite4", "ministral3"])
    for name in PROVEN:
        assert not set(families.get(name).model_types) & set(onnx_export.REFUSED), name
    for name in REFUSED:
        assert set(families.get(name).model_types) <= set(onnx_export.REFUSED), name


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_by_name_before_any_export(name, tmp_path):
    """Only a config.json: the refusal comes from the model_type, before weights are loaded (a load
    would raise OSError here, not ExportError) and nothing is written."""
    src, out = tmp_path / "model", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    for model_type in families.get(name).model_types:
        (src / "config.json").write_text(json.dumps({"model_type": model_type}))
        with pytest.raises(ExportError) as err:
            onnx_export.export(src, out, ExportContext(name="x"))
        text = str(err.value)
        assert REFUSED[name] in text and repr(model_type) in text and "measured" in text, text
        assert "GGUF" in text and "nothing was written" in text, text
    assert list(out.iterdir()) == []


@pytest.mark.slow  # one real export + proof: 7 s measured for ministral3, 14 s for smollm3 (2-core Xeon)
@pytest.mark.parametrize("name", PROVEN)
def test_supported_family_exports_and_is_proven(name, tmp_path):
    import torch

    from iceburg.testing.families import family_model_dir

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = onnx_export.export(family_model_dir(name), tmp_path, ExportContext(name=f"{name}-fixture"))
    finally:
        torch.set_num_threads(n)
    report = json.loads((tmp_path / f"{name}-fixture-onnx" / "onnx_export.json").read_text())
    assert onnx_export.SPEC.status(result.report) == "proven"
    # the export's own limit (MAX_ABS_DIFF 1e-4, issue 6), re-read from the written report
    fp = report["fp32"]
    assert max(fp["max_abs_diff_single"], fp["max_abs_diff_batched_padded"]) <= 1e-4, fp
    assert report["greedy"]["equal"] and report["greedy"]["max_abs_diff_cached_steps"] <= 1e-4
    assert fp["positions_compared"] > 0
