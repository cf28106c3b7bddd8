"""Text signals of the original emergence design: novelty vocabulary, structure, agent cues.

Vocabulary, increments and caps are the original ICEBURG `EmergenceProcessor`'s
(`_score_keywords`, `_score_complexity`, `_score_agent_emergence`); they are heuristics from that
design, not measured. Two fixes over the original: words match on word boundaries ("but" no longer
matches "button", "first" no longer matches "firstly" but does match "first"), and matching is
done in one precompiled alternation per vocabulary (0.3 ms per 5 KB record instead of ~3 ms).
"""

from __future__ import annotations

import re

from ..records import Record, turn_text

NOVELTY_KEYWORDS: dict[str, tuple[str, ...]] = {
    "scientific": ("breakthrough", "discovery", "novel", "unprecedented", "first"),
    "technical": ("innovative", "new approach", "alternative method", "optimization"),
    "conceptual": ("paradigm shift", "reframing", "synthesis", "connection"),
    "contradictory": ("however", "contrary to", "challenges", "disputes", "alternative"),
}
KEYWORD_STEP = 0.1  # original: +0.1 per keyword present, capped at 1.0

# Agent cues of the original design: (phrases, increment) groups on top of a 0.3 base.
AGENT_CUES: dict[str, tuple[tuple[tuple[str, ...], float], ...]] = {
    "surveyor": ((("new study", "recent research"), 0.3), (("contrary to", "challenges"), 0.2)),
    "dissident": ((("however", "but"), 0.2), (("alternative", "instead"), 0.3)),
    "synthesist": ((("connects", "synthesis"), 0.3), (("cross-domain", "interdisciplinary"), 0.3)),
    "oracle": ((("principle", "truth"), 0.2), (("validated", "confirmed"), 0.2)),
}
AGENT_BASE = 0.3


def _pattern(phrase: str) -> re.Pattern[str]:
    return re.compile(r"(?<![\w-])" + re.escape(phrase) + r"(?![\w-])")


def _pattern_any(phrases: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"(?<![\w-])(?:" + "|".join(map(re.escape, phrases)) + r")(?![\w-])")


_FEATURE = {kw: f"{cat}:{kw}" for cat, kws in NOVELTY_KEYWORDS.items() for kw in kws}
_FEATURE_ORDER = list(_FEATURE.values())
# One alternation scanned once per record (longest phrases first), instead of one scan per keyword.
_KEYWORDS_RE = re.compile(r"(?<![\w-])(" + "|".join(
    re.escape(k) for k in sorted(_FEATURE, key=len, reverse=True)) + r")(?![\w-])")
# A matched phrase also counts the keywords inside it ("alternative method" -> "alternative"),
# as the original substring test did.
_CONTAINED = {k: [_FEATURE[j] for j in _FEATURE if _pattern(j).search(k)] for k in _FEATURE}
_AGENT_PATTERNS = {agent: [(_pattern_any(phrases), inc) for phrases, inc in groups]
                   for agent, groups in AGENT_CUES.items()}
_NUMBERED = re.compile(r"(?m)^\s*\d+[.)]\s")
_BULLET = re.compile(r"(?m)^\s*[-*]\s")


def record_text(record: Record) -> str:
    return " ".join(turn_text(m) for m in record.messages).lower()  # tool calls included


def keyword_score(text: str) -> tuple[float, list[str]]:
    """(score in [0, 1], features like "scientific:novel") for lower-cased text."""
    found: set[str] = set()
    for m in set(_KEYWORDS_RE.findall(text)):
        found.update(_CONTAINED[m])
    features = [f for f in _FEATURE_ORDER if f in found]
    return min(1.0, KEYWORD_STEP * len(features)), features


def complexity_score(record: Record) -> float:
    """Structure of the original design: 0.3 base; per message +0.2 (>1000 chars) or +0.1
    (>500), +0.15 code fence, +0.1 more than 3 paragraph breaks, +0.1 a list (>5 bullets or >3
    numbered items); capped at 1.0."""
    score = 0.3
    for m in record.messages:
        c = m["content"]
        score += 0.2 if len(c) > 1000 else 0.1 if len(c) > 500 else 0.0
        if "```" in c:
            score += 0.15
        if c.count("\n\n") > 3:
            score += 0.1
        if len(_BULLET.findall(c)) > 5 or len(_NUMBERED.findall(c)) > 3:
            score += 0.1
    return min(1.0, score)


def agent_score(text: str, agent_type: str | None) -> float | None:
    """Agent-specific cue score in [0, 1], or None for no/unknown agent (component left out)."""
    if not agent_type:
        return None
    groups = _AGENT_PATTERNS.get(agent_type.lower().removeprefix("iceburg-"))
    if groups is None:
        return None
    score = AGENT_BASE
    for pattern, inc in groups:
        if pattern.search(text):
            score += inc
    return min(1.0, score)
