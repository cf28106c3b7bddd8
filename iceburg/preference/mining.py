"""Mine preference pairs from ordinary transcripts with the truth filter's own verdicts.

Answers are grouped by their normalised prompt (the conversation before the last assistant turn:
user and earlier assistant turns, case-folded, whitespace collapsed; the system prompt is left out
so answers given under different agent prompts still compete). In each group:

- chosen   = the answer with the highest truth-filter quality among those the filter keeps
             (no defect, quality >= min_quality_score); a group with no such answer gives no pair;
- rejected = every answer the filter rejected (refusal, repetition, truncated, low quality, ...)
             and, when none was rejected, the lowest-scored kept answer; each only when
             quality(chosen) - quality(rejected) >= margin.

Margin 0.1 (`DEFAULT_MARGIN`): the width of one category band of the truth filter (STANDARD 0.7,
HIGH_QUALITY 0.8, VERIFIED 0.9, `truth/filter.py`), i.e. half the whole span the rubric can move a
clean answer (0.20 x rubric). Two answers closer than that sit in the same or adjacent band and
their order rests on rubric keyword evidence alone; the DPO literature finds such small-gap pairs
add noise (UltraFeedback binarisation drops ties; Argilla's cleaned DPO sets keep only pairs with
a clear score gap). Defect answers are capped at 0.3 by the filter, so they always clear it
against a kept answer (>= 0.7).

Answers identical to the chosen one are skipped (no signal). Every pair keeps both scores and the
rejected side's reasons; `MiningStats.pairs_by_reason` counts pairs by the first reason's reject code
(`iceburg.records.REJECT_CODES`; `lower_quality` for a kept answer that scored lower).
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..records import Reason, Record
from ..truth.filter import TruthFilter
from .data import PreferencePair

logger = logging.getLogger(__name__)

DEFAULT_MARGIN = 0.1
LOWER_QUALITY = "lower_quality"  # reason class of a kept answer that scored clearly lower

_WS = re.compile(r"\s+")


@dataclass
class MiningStats:
    records: int = 0
    prompts: int = 0  # distinct normalised prompts
    single_answer_prompts: int = 0
    no_good_answer_prompts: int = 0  # every answer rejected by the truth filter
    below_margin: int = 0  # candidate rejected sides too close to the chosen answer
    identical_answers: int = 0
    pairs: int = 0
    margin: float = DEFAULT_MARGIN
    pairs_by_reason: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def prompt_key(messages: list[dict[str, str]]) -> str:
    """The normalised prompt of a transcript: the turns before its last assistant turn, without
    the system prompt, case-folded and whitespace-collapsed."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    turns = [f"{m['role']}:{_WS.sub(' ', m['content']).strip().casefold()}"
             for m in messages[:last] if m["role"] != "system"]
    return "\n".join(turns)


def _split(record: Record) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    last = max(i for i, m in enumerate(record.messages) if m["role"] == "assistant")
    return record.messages[:last], record.messages[last:last + 1]


def reason_classes(reasons: list[Reason]) -> list[str]:
    """The reject codes of the rejected side's reasons (`lower_quality` when it has none)."""
    return [r.code for r in reasons] or [LOWER_QUALITY]


def mine_preferences(records: Iterable[Record], truth: TruthFilter, *, margin: float = DEFAULT_MARGIN,
                     agent_type: str | None = None) -> tuple[list[PreferencePair], MiningStats]:
    """Score every record with `truth` (rejected ones included) and build pairs as described above."""
    if not 0 <= margin <= 1:
        raise ValueError(f"margin must be in [0, 1], got {margin}")
    stats = MiningStats(margin=margin)
    groups: dict[str, list[tuple[Record, float, list[Reason]]]] = defaultdict(list)
    for r in records:
        stats.records += 1
        a = truth.assess(r, agent_type)
        groups[prompt_key(r.messages)].append((r, a.quality, a.reasons))
    stats.prompts = len(groups)
    pairs: list[PreferencePair] = []
    for members in groups.values():
        if len(members) < 2:
            stats.single_answer_prompts += 1
            continue
        good = [m for m in members if not m[2]]
        if not good:
            stats.no_good_answer_prompts += 1
            continue
        best = max(good, key=lambda m: m[1])  # first of equals: input order decides, deterministic
        prompt, chosen = _split(best[0])
        others = [m for m in good if m[0] is not best[0]]
        candidates = [m for m in members if m[2]] or ([min(others, key=lambda m: m[1])] if others else [])
        for rec, q, reasons in candidates:
            _, rejected = _split(rec)
            if rejected[0]["content"].strip() == chosen[0]["content"].strip():
                stats.identical_answers += 1
                continue
            if best[1] - q < margin:
                stats.below_margin += 1
                continue
            classes = reason_classes(reasons)
            stats.pairs_by_reason[classes[0]] = stats.pairs_by_reason.get(classes[0], 0) + 1
            pairs.append(PreferencePair(
                prompt=prompt, chosen=chosen, rejected=rejected, source=best[0].source, line=best[0].line,
                chosen_score=best[1], rejected_score=q, reasons=[r.message for r in reasons] or [
                    f"{LOWER_QUALITY}: quality {q:.2f} vs {best[1]:.2f} (margin >= {margin:.2f})"],
                agent_type=best[0].agent_type or agent_type,
                metadata={"chosen_from": best[0].id, "rejected_from": rec.id, "reason_class": classes[0]}))
    stats.pairs = len(pairs)
    logger.info("mined %d preference pairs from %d records (%d prompts): %s", stats.pairs, stats.records,
                stats.prompts, stats.pairs_by_reason)
    return pairs, stats
