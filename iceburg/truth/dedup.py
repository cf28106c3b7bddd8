"""Exact and near-duplicate detection: normalised-text hashes and MinHash LSH (rensa).

Steps, datatrove-style (`pipeline/dedup/minhash.py`: signature -> buckets -> cluster -> filter),
all reading one `DedupConfig`:
1. `signature(record)`: the user + assistant text (system prompts excluded: the same exchange under
   two prompts teaches the same thing), NFKC-normalised, lower-cased, reduced to `\\w+` words.
   Exact key = 128-bit BLAKE2b of those words; MinHash (rensa `RMinHash`) over word n-grams.
2. `resolve(items)`: visit records best score first; a record whose exact key was kept already, or
   whose LSH candidates include a kept record with estimated Jaccard >= threshold, is a duplicate
   *of that kept record*; otherwise it is kept and indexed. So each cluster keeps its best-scored
   member and every other member names the record it duplicated.

Only keys and signatures are held (16 bytes + 160 x 4 bytes per record), never the texts.

Choice of n-gram size and threshold (measured, `bench/truth_accuracy.py`, and the table in
docs/truth_filter.md): with word 5-grams, the usual web-dedup setting, a 10% word substitution
already drops the Jaccard to ~0.42, so a 0.8 threshold only finds copies with ~2% of words
changed. With word 2-grams a 10% substitution gives Jaccard ~0.68 (min 0.66 over 50 trials),
20% gives ~0.47, and unrelated texts ~0.02; a 0.5 threshold therefore finds edits up to ~15% of
words and stays far from unrelated texts. LSH with 32 bands x 5 rows (160 permutations) makes a
pair at Jaccard 0.66 a candidate with probability 1 - (1 - 0.66^5)^32 = 0.99, and a background
pair at 0.12 (the synthetic corpus' unrelated mean) with 32 x 0.12^5 = 0.0008. With 4 rows the
background rate was 8x higher, and on 100k synthetic transcripts resolving took ~90 s instead of
linear time (every record had hundreds of band collisions to verify; measured).
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass
from typing import Any

try:
    from rensa import RMinHash
except ImportError:  # reported with the install line when near dedup is used
    RMinHash = None

from ..errors import MissingDependencyError
import numpy as np

from ..records import Record, turn_text
from .signals import words_of



@dataclass(frozen=True)
class DedupConfig:
    exact: bool = True
    near: bool = True
    ngram: int = 2  # word n-gram size of the shingles (see module docstring)
    threshold: float = 0.5  # estimated Jaccard at or above which two records are near duplicates
    num_perm: int = 160  # 160 x 32-bit = 640 bytes per signature; estimate std <= 0.04
    num_bands: int = 32  # 32 bands x 5 rows: LSH candidate threshold (1/32)^(1/5) ~ 0.50
    seed: int = 42


def record_words(record: Record) -> list[str]:
    text = "\n".join(turn_text(m) for m in record.messages if m["role"] != "system")  # calls included
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return words_of(text)


def shingles(words: list[str], n: int) -> list[str]:
    if len(words) < n:
        return [" ".join(words)] if words else [""]
    return list(map(" ".join, zip(*(words[i:] for i in range(n)))))


@dataclass
class Signature:
    exact: bytes  # 16-byte BLAKE2b of the normalised words
    digest: Any  # numpy uint32 MinHash digest (num_perm,), or None when near dedup is off


class SignatureStore:
    """Compact, growable arrays of (index, score, exact key, digest): ~680 bytes per record at 160
    permutations. Measured on rensa 0.5: an `RMinHash` object costs ~1.6 KB and a 32-band
    `RMinHashLSH` entry ~2.4 KB, so holding those for 100k records took ~370 MB; the store plus
    the banding in `Deduplicator.resolve` stays near 1.2 KB per record at its peak."""

    def __init__(self, num_perm: int):
        self.n = 0
        self._cap = 1024
        self.index = np.empty(self._cap, dtype=np.int64)
        self.score = np.empty(self._cap, dtype=np.float64)
        self.exact = np.empty(self._cap, dtype="S16")
        self.digest = np.empty((self._cap, num_perm), dtype=np.uint32)

    def add(self, index: int, score: float, sig: Signature) -> None:
        if self.n == self._cap:
            self._cap *= 2
            for name in ("index", "score", "exact", "digest"):
                old = getattr(self, name)
                new = np.empty((self._cap,) + old.shape[1:], dtype=old.dtype)
                new[: self.n] = old[: self.n]
                setattr(self, name, new)
        self.index[self.n], self.score[self.n], self.exact[self.n] = index, score, sig.exact
        if sig.digest is not None:
            self.digest[self.n] = sig.digest
        self.n += 1


class Deduplicator:
    """Computes signatures and resolves duplicate clusters (best score kept)."""

    def __init__(self, config: DedupConfig | None = None):
        self.config = config or DedupConfig()
        if self.config.near and RMinHash is None:
            raise MissingDependencyError("rensa (MinHash near-duplicate detection)", "pip install rensa==0.5.0")
        if self.config.num_perm % self.config.num_bands:
            raise ValueError(f"num_perm {self.config.num_perm} must be a multiple of num_bands {self.config.num_bands}")

    def store(self) -> SignatureStore:
        return SignatureStore(self.config.num_perm)

    @staticmethod
    def exact_key(record: Record, words: list[str] | None = None) -> bytes:
        """16-byte BLAKE2b of the record's normalised words: equal for exact duplicates."""
        words = record_words(record) if words is None else words
        return hashlib.blake2b(" ".join(words).encode("utf-8"), digest_size=16).digest()

    def signature(self, record: Record) -> Signature:
        words = record_words(record)
        key = self.exact_key(record, words)
        digest = None
        if self.config.near:
            mh = RMinHash(num_perm=self.config.num_perm, seed=self.config.seed)
            mh.update(shingles(words, self.config.ngram))
            digest = np.asarray(mh.digest(), dtype=np.uint32)
        return Signature(key, digest)

    def resolve(self, store: SignatureStore) -> dict[int, tuple[str, int, float]]:
        """Returns {dropped index: (kind, kept index, similarity)} with kind "exact_duplicate" or
        "near_duplicate"; indices not in the result are kept.

        LSH banding is done on the stored digests with numpy (datatrove-style buckets): per band,
        records are sorted by the band's hash and equal runs are candidate groups. Records are
        then visited best score first; a candidate counts only if already kept and its estimated
        Jaccard (share of equal MinHash slots, as rensa's `jaccard`) reaches the threshold.
        """
        cfg, n = self.config, store.n
        order = np.lexsort((store.index[:n], -store.score[:n]))  # best first, ties by input order
        dropped: dict[int, tuple[str, int, float]] = {}
        kept = np.zeros(n, dtype=bool)
        kept_exact: dict[bytes, int] = {}
        bands = _Bands(store.digest[:n], cfg.num_bands) if cfg.near and n else None
        for pos in order:
            idx = int(store.index[pos])
            key = bytes(store.exact[pos])
            if cfg.exact and key in kept_exact:
                dropped[idx] = ("exact_duplicate", kept_exact[key], 1.0)
                continue
            if bands is not None:
                cands = bands.candidates(pos)
                cands = cands[kept[cands]] if cands.size else cands
                if cands.size:
                    sims = (store.digest[cands] == store.digest[pos]).mean(axis=1)
                    best = int(np.argmax(sims))
                    if sims[best] >= cfg.threshold:
                        dropped[idx] = ("near_duplicate", int(store.index[cands[best]]), round(float(sims[best]), 4))
                        continue
            kept[pos] = True
            kept_exact.setdefault(key, idx)
        return dropped


