"""Branch 2 (local .gguf file): conversion through transformers, the sha256 cache, GGUF errors."""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pytest
import torch

from iceburg.base_models import (
    CorruptGGUFError,
    MissingTokenizerError,
    UnsupportedArchitectureError,
    resolve_base_model,
)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_gguf_file_loads_to_the_same_model(arch, tiny_models, tiny_ggufs, iceburg_cache, bm):
    from transformers import AutoTokenizer

    gguf_path = tiny_ggufs[arch]
    base = resolve_base_model(str(gguf_path))
    sha = hashlib.sha256(gguf_path.read_bytes()).hexdigest()
    assert base.source == "gguf"
    assert base.path == iceburg_cache / "gguf" / sha and base.details["gguf_sha256"] == sha
    assert base.architecture == arch and base.has_chat_template
    assert sorted(p.name for p in base.path.glob("*.safetensors")) == ["model.safetensors"]

    ids, expected = bm.logits(tiny_models[arch])
    ids2, got = bm.logits(base.path)
    assert torch.equal(ids, ids2)  # tokenizer rebuilt from the GGUF splits text the same way
    assert torch.allclose(got, expected, atol=1e-5, rtol=0), (got - expected).abs().max()

    original = AutoTokenizer.from_pretrained(tiny_models[arch])
    loaded = AutoTokenizer.from_pretrained(base.path)
    assert len(loaded) == len(original)  # no token the GGUF lacks (ids past the embedding matrix)
    assert loaded.chat_template == original.chat_template
    chat = [{"role": "user", "content": "Is the evidence strong?"}]
    assert (loaded.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            == original.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))
    assert base.param_count == resolve_base_model(str(tiny_models[arch])).param_count


def test_gguf_conversion_is_cached_by_content(tiny_ggufs, iceburg_cache, tmp_path, caplog):
    first = resolve_base_model(str(tiny_ggufs["llama"]))
    stamp = (first.path / "model.safetensors").stat().st_mtime_ns
    copy = tmp_path / "renamed.gguf"  # same bytes under another name: same cache entry
    copy.write_bytes(tiny_ggufs["llama"].read_bytes())
    with caplog.at_level(logging.INFO, logger="iceburg.base_models"):
        second = resolve_base_model(str(copy))
    assert second.path == first.path
    assert (second.path / "model.safetensors").stat().st_mtime_ns == stamp
    assert "already converted" in caplog.text
    assert "source gguf" in caplog.text  # the chosen source is logged
    assert not [p for p in (iceburg_cache / "gguf").iterdir() if p.name.startswith(".")]  # no partial dirs


def test_quantized_gguf_is_dequantized(tiny_models, iceburg_cache, tmp_path, bm):
    from iceburg.export.gguf import write_gguf

    q8 = write_gguf(tiny_models["qwen2"], tmp_path / "q8.gguf", "q8_0")
    base = resolve_base_model(str(q8))
    assert "Q8_0" in base.details["gguf_tensor_types"]
    assert json.loads((base.path / "config.json").read_text())["dtype"] == "float16"
    _, expected = bm.logits(tiny_models["qwen2"])
    _, got = bm.logits(base.path)
    # Q8_0 rounds each weight to 1/127 of its 32-block maximum; STACK.md measured 0.13-0.17 max
    # logit difference on real-shaped models. Same argmax on (nearly) every position.
    assert (got - expected).abs().max() < 0.2
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() > 0.9


