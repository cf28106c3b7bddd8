"""Gopher repetition rules (Rae et al. 2021, "Scaling Language Models: Methods, Analysis &
Insights from Training Gopher", Table A1, arXiv:2112.11446), vectorised with numpy.

Thresholds: duplicate line / paragraph fraction 0.30, their character fractions 0.20, top
2/3/4-gram character fraction 0.20/0.18/0.16, duplicate 5..10-gram character fraction 0.15 down to
0.10. Gopher applies them to documents of at least 50 words; we apply the n-gram rules from the
same minimum (shorter answers give meaningless n-gram statistics: "of the" twice in ten words is
already 20%). Loops at the end of a turn are also looked for in windows (see `repetition`).
"""

from __future__ import annotations

import re

import numpy as np

GOPHER_LINE = {"dup_line_frac": 0.30, "dup_para_frac": 0.30, "dup_line_char_frac": 0.20,
               "dup_para_char_frac": 0.20}
GOPHER_TOP_NGRAM = {2: 0.20, 3: 0.18, 4: 0.16}
GOPHER_DUP_NGRAM = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
GOPHER_MIN_WORDS = 50
# Structure mode: a whole-text Gopher hit is a loop only when repeated 5-grams cover this many
# consecutive words. 45: chosen by the leave-one-source-out protocol among 15 / 30 / 45 (every fold
# chose it; bench/results/truth_loso.md, docs/truth_filter.md); a planted loop of 6+ copies of a
# sentence covers 50+ words, a document reusing its phrases covers runs of 5-20.
LOOP_RUN_WORDS = 45

_WORD = re.compile(r"\w+")


def _dup_frac(items: list[str]) -> tuple[float, float]:
    """Fraction of items (and of their characters) that repeat an earlier item (Gopher)."""
    if len(items) < 2:
        return 0.0, 0.0
    seen: set[str] = set()
    dup = dup_chars = total_chars = 0
    for it in items:
        total_chars += len(it)
        if it in seen:
            dup += 1
            dup_chars += len(it)
        else:
            seen.add(it)
    return dup / len(items), dup_chars / max(total_chars, 1)


