"""`TruthFilter`: score every transcript, explain the score, drop defects and duplicates.

Score of one record (all parts stored in `record.signals`, so any decision can be replayed):

    computed = 0.75 + 0.20 * rubric + truth_adjustment - soft penalties        (clipped to [0, 1])
    quality  = computed                                  when the record has no quality_score
             = w * quality_score + (1 - w) * computed    otherwise (w = provided_weight, 0.5)

- 0.75 is the grade of a clean, well-formed answer with no rubric evidence: it passes the default
  `min_quality_score` 0.7 (the original design's threshold) with a small margin, so ordinary
  answers are kept and the rubric decides how far above STANDARD they rank (max 0.95).
- Soft penalties: answer under 10 words -0.25; each role-structure problem -0.15; boilerplate
  share x 0.2. Two structure problems, or a short answer, take a plain answer below 0.7.
- Defects (empty, repetition, refusal, boilerplate-only, truncated, garbage) cap `computed` at
  0.3 and reject the record whatever its provided score (`reject_defects=True`): a looping or
  refusing answer teaches the model to loop or refuse, however the producer rated it.
- Categories (original design, thresholds configurable): VERIFIED >= 0.9, HIGH_QUALITY >= 0.8,
  STANDARD >= min_quality_score, else LOW_QUALITY; duplicates are DUPLICATE.
Then exact and near duplicates are removed among the survivors (`dedup.Deduplicator`), keeping
the best-scored member of each cluster. Every dropped record goes to the `RejectWriter`.
"""

from __future__ import annotations

import collections
import enum
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from ..data.tool_calls import answer_turns, structure_view
from ..records import Reason, Record, RejectWriter
from . import rubrics, signals
from .combine import SignalCombiner
from .dedup import DedupConfig, Deduplicator, Signature
from .eot import EotBand
from .patterns import TruthSystem

logger = logging.getLogger(__name__)

# Derived from the default threshold 0.7 of the original design (module docstring):
BASE_SCORE = 0.75  # a clean answer with no rubric evidence passes 0.7 with a 0.05 margin
RUBRIC_WEIGHT = 0.20  # the rubric ranks kept answers between 0.75 and 0.95, never rejects
# One role-structure problem costs 0.15: a plain answer (0.75) falls to 0.60 < 0.7 unless its
# rubric is >= 0.5 (0.85 - 0.15 = 0.70); two problems reject any answer (0.95 - 0.30 < 0.7).
STRUCTURE_PENALTY = 0.15
# A defect caps the computed score at 0.3: below any threshold a user sets above 0.3, and with a
# producer score of 1.0 the blended quality is 0.5 x 1.0 + 0.5 x 0.3 = 0.65 < 0.7, so a producer's
# score cannot rescue a loop even with reject_defects=False.
DEFECT_CAP = 0.3
HIST_BINS = 10


class Category(str, enum.Enum):
    VERIFIED = "VERIFIED"
    HIGH_QUALITY = "HIGH_QUALITY"
    STANDARD = "STANDARD"
    LOW_QUALITY = "LOW_QUALITY"
    DUPLICATE = "DUPLICATE"


@dataclass
class TruthFilterStats:
    total_input: int = 0
    invalid_removed: int = 0  # dicts that are not a valid conversation
    verified: int = 0
    high_quality: int = 0
    standard: int = 0
    low_quality_removed: int = 0
    exact_duplicates_removed: int = 0
    near_duplicates_removed: int = 0
    # exact-duplicate groups every member of which was rejected (issue 31: reported, not silent)
    duplicate_groups_lost: int = 0
    final_output: int = 0
    average_quality_score: float = 0.0  # over the kept records
    reasons: dict[str, int] = field(default_factory=dict)  # reject code -> records showing it
    histogram: list[int] = field(default_factory=lambda: [0] * HIST_BINS)  # all scored records
    kept_histogram: list[int] = field(default_factory=lambda: [0] * HIST_BINS)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Assessment:
    quality: float
    category: Category
    reasons: list[Reason]  # defect/low-quality reasons (code + "class: explanation"); empty = kept
    details: dict[str, Any]


def _bin(score: float) -> int:
    return min(int(score * HIST_BINS), HIST_BINS - 1)


