"""Verified patterns: the `TruthSystem` protocol (the seed's InstantTruthSystem integration).

A truth system answers `get_instant_truth(query) -> InstantTruth | None`: which known-verified or
known-contradicted statements the text matches, and how much that should move its score.
`TruthFilter` asks it about every record's assistant text; verified matches raise the score and
contradicted ones lower it, and the matched patterns are stored on the record as the explanation.

`PatternTruthSystem` is the default, backed by a user file. One pattern per line:

    # comments and blank lines are ignored
    verified      0.10  the speed of light in vacuum is 299,792,458 m/s
    contradicted  0.40  re:vaccines?\\s+cause\\s+autism

Columns: verdict (`verified` or `contradicted`), weight in (0, 1], pattern. A plain pattern matches
case-insensitively as a phrase (whitespace-normalised); `re:` starts a Python regular expression
(case-insensitive). Any other object with a `get_instant_truth` method can be plugged in instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..errors import DataError

VERDICTS = ("verified", "contradicted")


@dataclass
class InstantTruth:
    """What a truth system knows about a text."""

    verified: list[str] = field(default_factory=list)  # labels of matched verified patterns
    contradicted: list[str] = field(default_factory=list)
    adjustment: float = 0.0  # added to the computed score (positive = confirmed content)


@runtime_checkable
class TruthSystem(Protocol):
    def get_instant_truth(self, query: str) -> InstantTruth | None: ...


@dataclass
class TruthPattern:
    verdict: str
    weight: float
    label: str
    regex: re.Pattern[str]


class PatternTruthSystem:
    """Truth system over a pattern file (format in the module docstring)."""

    def __init__(self, patterns: list[TruthPattern], max_boost: float = 0.15):
        self.patterns = patterns
        # Verified matches can lift a score by at most 0.15: enough to move a STANDARD answer to
        # HIGH_QUALITY, never enough to rescue a defective one (defects reject regardless).
        self.max_boost = max_boost

    @classmethod
    def from_file(cls, path: str | Path) -> "PatternTruthSystem":
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise DataError(f"truth patterns {path}: cannot read ({e.strerror})") from e
        return cls([p for i, ln in enumerate(lines, 1) if (p := parse_pattern_line(ln, path, i))])

    def get_instant_truth(self, query: str) -> InstantTruth | None:
        text = " ".join(query.split())
        out = InstantTruth()
        boost = 0.0
        for p in self.patterns:
            if p.regex.search(text):
                if p.verdict == "verified":
                    out.verified.append(p.label)
                    boost += p.weight
                else:
                    out.contradicted.append(p.label)
                    out.adjustment -= p.weight
        if not out.verified and not out.contradicted:
            return None
        out.adjustment += min(boost, self.max_boost)
        return out


def parse_pattern_line(line: str, path: Path | str = "<patterns>", lineno: int = 0) -> TruthPattern | None:
    s = line.strip()
    if not s or s.startswith("#"):
        return None
    parts = s.split(None, 2)
    where = f"truth patterns {path}, line {lineno}"
    if len(parts) < 3:
        raise DataError(f"{where}: expected '<verified|contradicted> <weight> <pattern>', got {s!r}")
    verdict, weight_s, pat = parts
    if verdict.lower() not in VERDICTS:
        raise DataError(f"{where}: verdict must be 'verified' or 'contradicted', got {verdict!r}")
    try:
        weight = float(weight_s)
    except ValueError:
        raise DataError(f"{where}: weight must be a number in (0, 1], got {weight_s!r}") from None
    if not 0 < weight <= 1:
        raise DataError(f"{where}: weight must be in (0, 1], got {weight}")
    if pat.startswith("re:"):
        try:
            rx = re.compile(pat[3:], re.I)
        except re.error as e:
            raise DataError(f"{where}: invalid regular expression {pat[3:]!r}: {e}") from None
    else:
        words = [re.escape(w) for w in pat.split()]
        rx = re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", re.I)
    return TruthPattern(verdict=verdict.lower(), weight=weight, label=pat, regex=rx)
