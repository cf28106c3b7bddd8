"""Learned combination of the truth filter's signals (issue 31): two small logistic models.

The rules decide each defect by its own threshold, with hand-set suppressions between them (the
last-block review clears a line cut, the locality gate clears a Gopher hit). Here the signal values
the filter already computes become features of one logistic model per disputed defect class:

- `repetition` (loops): the Gopher repetition values, the locality run, the block rules (code,
  tables, long lines, periodic units) and four raw-text features the prose rules cannot see (a
  loop written inside a code block: consecutive identical blank-line chunks, periodic units, and
  the longest runs of repeated 5-grams over ALL words, code included, counting every repeat and
  only third and later copies: a loop repeats its unit many times, documentation shows an example
  twice);
- `truncated`: the line rules' verdict and its kind, the last-block review, the last line's shape
  and the document's own habit of ending lines without punctuation (man pages and docstrings do).

Refusals, empty answers, boilerplate and garbage stay rules (every left-out source at 1.0).

The coefficients are a checked-in artefact, `combiner.json`, fit by `bench/truth_loso_learned.py
--write` on the planted defects of the leave-one-source-out corpora (bench/truth_loso_corpus.py):
one model per left-out source (fit on the other sources, thresholds chosen there) and one fit on
all sources. Nothing is trained at filter time. A reject names the features that drove it (the
largest contributions coefficient x standardised value) beside the rule's own message.

Which models decide is the artefact's `parts`: measured leave-one-source-out, only the loop model
was no worse than the rules on every left-out source (the truncation model lost recall on two of
four), so the written artefact lets the loop model decide and leaves truncation to the rules
(docs/truth_filter.md, "Learned combination"). Since issue 31's fourth session it is the default
(`TruthFilter()` with the structure rules); `TruthFilter(combine="rules")` turns it off.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .repetition import LOOP_RUN_WORDS, word_arrays
from .signals import _DANGLING, _TERMINAL, TextSignals, _sentence_ended, periodic_repeats, words_of
from .structure import block_shape

WEIGHTS = Path(__file__).with_name("combiner.json")
# The line rules' reason -> the kind of cut it names (first key found in the message).
CUT_KINDS = (("unclosed code fence", "cut_fence"), ("not closed", "cut_markup"), ("announces", "cut_colon"),
             ("mid-sentence", "cut_punct"), ("last line ends on", "cut_dangling"), ("sibling", "cut_list"),
             ("table row", "cut_table"), ("empty list item", "cut_list"), ("terminal punctuation", "cut_no_mark"))
TRUNC_FEATURES = ("line_cut", "block_complete", "cut_fence", "cut_markup", "cut_colon", "cut_punct", "cut_dangling",
                  "cut_list", "cut_table", "cut_no_mark", "shape_metadata", "shape_label", "shape_task",
                  "ends_sentence", "ends_close", "ends_digit", "ends_dangling", "last_indented", "last_words",
                  "last_len_ratio", "open_line_share", "open_para_share", "item_share", "cut_in_punctuated",
                  "open_end_in_punctuated")
LOOP_FEATURES = ("repetition", "repetition_window", "dup_run", "dup_5gram_frac", "dup_10gram_frac",
                 "top_2gram_frac", "dup_line_frac", "dup_para_frac", "periodic", "code_dup_line_frac",
                 "code_tandem", "table_dup_row_frac", "long_line_repetition", "raw_chunk_tandem",
                 "raw_periodic", "raw_dup_run", "raw_dup_run3", "log_words")
_ITEM = re.compile(r"^\s*(?:[-*+\u2022]|\d{1,3}[.)])\s")


def _cap(x: float, hi: float) -> float:
    return min(float(x), hi)


def truncation_features(final: str, line_cut: str | None, block_cut: str | None) -> dict[str, float]:
    """Features of the final answer's ending (see module docstring); cheap except what the filter
    already computed (the two verdicts)."""
    f = dict.fromkeys(TRUNC_FEATURES, 0.0)
    lines = [ln.rstrip() for ln in final.rstrip().split("\n") if ln.strip()]
    if not lines:
        return f
    if line_cut:
        f["line_cut"], f["block_complete"] = 1.0, float(block_cut is None)
        kind = next((k for key, k in CUT_KINDS if key in line_cut), "cut_no_mark")
        f[kind] = 1.0
    last = lines[-1]
    shape = block_shape(last)
    if shape:
        f["shape_task" if shape in ("task", "emoji_item") else f"shape_{shape}"] = 1.0
    words = words_of(last)
    f["ends_sentence"] = float(_sentence_ended(last))
    f["ends_close"] = float(last[-1] in ")]}`\"'")
    f["ends_digit"] = float(last[-1].isdigit())
    f["ends_dangling"] = float(bool(words) and words[-1] in _DANGLING and last[-1] not in _TERMINAL)
    f["last_indented"] = float(last[:1] in (" ", "\t"))
    f["last_words"] = math.log1p(len(words))
    lens = sorted(len(ln) for ln in lines)
    f["last_len_ratio"] = _cap(len(last) / max(lens[len(lens) // 2], 1), 3.0)
    body = lines[:-1]
    if body:
        f["open_line_share"] = sum(1 for ln in body if ln[-1] not in _TERMINAL) / len(body)
        f["item_share"] = sum(1 for ln in body if _ITEM.match(ln)) / len(body)
    paras = [p.rstrip().split("\n")[-1] for p in re.split(r"\n\s*\n", final.rstrip())[:-1] if p.strip()]
    if paras:
        f["open_para_share"] = sum(1 for p in paras if not _sentence_ended(p)) / len(paras)
    # the same ending weighs more in a document that punctuates its lines (a README) than in one
    # that does not (a man page's option list): the two interactions a linear model cannot form
    f["cut_in_punctuated"] = f["line_cut"] * (1.0 - f["open_line_share"])
    f["open_end_in_punctuated"] = (1.0 - f["ends_sentence"]) * (1.0 - f["open_line_share"])
    return f


def _chunk_tandem(text: str) -> int:
    """Most consecutive identical blank-line-separated chunks of the raw text (code included)."""
    chunks = [" ".join(c.split()) for c in re.split(r"\n\s*\n", text) if c.strip()]
    best = run = 1
    for a, b in zip(chunks, chunks[1:]):
        run = run + 1 if a == b else 1
        best = max(best, run)
    return best if chunks else 0


def _dup_runs(words: list[str], n: int = 5, copies: tuple[int, ...] = (2, 3)) -> list[int]:
    """For each `copy` in `copies`: the longest stretch of words covered by the copy-th and later
    occurrences of repeated word n-grams (copy=2: every non-first occurrence; rolling 64-bit
    hashes of the words, as `repetition.ngram_repetition`; numpy, ~20x a Python loop)."""
    if len(words) < 2 * n:
        return [0] * len(copies)
    ids, _lens = word_arrays(words)
    m = len(ids) - n + 1
    h = ids[:m].copy()
    with np.errstate(over="ignore"):
        for k in range(1, n):
            h = h * np.uint64(1099511628211) + ids[k:k + m]
    order = np.argsort(h, kind="stable")
    hs = h[order]
    starts = np.flatnonzero(np.concatenate(([True], hs[1:] != hs[:-1])))
    rank_sorted = np.arange(m) - np.repeat(starts, np.diff(np.append(starts, m)))
    rank = np.empty(m, dtype=np.int64)
    rank[order] = rank_sorted  # 0 for the first occurrence of an n-gram, 1 for the second, ...
    return [_longest_cover(np.flatnonzero(rank >= c - 1), n, len(ids)) for c in copies]


def _longest_cover(starts: np.ndarray, n: int, total: int) -> int:
    """Longest run of word positions covered by n-grams starting at `starts`."""
    if not len(starts):
        return 0
    diff = np.bincount(starts, minlength=total + 1) - np.bincount(starts + n, minlength=total + 1)
    covered = np.cumsum(diff[:-1]) > 0
    edges = np.flatnonzero(np.diff(np.concatenate(([0], covered.view(np.int8), [0]))))
    return int((edges[1::2] - edges[::2]).max())


def _dup_run(words: list[str], n: int = 5, copy: int = 2) -> int:
    return _dup_runs(words, n, (copy,))[0]


def loop_features(v: dict[str, float], turns: list[str]) -> dict[str, float]:
    """The repetition values the filter computed (capped at a few times their limit) plus four
    raw-text features: a loop inside a code block is invisible to the prose rules."""
    raw = words_of("\n".join(turns))
    f = {"repetition": _cap(v.get("repetition", 0), 4), "repetition_window": _cap(v.get("repetition_window", 0), 4),
         "dup_run": _cap(v.get("dup_run_words", 0) / LOOP_RUN_WORDS, 4)}
    for k in ("dup_5gram_frac", "dup_10gram_frac", "top_2gram_frac", "dup_line_frac", "dup_para_frac",
              "code_dup_line_frac", "table_dup_row_frac"):
        f[k] = float(v.get(k, 0.0))
    f["periodic"] = _cap(v.get("periodic_repeats", 0) / 8, 4)
    f["code_tandem"] = _cap(v.get("code_tandem", 1) / 4, 4)
    f["long_line_repetition"] = _cap(v.get("long_line_repetition", 0), 4)
    f["raw_chunk_tandem"] = _cap(max((_chunk_tandem(t) for t in turns), default=0) - 1, 6)
    f["raw_periodic"] = _cap(periodic_repeats(raw) / 8, 4)
    run2, run3 = _dup_runs(raw)
    f["raw_dup_run"] = _cap(run2 / LOOP_RUN_WORDS, 4)
    # a loop repeats its unit many times; documentation shows one example twice (Node.js's CommonJS
    # and ES-module versions of the same code): the run covered by third and later copies
    f["raw_dup_run3"] = _cap(run3 / LOOP_RUN_WORDS, 4)
    f["log_words"] = math.log1p(len(raw))
    return f


@dataclass
class LogisticModel:
    """p = sigmoid(intercept + coef . (x - mean) / scale); a defect when p >= threshold."""

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    threshold: float

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LogisticModel":
        return cls(tuple(d["features"]), np.asarray(d["mean"], float), np.asarray(d["scale"], float),
                   np.asarray(d["coef"], float), float(d["intercept"]), float(d["threshold"]))

    def to_dict(self) -> dict[str, Any]:
        r = lambda a: [round(float(x), 6) for x in a]  # noqa: E731
        return {"features": list(self.features), "mean": r(self.mean), "scale": r(self.scale),
                "coef": r(self.coef), "intercept": round(self.intercept, 6), "threshold": round(self.threshold, 4)}

    def contributions(self, x: dict[str, float]) -> np.ndarray:
        z = (np.fromiter((x[k] for k in self.features), float, len(self.features)) - self.mean) / self.scale
        return self.coef * z

    def prob(self, x: dict[str, float]) -> tuple[float, str]:
        """(p, the features that drove it: the three largest positive contributions)."""
        c = self.contributions(x)
        p = 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, self.intercept + float(c.sum())))))
        top = [i for i in np.argsort(-c)[:3] if c[i] > 0]
        return p, ", ".join(f"{self.features[i]} {x[self.features[i]]:.2f}" for i in top)


class SignalCombiner:
    """Decides `repetition` and `truncated` with the two logistic models; other defects untouched."""

    def __init__(self, models: dict[str, LogisticModel], name: str = "all"):
        self.models = models
        self.name = name

    @classmethod
    def load(cls, fold: str = "all", path: Path | None = None,
             parts: tuple[str, ...] | None = None) -> "SignalCombiner":
        """The models fit on all sources (`fold="all"`, the filter's), or the ones fit without
        source `fold` (the leave-one-source-out bench); `parts`: which defects the models decide
        (default: the artefact's `parts`, the combination the LOSO measurement supports)."""
        data = json.loads((path or WEIGHTS).read_text())
        if fold not in data["folds"]:
            raise ValueError(f"{path or WEIGHTS} has no fold {fold!r}; one of {sorted(data['folds'])}. "
                             "Refit with `python bench/truth_loso_learned.py --write`.")
        use = tuple(parts if parts is not None else data.get("parts", data["folds"][fold]))
        return cls({k: LogisticModel.from_dict(m) for k, m in data["folds"][fold].items() if k in use}, fold)

    def apply(self, ts: TextSignals, turns: list[str]) -> None:
        """Replace the rules' repetition and truncation verdicts in `ts` by the models' (values
        `p_repetition`, `p_truncated` stored; reasons name the driving features)."""
        if not turns:
            return
        d = ts.defects
        if "repetition" in self.models:
            p, why = self.models["repetition"].prob(loop_features(ts.values, turns))
            ts.values["p_repetition"] = p
            self._set(d, "repetition", p, self.models["repetition"].threshold,
                      f"learned loop score {p:.2f} >= {self.models['repetition'].threshold:.2f} ({why})"
                      + (f"; rules: {d['repetition']}" if "repetition" in d else ""))
            self._follow_loop_verdict(ts)
        if "truncated" in self.models:
            m = self.models["truncated"]
            p, why = m.prob(truncation_features(turns[-1], ts.line_cut, ts.block_cut))
            ts.values["p_truncated"] = p
            if "empty" in d or "repetition" in d:  # a loop runs to the limit: its end is no second defect
                p = 0.0
            self._set(d, "truncated", p, m.threshold, f"final answer looks cut off: learned score {p:.2f} >= "
                      f"{m.threshold:.2f} ({why}); line rules: {ts.line_cut or 'no cut'}")

    @staticmethod
    def _follow_loop_verdict(ts: TextSignals) -> None:
        """The rules drop a cut when they call the answer a loop (a loop runs to the limit: its end
        is no second defect). The model's loop verdict replaces theirs, so the cut follows it: back
        when the model clears a Gopher hit (issue 31, session 4: 5 of Python's 36 missed cuts were
        answers whose repeated phrasing the rules called a loop and the model did not), gone when
        the model finds a loop the rules missed."""
        d = ts.defects
        if "repetition" in d:
            d.pop("truncated", None)
        elif ts.block_cut and "empty" not in d and "truncated" not in d:
            d["truncated"] = f"final answer looks cut off: {ts.block_cut}"

    @staticmethod
    def _set(defects: dict[str, str], code: str, p: float, threshold: float, message: str) -> None:
        if p >= threshold:
            defects[code] = message
        else:
            defects.pop(code, None)