class TruthFilter:
    """Quality scoring, agent rubrics, verified patterns and deduplication over records."""

    def __init__(self, min_quality_score: float = 0.7, *, verified_threshold: float = 0.9,
                 high_quality_threshold: float = 0.8, provided_weight: float = 0.5,
                 truth_system: TruthSystem | None = None, dedup: DedupConfig | None = None,
                 reject_defects: bool = True, workers: int = 1, completeness: str = "structure",
                 eot: EotBand | None = None, combine: "str | SignalCombiner | None" = None):
        if not 0 <= min_quality_score <= 1:
            raise ValueError(f"min_quality_score must be in [0, 1], got {min_quality_score}")
        self.min_quality_score = min_quality_score
        self.verified_threshold = verified_threshold
        self.high_quality_threshold = high_quality_threshold
        self.provided_weight = provided_weight
        self.truth_system = truth_system
        self.dedup = Deduplicator(dedup)
        self.reject_defects = reject_defects
        # "structure" (issue 31): markdown-block-aware completeness, doctest/literal blocks as
        # code, tandem code-loop rule (iceburg/truth/structure.py); "lines": issue 13's line rules
        if completeness not in ("lines", "structure"):
            raise ValueError(f"completeness must be 'lines' or 'structure', got {completeness!r}")
        self.completeness = completeness
        # Model-based completeness (issue 31, iceburg/truth/eot.py): consulted only in the band where
        # the line rules see a cut and the last markdown block looks complete. Off by default
        # (bench/truth_eot.py: see docs/truth_filter.md for the measured trade-off).
        if eot is not None and completeness != "structure":
            raise ValueError("eot needs completeness='structure' (its band is where the two rule sets disagree)")
        self.eot = eot
        # How loops and truncation are decided (issue 31): "rules" (each rule its own threshold) or
        # "learned" (two logistic models over the same signals, coefficients checked in as
        # iceburg/truth/combiner.json; `combine.py`), or a SignalCombiner (e.g. one LOSO fold).
        # None (the default): "learned" with the structure rules - at least as good as the rules in
        # every cell but one on every left-out source, at 980-1,009 records/s with 2 workers against
        # the rules' 1,144-1,292 (the trade-off: docs/truth_filter.md, session 4) - and "rules"
        # with issue 13's line rules (the model's features include the last-block review).
        if combine is None:
            combine = "learned" if completeness == "structure" else "rules"
        self.combiner = _combiner(combine, completeness)
        # Scoring processes. Pure-Python scoring runs ~1-3 ms per 2-8 KB transcript on one core
        # (bench/truth_throughput.py), so a pool is what reaches 1,000 records/s on 2 cores.
        self.workers = max(1, int(workers))

    # -- one record ------------------------------------------------------------------------------
    def assess(self, record: Record, agent_type: str | None = None) -> Assessment:
        """Score one record, write its signals (`truth.*`) and category, and say why."""
        turns = answer_turns(record.messages)  # a tool-call-only turn is not an empty answer
        ts = signals.compute(turns, structure=self.completeness == "structure")
        self._second_opinions(record, turns, ts)
        sig = record.signals
        for k, v in ts.values.items():
            sig[f"truth.{k}"] = round(float(v), 4)
        problems, _ = signals.role_structure(structure_view(record.messages))
        sig["truth.structure_problems"] = float(len(problems))
        text = "\n\n".join(turns)
        agent = agent_type or record.agent_type
        rname, rscore, per = rubrics.score_rubric(text, agent, ts.words)
        sig["truth.rubric"] = round(rscore, 4)
        for k, v in per.items():
            sig[f"truth.rubric.{k}"] = round(v, 4)
        adj = 0.0
        details: dict[str, Any] = {"rubric": rname}
        if self.truth_system is not None:
            it = self.truth_system.get_instant_truth(text)
            if it is not None:
                adj = it.adjustment
                details.update(verified_patterns=it.verified, contradicted_patterns=it.contradicted)
        sig["truth.patterns"] = round(adj, 4)

        computed = BASE_SCORE + RUBRIC_WEIGHT * rscore + adj - sum(ts.soft.values())
        computed -= STRUCTURE_PENALTY * len(problems)
        reasons = [Reason(k, f"{k}: {v}") for k, v in ts.defects.items()]
        if reasons:
            computed = min(computed, DEFECT_CAP)
        computed = min(max(computed, 0.0), 1.0)
        sig["truth.computed"] = round(computed, 4)
        if record.quality_score is not None:
            w = self.provided_weight
            quality = w * record.quality_score + (1 - w) * computed
        else:
            quality = computed
        quality = round(min(max(quality, 0.0), 1.0), 4)
        sig["truth.quality"] = quality

        details.update(soft_penalties=ts.soft, structure=problems, provided=record.quality_score,
                       computed=round(computed, 4), quality=quality)
        if details.get("contradicted_patterns"):
            details["note"] = "contradicted patterns: " + "; ".join(details["contradicted_patterns"])
        if reasons and not self.reject_defects:
            reasons = []
        if not reasons and quality < self.min_quality_score:
            why = [f"provided {record.quality_score:.2f}"] if record.quality_score is not None else []
            why.append(f"computed {computed:.2f} = {BASE_SCORE} + {RUBRIC_WEIGHT} x rubric({rname}) "
                       f"{rscore:.2f} {adj:+.2f} patterns - penalties {sum(ts.soft.values()):.2f}"
                       f"{' - structure ' + ', '.join(problems) if problems else ''}")
            reasons = [Reason("low_quality",
                              f"low_quality: score {quality:.2f} < {self.min_quality_score:.2f} ({'; '.join(why)})")]
        category = self.category(quality) if not reasons else Category.LOW_QUALITY
        record.metadata["truth_category"] = category.value
        if reasons:
            _note_reasons(record, reasons)
        return Assessment(quality, category, reasons, details)

    def _second_opinions(self, record: Record, turns: list[str], ts: signals.TextSignals) -> None:
        """The learned combination (loops), then the end-of-turn model (its band), when set."""
        if self.combiner is not None:
            self.combiner.apply(ts, turns)
        if self.eot is not None:
            self._consult_eot(record, turns, ts)

    def _consult_eot(self, record: Record, turns: list[str], ts: signals.TextSignals) -> None:
        """Inside the uncertain band only: the end-of-turn model decides truncation."""
        if not turns or ts.defects:  # already rejected: the model would change nothing
            return
        line_cut = signals.truncation(turns[-1])
        if not self.eot.in_band(turns[-1], line_cut):
            return
        cut, lp = self.eot.judge(record.messages)
        record.signals["truth.eot_logprob"] = round(lp, 4)
        if cut:
            ts.values["truncated"] = 1.0
            ts.defects["truncated"] = (f"final answer looks cut off: end-of-turn log-prob {lp:.2f} < "
                                       f"{self.eot.threshold:.2f} under the model (line rules: {line_cut or 'no cut'}; "
                                       "the last markdown block looked complete)")

    def category(self, quality: float) -> Category:
        if quality >= self.verified_threshold:
            return Category.VERIFIED
        if quality >= self.high_quality_threshold:
            return Category.HIGH_QUALITY
        if quality >= self.min_quality_score:
            return Category.STANDARD
        return Category.LOW_QUALITY

    # -- streams ---------------------------------------------------------------------------------
    def score_one(self, record: Record, agent_type: str | None) -> tuple[Record, Assessment, Signature | None]:
        """Assess one record; its dedup signature only when it passed (rejects need none)."""
        a = self.assess(record, agent_type)
        return record, a, (None if a.reasons else self.dedup.signature(record))

    def score_stream(self, records: Iterable[Record | dict], agent_type: str | None,
                     rejects: RejectWriter | None, stats: TruthFilterStats
                     ) -> Iterator[tuple[Record, Assessment, Signature]]:
        """Yield (record, assessment, dedup signature) for records that pass scoring; write the rest.
        With `workers > 1` the scoring runs in a process pool, in input order."""
        converted = (r for i, item in enumerate(records)
                     if (r := self._as_record(item, i, rejects, stats)) is not None)
        if self.workers > 1:
            scored: Iterable[tuple[Record, Assessment, Signature | None]] = parallel_scores(
                self, converted, agent_type, self.workers)
        else:
            scored = (self.score_one(r, agent_type) for r in converted)
        # Exact keys of the records rejected so far: a rejected record that repeats one is named a
        # duplicate as well (its quality reasons stay first), so a copy is reported as a copy even
        # when both members fail the quality rules and never reach the dedup stage.
        rejected_keys: dict = {}  # exact key -> first rejected record id; (key, "codes") -> its codes
        lost: set[str] = set()  # first members of the lost groups counted
        for record, a, sig in scored:
            stats.histogram[_bin(a.quality)] += 1
            if a.reasons:
                if self.dedup.config.exact:
                    self._name_rejected_copy(record, a, rejected_keys)
                    if a.reasons[-1].code == "duplicate_group_lost" and record.metadata["duplicate_of"] not in lost:
                        lost.add(record.metadata["duplicate_of"])
                        stats.duplicate_groups_lost += 1
                stats.low_quality_removed += 1
                for r in a.reasons:
                    stats.reasons[r.code] = stats.reasons.get(r.code, 0) + 1
                if rejects is not None:
                    rejects.drop("truth", record, a.reasons, a.details)
                continue
            yield record, a, sig  # type: ignore[misc]

    def filter(self, records: Iterable[Record | dict], agent_type: str | None = None,
               rejects: RejectWriter | None = None) -> tuple[list[Record], TruthFilterStats]:
        """Kept records (input order) and the stats; every dropped record goes to `rejects`."""
        stats = TruthFilterStats()
        passed: list[tuple[Record, Assessment]] = []
        store = self.dedup.store()
        for record, a, sig in self.score_stream(records, agent_type, rejects, stats):
            store.add(len(passed), a.quality, sig)
            passed.append((record, a))
        dropped = self.dedup.resolve(store)
        kept: list[Record] = []
        for i, (record, a) in enumerate(passed):
            if i in dropped:
                kind, of, sim = dropped[i]
                other = passed[of][0]
                self.reject_duplicate(record, a, kind, other.id, passed[of][1].quality, sim, rejects, stats)
            else:
                self.count_kept(record, a, stats)
                kept.append(record)
        self.finish(stats)
        logger.info("truth filter: %d in, %d kept, %d low quality, %d exact + %d near duplicates",
                    stats.total_input, stats.final_output, stats.low_quality_removed,
                    stats.exact_duplicates_removed, stats.near_duplicates_removed)
        return kept, stats

    def _name_rejected_copy(self, record: Record, a: Assessment, seen: dict) -> None:
        key = self.dedup.exact_key(record)
        first = seen.setdefault(key, record.id)
        if first == record.id:
            seen[(key, "codes")] = [r.code for r in a.reasons]
        if first != record.id:
            a.reasons.append(Reason("exact_duplicate", f"exact_duplicate: same normalised text as {first} (rejected too)"))
            # issue 31: the group is lost, not silently: every member so far was rejected, so the
            # text is gone from the data; said on the record, counted once per group in the stats
            a.reasons.append(Reason("duplicate_group_lost", f"duplicate_group_lost: every copy of this text was "
                                    f"rejected (first {first}: {', '.join(seen_codes(seen, key))})"))
            record.metadata["duplicate_of"] = first
            _note_reasons(record, a.reasons)

    # -- bookkeeping shared with run_filter_only -------------------------------------------------
    def reject_duplicate(self, record: Record, a: Assessment, kind: str, kept_id: str,
                         kept_quality: float, sim: float, rejects: RejectWriter | None,
                         stats: TruthFilterStats) -> None:
        record.metadata["truth_category"] = Category.DUPLICATE.value
        record.metadata["duplicate_of"] = kept_id
        if kind == "exact_duplicate":
            stats.exact_duplicates_removed += 1
            reason = Reason("exact_duplicate", f"exact_duplicate: same normalised text as {kept_id}")
        else:
            stats.near_duplicates_removed += 1
            reason = Reason("near_duplicate", f"near_duplicate: estimated Jaccard {sim:.2f} >= "
                            f"{self.dedup.config.threshold} (word {self.dedup.config.ngram}-grams) with {kept_id}")
        stats.reasons[reason.code] = stats.reasons.get(reason.code, 0) + 1
        _note_reasons(record, [reason])
        if rejects is not None:
            details = dict(a.details, duplicate_of=kept_id, similarity=sim,
                           kept_quality=kept_quality)
            rejects.drop("dedup", record, [reason], details)

    def count_kept(self, record: Record, a: Assessment, stats: TruthFilterStats) -> None:
        stats.final_output += 1
        stats.average_quality_score += a.quality
        stats.kept_histogram[_bin(a.quality)] += 1
        if a.category is Category.VERIFIED:
            stats.verified += 1
        elif a.category is Category.HIGH_QUALITY:
            stats.high_quality += 1
        else:
            stats.standard += 1

    @staticmethod
    def finish(stats: TruthFilterStats) -> None:
        if stats.final_output:
            stats.average_quality_score = round(stats.average_quality_score / stats.final_output, 4)

    def _as_record(self, item: Record | dict, i: int, rejects: RejectWriter | None,
                   stats: TruthFilterStats) -> Record | None:
        stats.total_input += 1
        from ..data.loader import coerce_record  # the public edge: one adapter for dicts

        record, problem = coerce_record(item, i)
        if record is not None:
            return record
        reason = Reason("invalid_record", f"invalid: {problem}")
        stats.invalid_removed += 1
        stats.reasons[reason.code] = stats.reasons.get(reason.code, 0) + 1
        if rejects is not None:
            rejects.drop("truth", None, [reason], raw=json.dumps(item, default=str)[:20000], line=i + 1)
        return None


