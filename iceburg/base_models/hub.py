"""Hugging Face repos: the local cache first, a download only when allowed, and the Ollama tag map.

Cache lookups go through huggingface_hub's own resolver (`snapshot_download(local_files_only=True)`
reads `refs/` and `snapshots/` exactly as a download writes them), so any cache a user filled with
`hf download`, transformers or another tool is found. Downloads fetch only safetensors, JSON,
tokenizer and template files: never a pickle checkpoint.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

logger = logging.getLogger(__name__)

# What a base needs, and nothing that loads by unpickling (*.bin, *.pt, *.pth are left out).
SAFE_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "*.json", "tokenizer.model", "*.jinja",
                 "*.txt", "*.tiktoken"]
# Copies in other runtimes' layouts that transformers does not load: Mistral's repos also carry
# `consolidated.safetensors` (the whole model again, 14.5 GB for Mistral-7B-Instruct-v0.3) and
# Meta's an `original/` folder for their reference code.
SKIP_PATTERNS = ["consolidated*", "original/*"]

# Ollama library tags -> the Hugging Face instruct repo Ollama's build was converted from
# (sizes as listed on ollama.com/library/<name>). Used when the Ollama store has no such model.
# "default" is the size Ollama's `latest` tag points at. meta-llama, mistralai and google repos
# are gated on the Hub: accept the licence there and run `hf auth login` before downloading.
# gemma3 4b/12b/27b are image-text models (Gemma3ForConditionalGeneration) and are left out.
OLLAMA_TO_HF: dict[str, dict[str, str]] = {
    "llama3.2": {"default": "3b", "1b": "meta-llama/Llama-3.2-1B-Instruct",
                 "3b": "meta-llama/Llama-3.2-3B-Instruct"},
    "llama3.1": {"default": "8b", "8b": "meta-llama/Llama-3.1-8B-Instruct",
                 "70b": "meta-llama/Llama-3.1-70B-Instruct", "405b": "meta-llama/Llama-3.1-405B-Instruct"},
    "llama3": {"default": "8b", "8b": "meta-llama/Meta-Llama-3-8B-Instruct",
               "70b": "meta-llama/Meta-Llama-3-70B-Instruct"},
    # Ollama's `mistral` is Mistral-7B-Instruct v0.3 (ollama.com/library/mistral: "v0.3").
    "mistral": {"default": "7b", "7b": "mistralai/Mistral-7B-Instruct-v0.3"},
    "mistral-nemo": {"default": "12b", "12b": "mistralai/Mistral-Nemo-Instruct-2407"},
    "qwen2.5": {"default": "7b", "0.5b": "Qwen/Qwen2.5-0.5B-Instruct", "1.5b": "Qwen/Qwen2.5-1.5B-Instruct",
                "3b": "Qwen/Qwen2.5-3B-Instruct", "7b": "Qwen/Qwen2.5-7B-Instruct",
                "14b": "Qwen/Qwen2.5-14B-Instruct", "32b": "Qwen/Qwen2.5-32B-Instruct",
                "72b": "Qwen/Qwen2.5-72B-Instruct"},
    # Qwen3 releases one hybrid-thinking chat model per size (no "-Instruct" suffix).
    "qwen3": {"default": "8b", "0.6b": "Qwen/Qwen3-0.6B", "1.7b": "Qwen/Qwen3-1.7B", "4b": "Qwen/Qwen3-4B",
              "8b": "Qwen/Qwen3-8B", "14b": "Qwen/Qwen3-14B", "32b": "Qwen/Qwen3-32B"},
    "phi3.5": {"default": "3.8b", "3.8b": "microsoft/Phi-3.5-mini-instruct"},
    "phi3": {"default": "3.8b", "3.8b": "microsoft/Phi-3-mini-4k-instruct", "14b": "microsoft/Phi-3-medium-4k-instruct"},
    "phi4": {"default": "14b", "14b": "microsoft/phi-4"},
    "smollm2": {"default": "1.7b", "135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
                "360m": "HuggingFaceTB/SmolLM2-360M-Instruct", "1.7b": "HuggingFaceTB/SmolLM2-1.7B-Instruct"},
    "gemma": {"default": "7b", "2b": "google/gemma-2b-it", "7b": "google/gemma-7b-it"},
    "gemma2": {"default": "9b", "2b": "google/gemma-2-2b-it", "9b": "google/gemma-2-9b-it",
               "27b": "google/gemma-2-27b-it"},
    "gemma3": {"default": "1b", "270m": "google/gemma-3-270m-it", "1b": "google/gemma-3-1b-it"},
}
_SIZE = re.compile(r"\d+(\.\d+)?[bm]")


def map_ollama_tag(name: str, tag: str) -> str | None:
    """HF instruct repo for an Ollama library `name:tag` (e.g. `qwen2.5:7b-instruct-q4_K_M`), or None.

    Tags that name a base (`-text`) rather than the instruct model are not mapped: the instruct
    repo would be a different model.
    """
    sizes = OLLAMA_TO_HF.get(name.lower())
    if sizes is None:
        return None
    pieces = tag.lower().split("-")
    if "text" in pieces:
        return None
    if _SIZE.fullmatch(pieces[0]):
        return sizes.get(pieces[0])
    return sizes[sizes["default"]] if pieces[0] in ("latest", "instruct") else None


def is_repo_id(spec: str) -> bool:
    """Whether `spec` is a syntactically valid Hub model id (`org/name` or a legacy `name`)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if ":" in spec or spec.startswith(("/", ".", "~")):
        return False
    try:
        validate_repo_id(spec)
    except HFValidationError:
        return False
    return True


def network_allowed() -> bool:
    """False when the user switched the Hub off (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    from huggingface_hub import constants

    return not constants.is_offline_mode()


def from_cache(repo_id: str, cache_dir: Path | None) -> Path | None:
    """The cached snapshot folder of `repo_id` (main revision), or None when it is not cached."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        path = snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=True)
    except (EntryNotFoundError, OSError, ValueError) as exc:
        logger.debug("%s not in the Hugging Face cache: %s", repo_id, exc)
        return None
    return Path(path)


def download(repo_id: str, cache_dir: Path | None) -> tuple[Path | None, str]:
    """(snapshot folder, "") after downloading the safe files of `repo_id`, or (None, why not)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, RepositoryNotFoundError

    logger.info("downloading %s from the Hugging Face Hub (safetensors, config, tokenizer only)", repo_id)
    try:
        path = snapshot_download(repo_id, cache_dir=cache_dir, allow_patterns=SAFE_PATTERNS,
                                 ignore_patterns=SKIP_PATTERNS)
    except GatedRepoError:
        return None, (f"{repo_id} is gated: accept its licence on huggingface.co/{repo_id} and run "
                      "`hf auth login`")
    except RepositoryNotFoundError:
        return None, f"{repo_id} does not exist on the Hub (or is private)"
    except (EntryNotFoundError, OSError, ValueError) as exc:
        return None, f"download of {repo_id} failed ({type(exc).__name__}: {exc})"
    return Path(path), ""
