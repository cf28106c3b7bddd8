"""Check a local Hugging Face model folder and read what the rest of iceburg needs from it.

A usable base folder has `config.json` of an architecture transformers can build as a causal LM,
safetensors weights and a tokenizer. Nothing here loads weights: the parameter count comes from
building the model on the `meta` device, which allocates no memory.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BaseModelError, MissingTokenizerError, UnsafeWeightsError, UnsupportedArchitectureError

logger = logging.getLogger(__name__)

# Pickle-based checkpoint files: loading them runs arbitrary code, so they are refused.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# Files any transformers tokenizer is built from (fast tokenizer, sentencepiece, or BPE vocab+merges).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


@dataclass
class FolderInfo:
    """What `inspect_hf_folder` learned about a folder."""

    architecture: str  # config.model_type, e.g. "llama", "qwen2"
    param_count: int
    has_chat_template: bool
    details: dict[str, Any] = field(default_factory=dict)


def _listing(folder: Path, limit: int = 12) -> str:
    names = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")
    return shown or "nothing (empty folder)"


def check_weights(folder: Path) -> list[str]:
    """Names of the safetensors weight files; raise when there are none (or only pickle files)."""
    safetensors = sorted(p.name for p in folder.glob("*.safetensors"))
    index = folder / "model.safetensors.index.json"
    if index.is_file():  # sharded weights: every shard the index names must be there
        shards = sorted(set((_read_json(index).get("weight_map") or {}).values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise BaseModelError(f"{folder}: incomplete weights: {index.name} names {len(shards)} shard(s), "
                                 f"{len(missing)} missing ({', '.join(missing[:3])}). Finish or repeat the "
                                 "download (`hf download <repo>` resumes).")
        if shards:  # what transformers loads (not e.g. Mistral's consolidated.safetensors beside them)
            return shards
    if safetensors:
        return safetensors
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise UnsafeWeightsError(
            f"{folder}: the weights are only in pickle files ({', '.join(pickles)}). iceburg loads "
            "weights from safetensors or GGUF only, because unpickling a file can run any code it "
            "contains. If you trust the file, convert it once: python -c \"from transformers import "
            f"AutoModelForCausalLM as M; M.from_pretrained('{folder}').save_pretrained('{folder}-safetensors')\" "
            "and copy the tokenizer files next to it; or download the model's safetensors version.")
    ggufs = sorted(p.name for p in folder.glob("*.gguf"))
    hint = f" It holds GGUF file(s): pass one of them instead, e.g. --base-model {folder / ggufs[0]}." if ggufs else ""
    raise BaseModelError(f"{folder}: no weights found (no *.safetensors); the folder holds "
                         f"{_listing(folder)}.{hint}")


def load_config(folder: Path, trust_remote_code: bool) -> Any:
    """The model config, or a clear error when transformers cannot build it without remote code."""
    from transformers import AutoConfig

    if not (folder / "config.json").is_file():
        ggufs = sorted(p.name for p in folder.glob("*.gguf"))
        hint = (f" It holds GGUF file(s): pass one of them instead, e.g. --base-model {folder / ggufs[0]}."
                if ggufs else " A Hugging Face model folder has config.json, *.safetensors and tokenizer files.")
        raise BaseModelError(f"{folder}: not a Hugging Face model folder (no config.json); it holds "
                             f"{_listing(folder)}.{hint}")
    try:
        return AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (ValueError, KeyError, OSError) as exc:
        raw = _read_json(folder / "config.json")
        needs_code = "auto_map" in raw and not trust_remote_code
        fix = ("its code lives in the model repository: pass --trust-remote-code if you trust that code"
               if needs_code else "upgrade transformers or choose a model of a supported architecture "
               "(llama, mistral, qwen2, qwen3, gemma, phi3, ...)")
        raise UnsupportedArchitectureError(
            f"{folder}: architecture {raw.get('model_type')!r} ({', '.join(raw.get('architectures') or [])}) "
            f"cannot be built by transformers: {exc}. Fix: {fix}.") from exc


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def count_parameters(folder: Path, config: Any, trust_remote_code: bool) -> int:
    """Parameters of the causal LM the config describes, built on the meta device (no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        raise UnsupportedArchitectureError(
            f"{folder}: architecture {config.model_type!r} is not a causal language model that "
            f"transformers can fine-tune ({exc}). iceburg trains decoder-only chat models: choose "
            "one such as llama, mistral, qwen2, gemma or phi3.") from exc
    # parameters() yields a tied weight once, so tied embeddings are not counted twice.
    return sum(p.numel() for p in model.parameters())


def load_tokenizer_info(folder: Path, trust_remote_code: bool) -> tuple[bool, dict[str, Any]]:
    """(chat template present, tokenizer facts); raise when the tokenizer is missing or broken."""
    from transformers import AutoTokenizer

    present = [n for n in TOKENIZER_FILES if (folder / n).is_file()]
    if not present:
        raise MissingTokenizerError(
            f"{folder}: no tokenizer (none of {', '.join(TOKENIZER_FILES)}); the folder holds "
            f"{_listing(folder)}. Copy the tokenizer files (tokenizer.json, tokenizer_config.json, and "
            "chat_template.jinja if any) from the model's original repository into this folder.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (ValueError, OSError, KeyError, TypeError) as exc:
        raise MissingTokenizerError(
            f"{folder}: the tokenizer files ({', '.join(present)}) could not be loaded: {exc}. Copy "
            "a complete tokenizer (tokenizer.json + tokenizer_config.json) from the model's original "
            "repository.") from exc
    facts = {"tokenizer_class": type(tokenizer).__name__, "vocab_size": len(tokenizer),
             "eos_token": tokenizer.eos_token, "bos_token": tokenizer.bos_token}
    return bool(getattr(tokenizer, "chat_template", None)), facts


def inspect_hf_folder(folder: Path, *, trust_remote_code: bool = False) -> FolderInfo:
    """Validate `folder` as a base model and describe it; raise a `BaseModelError` when unusable."""
    folder = Path(folder)
    config = load_config(folder, trust_remote_code)
    weights = check_weights(folder)
    param_count = count_parameters(folder, config, trust_remote_code)
    has_template, tok_facts = load_tokenizer_info(folder, trust_remote_code)
    details = {"weights": weights, "architectures": list(getattr(config, "architectures", None) or []),
               **tok_facts}
    return FolderInfo(architecture=str(config.model_type), param_count=param_count,
                      has_chat_template=has_template, details=details)