def _combiner(combine: "str | SignalCombiner", completeness: str) -> SignalCombiner | None:
    if isinstance(combine, SignalCombiner):
        found = combine
    elif combine in ("rules", "learned"):
        found = SignalCombiner.load() if combine == "learned" else None
    else:
        raise ValueError(f"combine must be 'rules', 'learned' or a SignalCombiner, got {combine!r}")
    if found is not None and completeness != "structure":
        raise ValueError("combine='learned' needs completeness='structure' (its features include the block review)")
    return found


def seen_codes(seen: dict, key: bytes) -> list[str]:
    return [c for c in seen.get((key, "codes"), []) if c != "exact_duplicate"] or ["rejected"]


def _note_reasons(record: Record, reasons: list[Reason]) -> None:
    """The reasons on the record itself (kept in filtered/rejected JSON): messages and codes."""
    record.metadata["truth_reasons"] = [r.message for r in reasons]
    record.metadata["truth_codes"] = [r.code for r in reasons]


# -- process pool ---------------------------------------------------------------------------------
_WORKER_FILTER: TruthFilter | None = None
BATCH = 64  # records per task: large enough to amortise pickling, small enough to keep order cheap


def _init_worker(tf: TruthFilter) -> None:
    global _WORKER_FILTER
    _WORKER_FILTER = tf


