"""A failed export after training: result.json records it, the CLI says "export to X failed"
with exit 2, and `--export-only RUN` finishes the run."""

from __future__ import annotations

import json

import pytest

from iceburg.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def neox_dir(tmp_path_factory, tiny_model_dir):
    """A real GPT-NeoX model (random weights, iceburg-tiny's tokenizer): it trains, but the GGUF
    exporter has no tensor map for it, so a gguf export fails with a clear ExportError."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("neox")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = AutoConfig.for_model("gpt_neox", vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=64, max_position_embeddings=512,
                               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def test_failed_export_is_recorded_and_can_be_finished(tmp_path, neox_dir, capsys):
    argv = ["--model-type", "surveyor", "--base-model", str(neox_dir), "--max-steps", "1",
            "--max-seq-length", "256", "--no-emergence", "--output-dir", str(tmp_path),
            "--output-name", "run", "--formats", "huggingface", "gguf", "--threads", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error: export to gguf failed:" in err and "gpt_neox" in err
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["success"] is False and "export to gguf failed" in result["export_error"]
    assert result["steps"] == 1 and (tmp_path / "run" / "merged" / "config.json").exists()

    assert main(["--export-only", str(tmp_path / "run"), "--formats", "huggingface"]) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["success"] is True and result["export_error"] is None
    assert (tmp_path / "run" / "exports" / "huggingface" / "merged" / "config.json").exists()
