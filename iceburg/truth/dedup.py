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

Only keys and signatures are held (16 bytes + 128 x 4 bytes per record), never the texts.

Choice of n-gram size and threshold (measured, `bench/truth_accuracy.py`, and the table in
docs/truth_filter.md): with word 5-grams, the usual web-dedup setting, a 10% word substitution
already drops the Jaccard to ~0.42, so a 0.8 threshold only finds copies with ~2% of words
changed. With word 2-grams a 10% substitution gives Jaccard ~0.68 (min 0.66 over 50 trials),
20% gives ~0.47, and unrelated texts ~0.02; a 0.5 threshold therefore finds edits up to ~15% of
words and stays far from unrelated texts. LSH with 32 bands x 4 rows (128 permutations) makes a
pair at Jaccard 0.66 a candidate with probability 1 - (1 - 0.66^4)^32 > 0.999.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass
from typing import Any, Iterable

try:
    from rensa import RMinHash, RMinHashLSH
except ImportError:  # reported with the install line when near dedup is used
    RMinHash = RMinHashLSH = None

from ..errors import MissingDependencyError
from ..records import Record
from .signals import words_of



@dataclass(frozen=True)
class DedupConfig:
    exact: bool = True
    near: bool = True
    ngram: int = 2  # word n-gram size of the shingles (see module docstring)
    threshold: float = 0.5  # estimated Jaccard at or above which two records are near duplicates
    num_perm: int = 128  # 128 x 32-bit = 512 bytes per signature; estimate std <= 0.045
    num_bands: int = 32  # 32 bands x 4 rows: LSH candidate threshold (1/32)^(1/4) ~ 0.42
    seed: int = 42


def record_words(record: Record) -> list[str]:
    text = "\n".join(m["content"] for m in record.messages if m["role"] != "system")
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return words_of(text)


def shingles(words: list[str], n: int) -> list[str]:
    if len(words) < n:
        return [" ".join(words)] if words else [""]
    return list(map(" ".join, zip(*(words[i:] for i in range(n)))))


@dataclass
class Signature:
    exact: bytes
    minhash: Any  # rensa.RMinHash, or None when near dedup is off


class Deduplicator:
    """Computes signatures and resolves duplicate clusters (best score kept)."""

    def __init__(self, config: DedupConfig | None = None):
        self.config = config or DedupConfig()
        if self.config.near and RMinHash is None:
            raise MissingDependencyError("rensa (MinHash near-duplicate detection)", "pip install rensa==0.5.0")

    def signature(self, record: Record) -> Signature:
        words = record_words(record)
        key = hashlib.blake2b(" ".join(words).encode("utf-8"), digest_size=16).digest()
        mh = None
        if self.config.near:
            mh = RMinHash(num_perm=self.config.num_perm, seed=self.config.seed)
            mh.update(shingles(words, self.config.ngram))
        return Signature(key, mh)

    def resolve(self, items: Iterable[tuple[int, float, Signature]]
                ) -> dict[int, tuple[str, int, float]]:
        """items: (index, score, signature). Returns {dropped index: (kind, kept index, similarity)}
        with kind "exact_duplicate" or "near_duplicate"; indices not in the result are kept."""
        cfg = self.config
        order = sorted(items, key=lambda t: (-t[1], t[0]))  # best first, ties by input order
        lsh = RMinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm, num_bands=cfg.num_bands)
        kept_exact: dict[bytes, int] = {}
        kept_mh: dict[int, Any] = {}
        dropped: dict[int, tuple[str, int, float]] = {}
        for idx, _score, sig in order:
            if cfg.exact and sig.exact in kept_exact:
                dropped[idx] = ("exact_duplicate", kept_exact[sig.exact], 1.0)
                continue
            if cfg.near and sig.minhash is not None:
                best, best_j = -1, 0.0
                for cand in lsh.query(sig.minhash):
                    j = sig.minhash.jaccard(kept_mh[cand])
                    if j >= cfg.threshold and (j > best_j or (j == best_j and cand < best)):
                        best, best_j = cand, j
                if best >= 0:
                    dropped[idx] = ("near_duplicate", best, round(best_j, 4))
                    continue
                lsh.insert(idx, sig.minhash)
                kept_mh[idx] = sig.minhash
            kept_exact.setdefault(sig.exact, idx)
        return dropped