def _score_batch(args: tuple[list[Record], str | None]) -> list[tuple[Record, Assessment, Signature | None]]:
    batch, agent_type = args
    assert _WORKER_FILTER is not None
    return [_WORKER_FILTER.score_one(r, agent_type) for r in batch]


def _batches(records: Iterable[Record], agent_type: str | None) -> Iterator[tuple[list[Record], str | None]]:
    batch: list[Record] = []
    for r in records:
        batch.append(r)
        if len(batch) == BATCH:
            yield batch, agent_type
            batch = []
    if batch:
        yield batch, agent_type


def parallel_scores(tf: TruthFilter, records: Iterable[Record], agent_type: str | None,
                    workers: int) -> Iterator[tuple[Record, Assessment, Signature | None]]:
    """Score in `workers` spawned processes (spawn, not fork: the caller may hold torch threads)."""
    import copy
    import multiprocessing as mp

    clone = copy.copy(tf)
    clone.workers = 1
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(clone,)) as pool:
        # Bounded submission from this thread (Pool.imap would drain the whole input into its
        # queue from a helper thread: unbounded memory, and the reader would run off-thread).
        pending: collections.deque = collections.deque()
        for args in _batches(records, agent_type):
            pending.append(pool.apply_async(_score_batch, (args,)))
            if len(pending) >= 2 * workers + 2:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()