class _Bands:
    """Band hashes of every digest and, per band, the runs of equal hashes (candidate buckets)."""

    def __init__(self, digest: np.ndarray, num_bands: int):
        n, perm = digest.shape
        rows = perm // num_bands
        keys = np.empty((n, num_bands), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for b in range(num_bands):  # column by column: no n x num_perm x 8-byte temporary
                k = digest[:, b * rows].astype(np.uint64)
                for j in range(1, rows):
                    k = k * np.uint64(0x100000001B3) + digest[:, b * rows + j]
                keys[:, b] = k
        self.members: list[np.ndarray] = []  # per band: positions sorted by band hash
        self.start: list[np.ndarray] = []  # per band: run start (in sorted order) of each position
        self.end: list[np.ndarray] = []
        shared = np.zeros(n, dtype=bool)  # position shares a bucket with another in some band
        for b in range(num_bands):
            o = np.argsort(keys[:, b], kind="stable").astype(np.int32)
            ks = keys[o, b]
            brk = np.flatnonzero(ks[1:] != ks[:-1]) + 1
            starts = np.concatenate(([0], brk)).astype(np.int32)
            ends = np.concatenate((brk, [n])).astype(np.int32)
            sizes = ends - starts
            multi = sizes > 1
            if not multi.any():
                continue
            run_of_sorted = np.repeat(np.arange(len(starts), dtype=np.int32), sizes)
            st = np.empty(n, dtype=np.int32)
            en = np.empty(n, dtype=np.int32)
            st[o] = starts[run_of_sorted]
            en[o] = ends[run_of_sorted]
            shared[o[np.repeat(multi, sizes)]] = True
            self.members.append(o)
            self.start.append(st)
            self.end.append(en)
        self.shared = shared

    def candidates(self, pos: int) -> np.ndarray:
        if not self.shared[pos]:
            return np.empty(0, dtype=np.int32)
        parts = [m[s[pos]:e[pos]] for m, s, e in zip(self.members, self.start, self.end) if e[pos] - s[pos] > 1]
        c = np.unique(np.concatenate(parts))
        return c[c != pos]
