"""Find a model in the local Ollama store from its tag, without an Ollama server.

Layout (ollama/ollama `server/internal/manifest`, and any `~/.ollama/models` folder):

    <store>/manifests/<host>/<namespace>/<name>/<tag>   JSON: {"layers": [{mediaType, digest, size}, ...]}
    <store>/blobs/sha256-<64 hex>                       content-addressed layer files

The layer with mediaType `application/vnd.ollama.image.model` is the GGUF weights file. Names in
tags and digests in manifests are validated before they become paths, and every path is checked
to stay inside the store, so a crafted tag or manifest cannot read files elsewhere.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CorruptGGUFError, OllamaManifestError

logger = logging.getLogger(__name__)

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
# One name part: what Ollama's types/model/name.go accepts (letters, digits, _ . -; starts with a
# letter, digit or _), which excludes "/", "..", "~" and absolute paths.
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
_DIGEST = re.compile(r"sha256[:\-]([0-9a-f]{64})")


@dataclass(frozen=True)
class OllamaName:
    host: str
    namespace: str
    name: str
    tag: str

    def __str__(self) -> str:
        prefix = "" if self.host == DEFAULT_HOST else f"{self.host}/"
        ns = "" if self.namespace == DEFAULT_NAMESPACE and not prefix else f"{self.namespace}/"
        return f"{prefix}{ns}{self.name}:{self.tag}"

    @property
    def parts(self) -> tuple[str, str, str, str]:
        return self.host, self.namespace, self.name, self.tag


@dataclass
class OllamaModel:
    """A model found in the store: its manifest and the GGUF blob of its model layer."""

    name: OllamaName
    manifest: Path
    blob: Path
    digest: str  # 64 hex chars (sha256 of the blob)
    size: int  # bytes, as the manifest records it
    other_layers: list[str] = field(default_factory=list)  # media types of the non-model layers


# Where the Linux install script's systemd service (user `ollama`, home /usr/share/ollama) keeps
# its models (Ollama docs/faq.md, "Where are models stored?").
LINUX_SERVICE_STORE = Path("/usr/share/ollama/.ollama/models")


def default_stores() -> list[Path]:
    """`[$OLLAMA_MODELS]` when set, else `~/.ollama/models` then the Linux service's store."""
    env = os.environ.get("OLLAMA_MODELS")
    if env:
        return [Path(env).expanduser()]
    return [Path.home() / ".ollama" / "models", LINUX_SERVICE_STORE]


def default_store() -> Path:
    """The first default store: `$OLLAMA_MODELS`, else `~/.ollama/models` (Ollama's own default)."""
    return default_stores()[0]


def parse_ollama_name(spec: str) -> OllamaName | None:
    """`name[:tag]`, `namespace/name[:tag]` or `host/namespace/name[:tag]`; None if not such a name."""
    rest, _, tag = spec.rpartition(":") if ":" in spec else (spec, "", DEFAULT_TAG)
    parts = rest.split("/")
    if not tag or len(parts) > 3:
        return None
    parts = [DEFAULT_HOST, DEFAULT_NAMESPACE][: 3 - len(parts)] + parts
    if not all(_PART.fullmatch(p) and ".." not in p for p in [*parts, tag]):
        return None
    host, namespace, name = parts
    return OllamaName(host, namespace, name, tag)


def _inside(store: Path, *parts: str) -> Path:
    """store/parts..., refusing any name that would lead outside the store.

    The parts are validated names already; this is the second lock. It is lexical on purpose: a
    store whose `blobs/` is a symlink to another disk (a common setup) stays usable.
    """
    root = Path(os.path.abspath(store))
    path = Path(os.path.normpath(root.joinpath(*parts)))
    if any(os.sep in p or p in ("", ".", "..") for p in parts) or not path.is_relative_to(root):
        raise OllamaManifestError(f"{store}: {'/'.join(parts)!r} leads outside the Ollama store; "
                                  "refusing to read it.")
    return path


def find_manifest(store: Path, name: OllamaName) -> Path | None:
    """The manifest file for `name`, or None when the store does not have it."""
    path = _inside(store, "manifests", *name.parts)
    return path if path.is_file() else None


def read_model_layer(store: Path, name: OllamaName, manifest: Path) -> OllamaModel:
    """Parse `manifest` and locate its GGUF model blob; raise `OllamaManifestError` when unusable."""
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        layers = data["layers"]
        if not isinstance(layers, list):
            raise TypeError("'layers' is not a list")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OllamaManifestError(f"{manifest} (Ollama model {name}): unreadable manifest ({exc}). "
                                  f"Re-pull the model: ollama pull {name}") from exc
    media = [str(layer.get("mediaType")) for layer in layers if isinstance(layer, dict)]
    models = [layer for layer in layers if isinstance(layer, dict) and layer.get("mediaType") == MODEL_MEDIA_TYPE]
    if not models:
        tensor_format = any(m.startswith("application/vnd.ollama.image.tensor") for m in media)
        what = ("it stores the model as per-tensor safetensors layers (Ollama's newer format), which "
                "iceburg does not read" if tensor_format else "a manifest without one names no weights")
        raise OllamaManifestError(
            f"{manifest} (Ollama model {name}): no layer of type {MODEL_MEDIA_TYPE}; found layer types "
            f"{', '.join(media) or 'none'}; {what}. Use the model's GGUF or Hugging Face release as "
            "--base-model instead.")
    if len(models) > 1:
        logger.warning("%s has %d model layers; using the first", manifest, len(models))
    layer = models[0]
    match = _DIGEST.fullmatch(str(layer.get("digest", "")))
    if match is None:
        raise OllamaManifestError(f"{manifest} (Ollama model {name}): model layer digest "
                                  f"{layer.get('digest')!r} is not 'sha256:<64 hex>'; refusing to turn it "
                                  f"into a path. Re-pull the model: ollama pull {name}")
    digest = match.group(1)
    blob = _inside(store, "blobs", f"sha256-{digest}")
    if not blob.is_file():
        raise OllamaManifestError(f"{manifest} (Ollama model {name}): its model blob {blob} is missing. "
                                  f"Re-pull the model: ollama pull {name}")
    size = layer.get("size")
    actual = blob.stat().st_size
    if isinstance(size, int) and size != actual:
        raise CorruptGGUFError(f"{blob} (model layer of Ollama model {name}): {actual} bytes, the manifest "
                               f"says {size}; the download is truncated or corrupt. Re-pull the model: "
                               f"ollama pull {name}")
    others = [m for m in media if m != MODEL_MEDIA_TYPE]
    return OllamaModel(name=name, manifest=manifest, blob=blob, digest=digest,
                       size=actual, other_layers=others)
