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

from ..families import OLLAMA_TAGS

logger = logging.getLogger(__name__)

# What a base needs, and nothing that loads by unpickling (*.bin, *.pt, *.pth are left out).
SAFE_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "*.json", "tokenizer.model", "*.jinja",
                 "*.txt", "*.tiktoken"]
# Copies in other runtimes' layouts that transformers does not load: Mistral's repos also carry
# `consolidated.safetensors` (the whole model again, 14.5 GB for Mistral-7B-Instruct-v0.3) and
# Meta's an `original/` folder for their reference code.
SKIP_PATTERNS = ["consolidated*", "original/*"]

# Ollama library tags -> the Hugging Face instruct repo Ollama's build was converted from: each
# family's record holds its own names (iceburg/families/, docs/families.md). Read live, so a family
# registered later (a test's own) is mapped too. Used when the Ollama store has no such model.
OLLAMA_TO_HF = OLLAMA_TAGS
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
