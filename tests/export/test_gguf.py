"""GGUF export: files read back with GGUFReader and proven in llama.cpp (no mocks).

Models are random-weight llama / mistral / qwen2 models (iceburg.models.random) with tokenizers
trained here with the `tokenizers` library in the styles of GPT-2, Llama 3, Qwen2 (byte-level
BPE) and Llama 2 / Mistral (SentencePiece-style BPE with byte fallback), plus the embedded
`iceburg-tiny` model for the end-to-end export.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader

from iceburg.errors import ExportError, IceburgError
from iceburg.export.base import ExportContext
from iceburg.export.gguf import FILE_TYPES, export, write_gguf
from iceburg.models.random import build_random_model

try:
    import llama_cpp  # noqa: F401

    HAVE_LLAMA = True
except ImportError:
    HAVE_LLAMA = False
needs_llama = pytest.mark.skipif(not HAVE_LLAMA, reason="llama-cpp-python is not installed "
                                 '(CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install "llama-cpp-python==0.3.36")')

QWEN2_RE = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
LLAMA3_RE = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
CORPUS = ["The quick brown fox jumps over the lazy dog. It's 2024, isn't it? Numbers: 12345 67.89 100,000",
          "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1)  # code\n\n\tTabs",
          "Research agents collaborate by sharing evidence; the capital of France is Paris.",
          "Émergence, naïve café — Grüße! 日本語のテキスト 中文 🙂🚀 Hello world, hello there."] * 40
IN_PROCESS = ["f32", "f16", "bf16", "q8_0", "q4_0"]


def build_bpe_tokenizer(style: str, out: Path, *, lowercase: bool = False) -> Path:
    """Byte-level BPE in the style of GPT-2, Qwen2 or Llama 3, with ChatML special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    if style == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        regex = QWEN2_RE if style == "qwen2" else LLAMA3_RE
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    if style == "qwen2":
        tok.normalizer = normalizers.NFC()
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    extra = {}
    if style == "llama3":  # Llama 3 adds a BOS token: TemplateProcessing, add_bos_token in llama.cpp
        tok.add_special_tokens(["<|begin_of_text|>"])
        tok.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])
        extra["bos_token"] = "<|begin_of_text|>"
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", **extra)
    if style == "qwen2":  # like Qwen2.5: added tokens after the BPE vocabulary, some not special
        hf.add_tokens(["<tool_call>", "</tool_call>"])
        hf.add_special_tokens({"additional_special_tokens": ["<|fim_prefix|>"]})
    hf.chat_template = CHATML
    hf.save_pretrained(out)
    return out