def test_truncated_gguf(tiny_ggufs, tmp_path, iceburg_cache):
    data = tiny_ggufs["llama"].read_bytes()
    for cut in (len(data) - 1000, len(data) // 2, 64):
        bad = tmp_path / f"cut{cut}.gguf"
        bad.write_bytes(data[:cut])
        with pytest.raises(CorruptGGUFError) as err:
            resolve_base_model(str(bad))
        assert str(bad) in str(err.value) and "truncated" in str(err.value)


def test_not_a_gguf(tmp_path, iceburg_cache):
    bad = tmp_path / "model.gguf"
    bad.write_text("<html>404 Not Found</html>")
    with pytest.raises(CorruptGGUFError) as err:
        resolve_base_model(str(bad))
    assert "not a GGUF file" in str(err.value) and str(bad) in str(err.value)


def _minimal_gguf(path, arch: str, with_tokenizer: bool) -> None:
    import gguf

    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(32)
    w.add_feed_forward_length(64)
    w.add_head_count(2)
    if with_tokenizer:
        w.add_tokenizer_model("gpt2")
        w.add_token_list(["a", "b"])
    w.add_tensor("token_embd.weight", np.zeros((8, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_of_unsupported_architecture(tmp_path, iceburg_cache):
    path = tmp_path / "encoder.gguf"
    _minimal_gguf(path, "bert", with_tokenizer=True)
    with pytest.raises(UnsupportedArchitectureError) as err:
        resolve_base_model(str(path))
    assert "'bert'" in str(err.value) and "llama" in str(err.value) and str(path) in str(err.value)


def test_gguf_without_tokenizer(tmp_path, iceburg_cache):
    path = tmp_path / "weights-only.gguf"
    _minimal_gguf(path, "llama", with_tokenizer=False)
    with pytest.raises(MissingTokenizerError) as err:
        resolve_base_model(str(path))
    assert "no tokenizer" in str(err.value) and str(path) in str(err.value)


def test_quantized_values_beyond_float16_are_kept_in_bfloat16(tiny_models, iceburg_cache, tmp_path):
    from transformers import AutoModelForCausalLM

    from iceburg.export.gguf import write_gguf

    big = tmp_path / "big"
    model = AutoModelForCausalLM.from_pretrained(tiny_models["llama"])
    with torch.no_grad():  # Q8_0 scales fit float16 (1e5/127), the dequantized values do not
        w = model.model.layers[0].mlp.down_proj.weight
        w.mul_(1e5 / w.abs().max())
    model.save_pretrained(big)
    for f in tiny_models["llama"].glob("*token*"):
        (big / f.name).write_bytes(f.read_bytes())
    base = resolve_base_model(str(write_gguf(big, tmp_path / "big-q8.gguf", "q8_0")))
    assert json.loads((base.path / "config.json").read_text())["dtype"] == "bfloat16"
    loaded = AutoModelForCausalLM.from_pretrained(base.path)
    w2 = loaded.model.layers[0].mlp.down_proj.weight
    assert torch.isfinite(w2).all() and w2.abs().max() > 9e4


def test_sentencepiece_style_mistral_gguf(tmp_path, iceburg_cache, bm):
    """Mistral 7B's GGUFs carry a SentencePiece-style vocabulary (tokenizer.ggml.model "llama")."""
    from transformers import AutoTokenizer

    from iceburg.export.gguf import write_gguf
    from iceburg.models.random import build_random_model

    tok = bm.build_sentencepiece_style_tokenizer(tmp_path / "tok")
    # Not a folder named exactly "mistral": the exporter writes the folder name as general.name, and
    # transformers 5.24 then picks a "mistral" GGUF tensor map that gguf-py lacks.
    folder = build_random_model("mistral", tmp_path / "tiny-mistral", tokenizer_dir=tok, seed=1)
    base = resolve_base_model(str(write_gguf(folder, tmp_path / "mistral.gguf", "f32")))
    # llama.cpp writes Mistral as "llama"; transformers builds it as a Llama model, which
    # computes the same function (Mistral differs only by its sliding window, absent here).
    assert base.details["gguf_architecture"] == "llama" and base.has_chat_template
    ids, expected = bm.logits(folder)
    ids2, got = bm.logits(base.path)
    assert torch.equal(ids, ids2) and ids[0, 0].item() == 1  # BOS added the same way
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)
    assert len(AutoTokenizer.from_pretrained(base.path)) == len(AutoTokenizer.from_pretrained(folder))


def _requantize(src, dst, types):
    """Copy GGUF `src` with its 2-D tensors quantized by the gguf package, cycling through `types`
    (real files from llama.cpp and Ollama mix Q5_0/Q5_1/Q4_1 into their K-quant files)."""
    import gguf

    reader = gguf.GGUFReader(str(src))
    writer = gguf.GGUFWriter(str(dst), str(reader.get_field("general.architecture").contents()))
    for name, f in reader.fields.items():
        if not name.startswith("GGUF.") and name != "general.architecture":
            sub = f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY and len(f.types) > 1 else None
            writer.add_key_value(name, f.contents(), f.types[0], sub_type=sub)
    for i, t in enumerate(reader.tensors):
        data = np.array(t.data)
        if data.ndim == 2 and t.name != "token_embd.weight":
            qtype = types[i % len(types)]
            writer.add_tensor(t.name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(t.name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def test_ggml_types_transformers_cannot_read_are_dequantized_by_the_gguf_package(tiny_models, tiny_ggufs,
                                                                                  iceburg_cache, tmp_path, bm):
    from gguf import GGMLQuantizationType as Q

    mixed = _requantize(tiny_ggufs["qwen2"], tmp_path / "mixed.gguf", [Q.Q5_0, Q.Q5_1, Q.Q4_1])
    base = resolve_base_model(str(mixed))  # failed before: "holds tensors of ggml type 6 (Q5_0)"
    assert {"Q5_0", "Q5_1"} <= set(base.details["gguf_tensor_types"])
    _, expected = bm.logits(tiny_models["qwen2"])
    _, got = bm.logits(base.path)
    # 4-5 bit blocks of 32: measured max |logit diff| 0.048, argmax 100% on this random model (seed 1).
    assert (got - expected).abs().max() < 0.2
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() > 0.9