def word_arrays(words: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(64-bit word hashes, word lengths) for `ngram_repetition`; windows reuse slices of them."""
    n = len(words)
    return (np.fromiter(map(hash, words), dtype=np.int64, count=n).view(np.uint64),
            np.fromiter(map(len, words), dtype=np.int64, count=n))


def ngram_repetition(words: list[str] | None = None, arrays: tuple[np.ndarray, np.ndarray] | None = None,
                     top: bool = True, cover: list | None = None) -> dict[str, float]:
    """Gopher top-n-gram and duplicate-n-gram character fractions, vectorised with numpy.

    n-grams are rolling 64-bit hashes of word hashes. Duplicate-n-gram fraction: characters of the
    words covered by any non-first occurrence of a repeated n-gram (overlaps counted once), over
    all word characters; top-n-gram fraction: count x characters of the most frequent n-gram.
    `cover`, when given, receives the boolean mask of the words covered by a non-first occurrence
    of a repeated 5-gram (all False when no 5-gram repeats).
    """
    out: dict[str, float] = {}
    ids, lens = arrays if arrays is not None else word_arrays(words or [])
    n_words = len(ids)
    total = float(lens.sum()) or 1.0
    csum = np.concatenate(([0], np.cumsum(lens)))
    h = ids.copy()
    prime = np.uint64(1099511628211)
    for n in range(2, 11):
        m = n_words - n + 1
        if m < 2:
            break
        with np.errstate(over="ignore"):
            h = h[:m] * prime + ids[n - 1:n - 1 + m]
        if not top and n < 5:
            continue  # windows use only the duplicate-n-gram rules
        order = np.argsort(h)  # unstable (3x faster than stable); first occurrences found below
        hs = h[order]
        same = hs[1:] == hs[:-1]  # equal sorted neighbours: a repeated n-gram
        if not same.any():
            for k in range(n, 11):
                out[f"dup_{k}gram_frac"] = 0.0
                if k in GOPHER_TOP_NGRAM:
                    out[f"top_{k}gram_frac"] = 0.0
            break  # no repeated n-gram means no repeated longer n-gram either
        run_starts = np.flatnonzero(np.concatenate(([True], ~same)))
        if n in GOPHER_TOP_NGRAM:
            counts = np.diff(np.concatenate((run_starts, [m])))
            c = int(counts.max())
            firsts = order[run_starts[counts == c]]  # any occurrence: all have the same characters
            chars = float((csum[firsts + n] - csum[firsts]).max())  # ties: the longest n-gram
            out[f"top_{n}gram_frac"] = c * chars / total
        if n in GOPHER_DUP_NGRAM:
            dup_start = np.ones(m, dtype=bool)
            dup_start[np.minimum.reduceat(order, run_starts)] = False  # the first occurrence of each
            starts = np.flatnonzero(dup_start)
            diff = np.bincount(starts, minlength=n_words + 1) - np.bincount(starts + n, minlength=n_words + 1)
            covered = np.cumsum(diff[:-1]) > 0
            if n == 5 and cover is not None:
                cover.append(covered)
            frac = out[f"dup_{n}gram_frac"] = float(lens[covered].sum()) / total
            if n == 5 and frac <= min(t for k, t in GOPHER_DUP_NGRAM.items() if k > 5):
                # a repeat of a longer n-gram repeats the 5-grams inside it, so every longer
                # fraction is <= this one and no longer rule can trip: skip them
                break
    return out


_LIMITS = {**GOPHER_LINE, **{f"top_{n}gram_frac": t for n, t in GOPHER_TOP_NGRAM.items()},
           **{f"dup_{n}gram_frac": t for n, t in GOPHER_DUP_NGRAM.items()}}
# Generation loops sit at the end of a turn and can be diluted below the document-level limits by
# the good text before them (measured: a 30% tail loop gave dup_5gram_frac 0.14 on the whole
# transcript). So the n-gram rules also run on each turn of a multi-turn transcript and on the
# last TAIL_WORDS words of every turn of at least 3 x TAIL_WORDS words.
TAIL_WORDS = 100


# Windows use only the duplicate-n-gram rules: the top-n-gram rules measure how often one short
# phrase recurs, which is noisy on 100 words (measured: they flagged 1.5% of clean synthetic
# transcripts' tails, while loops break the duplicate-5..10-gram rules by a wide margin).
_WINDOW_LIMITS = {f"dup_{n}gram_frac": t for n, t in GOPHER_DUP_NGRAM.items()}


def _hits(values: dict[str, float], where: str, limits: dict[str, float] = _LIMITS) -> list[str]:
    return [f"{where}{k} {values[k]:.2f} > {t:.2f}" for k, t in limits.items() if values.get(k, 0.0) > t]


def _local_hits(hits: list[str], run_words: float, lines: list[str], paras: list[str]) -> list[str]:
    """Structure mode: n-gram hits count when repeated 5-grams cover LOOP_RUN_WORDS consecutive
    words; duplicate line / paragraph hits when some line or paragraph repeats the one right
    before it (a loop emits copies back to back; a document repeats a line far apart)."""
    tandem = any(a == b for a, b in zip(lines, lines[1:])) or any(a == b for a, b in zip(paras, paras[1:]))
    return [h for h in hits if (run_words >= LOOP_RUN_WORDS if "gram" in h.split()[0] else tandem)]


def repetition(prose: str, turn_words: list[list[str]], local: bool = False) -> tuple[dict[str, float], list[str]]:
    """Gopher repetition values of the whole assistant text, and the rules broken anywhere.
    `local=True` (issue 31's structure mode): a whole-text rule counts only when the repeated
    5-grams cover a run of at least LOOP_RUN_WORDS consecutive words (`dup_run_words`)."""
    lines = [ln.strip() for ln in prose.split("\n") if _WORD.search(ln)]
    paras = [p.strip() for p in re.split(r"\n\s*\n", prose) if _WORD.search(p)]
    v: dict[str, float] = {}
    v["dup_line_frac"], v["dup_line_char_frac"] = _dup_frac(lines)
    v["dup_para_frac"], v["dup_para_char_frac"] = _dup_frac(paras)
    words = [w for tw in turn_words for w in tw]
    ids, lens = word_arrays(words)
    cover: list[np.ndarray] = []
    if len(words) >= GOPHER_MIN_WORDS:
        v.update(ngram_repetition(arrays=(ids, lens), cover=cover))
    hits = _hits(v, "")
    # Locality (issue 31): the longest stretch of words covered by repeated 5-grams. A loop repeats
    # a span back to back, so its covered words run long; a document that reuses its own phrases
    # ("File mode indicating ... by others.") covers many short stretches.
    if cover and cover[0].any():
        edges = np.flatnonzero(np.diff(np.concatenate(([0], cover[0].view(np.int8), [0]))))
        v["dup_run_words"] = float((edges[1::2] - edges[::2]).max())
    else:
        v["dup_run_words"] = 0.0
    if local and hits:
        hits = _local_hits(hits, v["dup_run_words"], lines, paras)
    # One number for explanation: the worst rule as a share of its Gopher threshold (1.0 = at the limit).
    v["repetition"] = max((v.get(k, 0.0) / t for k, t in _LIMITS.items()), default=0.0)
    windows: list[tuple[str, int, int]] = []  # (label, start, end) word ranges
    # A 5-gram repeated inside a window is repeated in the whole text, and its later occurrence is
    # a non-first one there too, so a window's duplicated-5-gram characters are at most the whole
    # text's covered characters inside the window; longer n-grams cover less. A window whose share
    # of those is at or under the lowest duplicate-n-gram limit cannot break any rule and is
    # skipped (the common case for real text: measured on the 10k bench corpus, this skips
    # almost every window the older whole-text bound kept).
    covered_chars = np.concatenate(([0], np.cumsum(np.where(cover[0], lens, 0)))) if cover else None
    all_chars = np.concatenate(([0], np.cumsum(lens)))
    min_limit = min(GOPHER_DUP_NGRAM.values())

    def may_break(a: int, b: int) -> bool:
        return covered_chars is not None and \
            covered_chars[b] - covered_chars[a] > min_limit * (all_chars[b] - all_chars[a])

    start = 0
    for i, tw in enumerate(turn_words, 1):
        end = start + len(tw)
        if len(turn_words) > 1 and len(tw) >= GOPHER_MIN_WORDS and may_break(start, end):
            windows.append((f"turn {i} ", start, end))
        if len(tw) >= 3 * TAIL_WORDS and may_break(end - TAIL_WORDS, end):
            windows.append((f"turn {i} tail ", end - TAIL_WORDS, end))
        start = end
    worst = 0.0
    for where, a, b in windows:
        wv = ngram_repetition(arrays=(ids[a:b], lens[a:b]), top=False)
        worst = max(worst, max((wv.get(k, 0.0) / t for k, t in _WINDOW_LIMITS.items()), default=0.0))
        if not hits:
            hits = _hits(wv, where, _WINDOW_LIMITS)
    v["repetition_window"] = worst  # worst checked window; 0 when no window could break a rule
    return v, hits