def build_spm_tokenizer(out: Path) -> Path:
    """Llama 2 / Mistral style: BPE with byte fallback, "▁" for spaces, BOS added."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=900, special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens,
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    data = json.loads(tok.to_str())  # byte tokens belong to the model vocabulary, not the added tokens
    data["added_tokens"] = [a for a in data["added_tokens"] if a["content"] in ("<unk>", "<s>", "</s>")]
    tok = Tokenizer.from_str(json.dumps(data))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    hf.chat_template = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
                        "{% else %} {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}")
    hf.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gguf_models")
    toks = {s: build_bpe_tokenizer(s, root / f"tok_{s}") for s in ("gpt2", "qwen2", "llama3")}
    toks["spm"] = build_spm_tokenizer(root / "tok_spm")
    return {
        "llama": build_random_model("llama", root / "llama", tokenizer_dir=toks["gpt2"]),
        # embedding rows beyond the tokenizer (as Qwen2.5 pads 151665 tokens to 151936): [PAD] UNUSED
        "qwen2": build_random_model("qwen2", root / "qwen2", tokenizer_dir=toks["qwen2"],
                                    vocab_size=len(_tok(toks["qwen2"])) + 7),
        "llama3": build_random_model("llama", root / "llama3", tokenizer_dir=toks["llama3"]),
        # transformers 5 loads any byte-level tokenizer in a qwen2 folder as Qwen2Tokenizer (Qwen2
        # regex, whatever tokenizer.json says); the GGUF must follow what transformers runs
        "qwen2_gpt2tok": build_random_model("qwen2", root / "qwen2_gpt2tok", tokenizer_dir=toks["gpt2"]),
        "mistral": build_random_model("mistral", root / "mistral", tokenizer_dir=toks["spm"]),
        # rows of 256 so llama.cpp's K-quants apply without falling back to Q5_0/Q8_0
        "qwen2_k": build_random_model("qwen2", root / "qwen2_k", tokenizer_dir=toks["qwen2"], hidden_size=256,
                                      intermediate_size=512, num_attention_heads=4, num_key_value_heads=2),
        "tok_lower": build_bpe_tokenizer("gpt2", root / "tok_lower", lowercase=True),
    }


_REFERENCES: dict = {}


def _verify(model_dir: Path, path: Path, file_type: str) -> dict:
    """verify_gguf with the transformers side computed once per model."""
    from iceburg.export.gguf_verify import hf_reference, verify_gguf

    if model_dir not in _REFERENCES:
        _REFERENCES[model_dir] = hf_reference(model_dir)
    return verify_gguf(model_dir, path, file_type=file_type, reference=_REFERENCES[model_dir])


def _tok(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _fields(path: Path) -> tuple[dict, dict]:
    reader = GGUFReader(path)
    kv = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml.") and key.endswith(("tokens", "merges", "token_type", "scores")):
            kv[key] = field.contents()
        elif not key.startswith("GGUF."):
            kv[key] = field.contents()
    return kv, {t.name: t for t in reader.tensors}


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("file_type", IN_PROCESS)
def test_in_process_types_read_back(models, tmp_path, arch, file_type):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    model_dir = models[arch]
    path = write_gguf(model_dir, tmp_path / f"m-{file_type}.gguf", file_type)
    kv, tensors = _fields(path)
    config = json.loads((model_dir / "config.json").read_text())
    assert kv["general.architecture"] == arch
    assert kv["general.file_type"] == int(FILE_TYPES[file_type][0])
    assert kv[f"{arch}.block_count"] == config["num_hidden_layers"]
    assert kv[f"{arch}.attention.head_count_kv"] == config["num_key_value_heads"]
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert kv["tokenizer.ggml.model"] == "gpt2"
    assert kv["tokenizer.ggml.pre"] == {"llama": "gpt-2", "qwen2": "qwen2"}[arch]
    assert kv["tokenizer.ggml.tokens"][:5] == tok.convert_ids_to_tokens(list(range(5)))
    assert kv["tokenizer.ggml.token_type"][tok.convert_tokens_to_ids("<|im_end|>")] == 3  # CONTROL
    assert kv["tokenizer.ggml.eos_token_id"] == tok.eos_token_id
    assert kv["tokenizer.ggml.add_bos_token"] is False
    assert "<|im_start|>" in kv["tokenizer.chat_template"]
    assert len(kv["tokenizer.ggml.tokens"]) == config["vocab_size"]
    if arch == "qwen2":
        types = kv["tokenizer.ggml.token_type"]
        assert types[tok.convert_tokens_to_ids("<tool_call>")] == 4  # USER_DEFINED
        assert types[tok.convert_tokens_to_ids("<|fim_prefix|>")] == 3  # CONTROL
        assert types[-7:] == [5] * 7 and kv["tokenizer.ggml.tokens"][-1] == f"[PAD{config['vocab_size'] - 1}]"
    # tied embeddings (qwen2) write no output tensor; llama.cpp reuses token_embd
    assert ("output.weight" in tensors) == (arch == "llama")
    assert ("blk.0.attn_q.bias" in tensors) == (arch == "qwen2")
    weight_type = FILE_TYPES[file_type][1]
    for name, t in tensors.items():
        if len(t.shape) == 1:
            assert t.tensor_type == T.F32, name
        elif file_type == "q4_0" and name == ("output.weight" if arch == "llama" else "token_embd.weight"):
            assert t.tensor_type == T.Q8_0, name
        else:
            assert t.tensor_type == weight_type, name
    if file_type == "f32":  # exact values; q/k rows permuted for llama only
        hf = load_file(model_dir / "model.safetensors")
        embd = tensors["token_embd.weight"]
        assert np.array_equal(np.asarray(embd.data).reshape(hf["model.embed_tokens.weight"].shape),
                              hf["model.embed_tokens.weight"].numpy())
        q = np.asarray(tensors["blk.0.attn_q.weight"].data)
        same = np.array_equal(q, hf["model.layers.0.self_attn.q_proj.weight"].numpy())
        assert same == (arch == "qwen2")


@pytest.mark.llama
@needs_llama
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("file_type", IN_PROCESS)
def test_in_process_types_proven_in_llama_cpp(models, tmp_path, arch, file_type):
    from iceburg.export.gguf_verify import check_limits

    path = write_gguf(models[arch], tmp_path / f"m-{file_type}.gguf", file_type)
    report = _verify(models[arch], path, file_type)
    assert report["tokenization_match"] and report["tokenization_texts"] >= 8, report["tokenization_mismatches"]
    limits = {"f32": 1e-3, "f16": 5e-2, "bf16": 5e-2}  # bf16 measured 3e-3 on these random models
    if file_type in limits:
        assert check_limits(report, file_type) == [], report
        assert report["max_abs_logit_diff"] <= limits[file_type]
        if file_type != "bf16":  # bf16 rounds like Q8_0: one near-tie flipped in 227 positions (measured)
            assert report["argmax_agreement"] == 1.0 and report["greedy_exact_prompts"] == report["prompts"]
    else:
        # Random weights give near-tied logits (std ~0.16, top-2 gaps ~1e-2), so a Q8_0 rounding
        # of ~1e-2 flips some argmaxes: measured 0.96-1.0 (Q8_0) and 0.77-1.0 (Q4_0) here. The
        # issue's Q8_0 limit (>= 97%) is asserted on the trained iceburg-tiny model below.
        assert report["argmax_agreement"] >= {"q8_0": 0.9, "q4_0": 0.6}[file_type], report
        assert report["max_abs_logit_diff"] <= {"q8_0": 0.05, "q4_0": 0.5}[file_type], report


@pytest.mark.llama
@needs_llama
def test_k_quant_through_llama_cpp(models, tmp_path):
    path = write_gguf(models["qwen2_k"], tmp_path / "m-q4_k_m.gguf", "q4_k_m")
    kv, tensors = _fields(path)
    assert kv["general.file_type"] == int(FILE_TYPES["q4_k_m"][0])
    types = {t.tensor_type for t in tensors.values() if len(t.shape) == 2}
    assert T.Q4_K in types and types <= {T.Q4_K, T.Q6_K, T.Q5_K}, types
    assert not list(tmp_path.glob(".*intermediate*")), "the 16-bit intermediate is removed"
    report = _verify(models["qwen2_k"], path, "q4_k_m")
    assert report["tokenization_match"]
    assert report["argmax_agreement"] >= 0.8, report  # measured 1.0 on this model


@pytest.mark.llama
@needs_llama
def test_k_quant_reuses_the_exports_own_f16_file(models, tmp_path):
    """An export of f16 then q4_k_m quantizes the F16 file it just wrote (not a second one): the
    K-quant is byte for byte the one made from a freshly written intermediate, the F16 stays."""
    result = export(models["qwen2_k"], tmp_path / "both", ExportContext(name="m", quantization=["f16", "q4_k_m"], verify=False))
    assert result.report["files"]["m-q4_k_m.gguf"]["quantized_from"] == "m-f16.gguf"
    assert "quantized_from" not in result.report["files"]["m-f16.gguf"]
    assert sorted(p.name for p in (tmp_path / "both").iterdir()) == ["m-f16.gguf", "m-q4_k_m.gguf"]
    alone = export(models["qwen2_k"], tmp_path / "alone", ExportContext(name="m", quantization=["q4_k_m"], verify=False))
    assert "quantized_from" not in alone.report["files"]["m-q4_k_m.gguf"]
    assert alone.files[0].read_bytes() == result.files[1].read_bytes()


@pytest.mark.llama
@needs_llama
@pytest.mark.parametrize("model,pre", [("llama3", "llama-bpe"), ("qwen2_gpt2tok", "qwen2"), ("mistral", None)])
def test_other_tokenizer_styles_match_llama_cpp(models, tmp_path, model, pre):
    from iceburg.export.gguf_verify import check_limits

    path = write_gguf(models[model], tmp_path / "m-f32.gguf", "f32")
    kv, _ = _fields(path)
    if pre:
        assert kv["tokenizer.ggml.pre"] == pre
        assert kv["tokenizer.ggml.add_bos_token"] is (model == "llama3")
    else:  # SentencePiece-style: llama tokenizer model, BOS added, byte tokens typed BYTE (6)
        assert kv["tokenizer.ggml.model"] == "llama"
        assert kv["tokenizer.ggml.add_bos_token"] is True
        assert kv["tokenizer.ggml.token_type"][3] == 6
    report = _verify(models[model], path, "f32")
    assert check_limits(report, "f32") == [], report["tokenization_mismatches"] or report


def test_unsupported_architecture_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"]}))
    # iceburg's own writer names the architecture it has no spec for and the way out; under
    # --gguf-converter auto such a model goes to llama.cpp's converter instead (tests/families)
    with pytest.raises(IceburgError, match=r"gpt_neox.*--gguf-converter auto or llama.cpp"):
        write_gguf(tmp_path, tmp_path / "out.gguf", "f16", converter="iceburg")
    with pytest.raises(IceburgError, match="gpt_neox"):
        export(tmp_path, tmp_path / "out", ExportContext(quantization=["q8_0"], verify=False, gguf_converter="iceburg"))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unknown_quantization_and_pre_tokenizer(models, tmp_path):
    with pytest.raises(ExportError, match="q3_xx.*choose from"):
        export(models["llama"], tmp_path, ExportContext(quantization=["q3_xx"], verify=False))
    broken = tmp_path / "broken"
    shutil.copytree(models["llama"], broken)
    tj = json.loads((broken / "tokenizer.json").read_text())
    tj["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"\s+"}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    (broken / "tokenizer.json").write_text(json.dumps(tj))
    with pytest.raises(ExportError, match="matches no llama.cpp pre-tokenizer"):
        write_gguf(broken, tmp_path / "b.gguf", "f16")
    assert list(tmp_path.glob("*.gguf")) == [] and list(tmp_path.glob(".*")) == []


@pytest.mark.llama
@needs_llama
def test_failed_proof_leaves_no_file(models, tmp_path):
    """A lowercasing normalizer (which llama.cpp does not apply) must fail the tokenization proof."""
    bad = tmp_path / "lower"
    shutil.copytree(models["llama"], bad)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(models["tok_lower"] / name, bad / name)
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="tokenizes"):
        export(bad, out, ExportContext(name="lower", quantization=["f16"], verify=True))
    assert list(out.iterdir()) == []


@pytest.mark.llama
@needs_llama
@pytest.mark.slow
def test_export_tiny_model_end_to_end(tiny_model_dir, tmp_path):
    ctx = ExportContext(name="tiny", quantization=["f32", "q8_0", "q4_k_m"], verify=True)
    result = export(tiny_model_dir, tmp_path, ctx)
    assert [p.name for p in result.files] == ["tiny-f32.gguf", "tiny-q8_0.gguf", "tiny-q4_k_m.gguf"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in result.files)
    files = result.report["files"]
    assert files["tiny-f32.gguf"]["verify"]["max_abs_logit_diff"] <= 1e-3
    assert files["tiny-q8_0.gguf"]["verify"]["argmax_agreement"] >= 0.97
    assert all(f["verify"]["tokenization_match"] and f["proof"] == "proven" for f in files.values())


def test_without_llama_cpp_k_quants_name_the_install_command(models, tmp_path, monkeypatch):
    """With llama_cpp unimportable (sys.modules entry None), in-process types still work."""
    import sys

    from iceburg.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(MissingDependencyError, match=r'pip install "llama-cpp-python==0.3.36"'):
        export(models["qwen2"], tmp_path, ExportContext(name="m", quantization=["q4_k_m"], verify=False))
    with pytest.raises(MissingDependencyError, match="llama-cpp-python"):
        export(models["qwen2"], tmp_path, ExportContext(name="m", quantization=["q8_0"], verify=True))
    assert list(tmp_path.iterdir()) == []
    result = export(models["qwen2"], tmp_path, ExportContext(name="m", quantization=["q8_0"], verify=False))
    assert [p.name for p in result.files] == ["m-q8_0.gguf"] and result.files[0].stat().st_size > 0


def test_export_model_dispatches_to_gguf(models, tmp_path):
    from iceburg.export import export_model

    results = export_model(models["mistral"], tmp_path, ["gguf"], ExportContext(name="mis", quantization=["f16"], verify=False))
    assert [p.name for p in results["gguf"].files] == ["mis-f16.gguf"]
    kv, _ = _fields(results["gguf"].files[0])
    assert kv["general.architecture"] == "llama" and kv["tokenizer.ggml.model"] == "llama"


def test_random_models_are_shaped_and_deterministic(models, tmp_path):
    from safetensors import safe_open

    from iceburg.models.random import QWEN25_05B_SHAPE

    cfg = json.loads((models["qwen2"] / "config.json").read_text())
    assert cfg["model_type"] == "qwen2" and cfg["tie_word_embeddings"] is True
    with safe_open(models["qwen2"] / "model.safetensors", "pt") as f:
        names = set(f.keys())
    assert "model.layers.0.self_attn.q_proj.bias" in names and "lm_head.weight" not in names
    again = build_random_model("qwen2", tmp_path / "again", tokenizer_dir=models["qwen2"],
                               vocab_size=cfg["vocab_size"])
    assert (again / "model.safetensors").read_bytes() == (models["qwen2"] / "model.safetensors").read_bytes()
    assert QWEN25_05B_SHAPE["hidden_size"] == 896 and QWEN25_05B_SHAPE["vocab_size"] == 151936
    with pytest.raises(IceburgError, match="gpt_neox.*choose from llama, .*mistral, .*qwen2"):
        build_random_model("gpt_neox", tmp_path / "x", tokenizer_dir=models["qwen2"])


@pytest.mark.llama
@needs_llama
def test_in_process_quants_equal_llama_cpp_quantizer(models, tmp_path):
    """Q8_0 / Q4_0 made by gguf.quants are byte-identical to llama.cpp's own quantizer's output
    from the same F32 file (Q4_0's output tensor: ours Q8_0, llama.cpp's Q6_K when rows allow it)."""
    import logging

    import llama_cpp

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    f32 = write_gguf(models["llama"], tmp_path / "m-f32.gguf", "f32")
    for file_type in ("q8_0", "q4_0"):
        ours = {t.name: t for t in GGUFReader(write_gguf(models["llama"], tmp_path / f"m-{file_type}.gguf", file_type)).tensors}
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = int(FILE_TYPES[file_type][0])
        theirs_path = tmp_path / f"cpp-{file_type}.gguf"
        assert llama_cpp.llama_model_quantize(str(f32).encode(), str(theirs_path).encode(), params) == 0
        theirs = {t.name: t for t in GGUFReader(theirs_path).tensors}
        assert ours.keys() == theirs.keys()
        for name, t in ours.items():
            if file_type == "q4_0" and name == "output.weight" and theirs[name].tensor_type != T.Q8_0:
                # llama.cpp wants Q6_K there (Q8_0 fallback for rows not divisible by 256)
                assert (t.tensor_type, theirs[name].tensor_type) == (T.Q8_0, T.Q6_K)
                continue
            assert t.tensor_type == theirs[name].tensor_type, name
            assert np.array_equal(np.asarray(t.data), np.asarray(theirs[name].data)), name


def test_sharded_checkpoint_gives_the_same_tensors(models, tmp_path):
    from transformers import AutoModelForCausalLM

    sharded = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(models["llama"]).save_pretrained(sharded, max_shard_size="100KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy2(models["llama"] / name, sharded / name)
    a = {t.name: t for t in GGUFReader(write_gguf(models["llama"], tmp_path / "a.gguf", "q8_0")).tensors}
    b = {t.name: t for t in GGUFReader(write_gguf(sharded, tmp_path / "b.gguf", "q8_0")).tensors}
    assert a.keys() == b.keys()
    assert all(np.array_equal(np.asarray(a[n].data), np.asarray(b[n].data)) for n in a)
