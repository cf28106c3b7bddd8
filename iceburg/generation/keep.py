"""What is kept: each generated transcript goes through the truth filter, dedup against the existing
training data and the held-out sets (no leakage), and emergence scoring, like logged data.

Duplicates are found by the package's own machinery: exact keys and MinHash signatures of
`iceburg.truth.dedup` (word 2-grams, Jaccard >= 0.5 finds edits up to ~15% of words; measured,
docs/truth_filter.md) and the emergence stage's MiniLM embeddings (`SentenceEmbedder`), cosine >=
`EMBED_THRESHOLD`. A record that matches a held-out record is dropped with `heldout_duplicate`
(a generated copy of an evaluation record would make the evaluation measure memory); one that
matches a training record with `exact_duplicate` / `near_duplicate`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..records import Reason, Record, RejectWriter

logger = logging.getLogger(__name__)

# Cosine similarity of MiniLM embeddings at or above which two texts count as the same content.
# 0.9: SemDeDup (Abbas et al. 2023) removes pairs from ~0.9 up on web data; the emergence stage's
# own optional dedup uses a more conservative 0.95 (iceburg/emergence/detector.py).
EMBED_THRESHOLD = 0.9


@dataclass
class Match:
    kind: str  # "exact_duplicate" | "near_duplicate" | "semantic_duplicate"
    label: str  # which set and record it matched ("heldout:file:line")
    similarity: float


@dataclass
class NearIndex:
    """Exact keys, MinHash digests and embeddings of a growing set of records; `match(record)` finds
    the most similar one at or above the thresholds. Linear scans: the sets here are thousands of
    records at most, and one scan is a single numpy comparison."""

    embedder: Any  # iceburg.emergence.embedding.SentenceEmbedder
    embed_threshold: float = EMBED_THRESHOLD
    labels: list[str] = field(default_factory=list)
    _exact: dict[bytes, int] = field(default_factory=dict)
    _digests: list[np.ndarray] = field(default_factory=list)
    _emb: np.ndarray = field(default_factory=lambda: np.zeros((0, 384), dtype=np.float32))

    def __post_init__(self) -> None:
        from ..truth.dedup import Deduplicator

        self._dedup = Deduplicator()

    def add(self, records: Sequence[Record], label: str) -> None:
        if not records:
            return
        for r in records:
            sig = self._dedup.signature(r)
            self._exact.setdefault(sig.exact, len(self.labels))
            self._digests.append(sig.digest)
            self.labels.append(f"{label}:{r.id}")
        self._emb = np.concatenate([self._emb, self.embedder.embed_records(list(records))])

    def match(self, record: Record) -> Match | None:
        if not self.labels:
            return None
        sig = self._dedup.signature(record)
        if sig.exact in self._exact:
            return Match("exact_duplicate", self.labels[self._exact[sig.exact]], 1.0)
        jac = (np.stack(self._digests) == sig.digest).mean(axis=1)
        j = int(np.argmax(jac))
        if jac[j] >= self._dedup.config.threshold:
            return Match("near_duplicate", self.labels[j], round(float(jac[j]), 4))
        cos = self._emb @ self.embedder.embed_records([record])[0]
        j = int(np.argmax(cos))
        if cos[j] >= self.embed_threshold:
            return Match("semantic_duplicate", self.labels[j], round(float(cos[j]), 4))
        return None


def prompt_record(messages: list[dict[str, Any]], source: str = "", line: int = 0) -> Record:
    """The part of a conversation before its first assistant turn, as a record (prompt dedup)."""
    out = []
    for m in messages:
        if m["role"] == "assistant":
            break
        out.append(m)
    return Record(messages=out, source=source, line=line)


# A call answer's own quality is that its calls are valid for its tools. The truth filter's rubric scores
# an answer's prose (sources, hedging, length) and a call has none (it reads as `name {"arg": ...}`,
# "short"), so a valid call enters as a provided score of 1.0, which the filter blends with its computed
# score at its provided weight (TruthFilter.provided_weight, 0.5): the blend iceburg-train's truth step
# computes again when it reads generated.jsonl, so what is kept here is kept there.
CALL_QUALITY = 1.0
_JSON_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "integer": (int,), "number": (int, float),
                                            "boolean": (bool,), "array": (list,), "object": (dict,),
                                            "null": (type(None),)}


def ends_in_call(record: Record) -> bool:
    """The transcript ends with an assistant turn that calls tools (a generated call answer)."""
    answers = [m for m in record.messages if m["role"] == "assistant"]
    return bool(answers and answers[-1].get("tool_calls"))


def call_problems(record: Record) -> list[Reason]:
    """The last turn's calls checked against the called tool's JSON-schema parameters: required
    arguments present (strings not blank), no argument the schema does not list, declared JSON types.
    The loader has already checked that each call names a defined tool and has an object of arguments.
    (The common subset of function schemas; the jsonschema package is not a dependency.)"""
    schemas = {t["function"]["name"]: t["function"].get("parameters") or {} for t in record.tools or []}
    out = []
    for call in record.messages[-1].get("tool_calls", []):
        name, args = call["function"]["name"], call["function"]["arguments"]
        props = schemas.get(name, {}).get("properties") or {}
        for key in schemas.get(name, {}).get("required") or []:
            if key not in args or (isinstance(args[key], str) and not args[key].strip()):
                out.append(Reason("invalid_tool_call", f"call {name}: required argument {key!r} is missing or blank"))
        for key, value in args.items():
            if props and key not in props:
                out.append(Reason("invalid_tool_call", f"call {name}: argument {key!r} is not in its schema"))
                continue
            declared = (props.get(key) or {}).get("type")
            kinds = [declared] if isinstance(declared, str) else list(declared or [])
            ok = not kinds or any(isinstance(value, _JSON_TYPES.get(k, object)) and
                                  not (isinstance(value, bool) and k in ("integer", "number")) for k in kinds)
            if not ok:
                out.append(Reason("invalid_tool_call", f"call {name}: argument {key!r} is not of type {declared}"))
    return out


@dataclass
class Curator:
    """The keep stage for generated transcripts: truth filter -> held-out leak -> training dedup ->
    dedup among the generated. Stateful: `check` in log order gives the same answer on every run."""

    truth: Any  # iceburg.truth.filter.TruthFilter
    agent_type: str | None
    heldout: NearIndex
    training: NearIndex
    generated: NearIndex
    kept: list[Record] = field(default_factory=list)

    def check(self, record: Record) -> list[Reason]:
        """[] when the record is kept (it is then indexed); else the reasons it is dropped."""
        calls = ends_in_call(record)
        if calls:
            problems = call_problems(record)
            if problems:
                return problems
            record.quality_score = CALL_QUALITY
        a = self.truth.assess(record, self.agent_type)
        if a.reasons or a.quality < self.truth.min_quality_score:
            return list(a.reasons) or [Reason("low_quality", f"quality {a.quality:.2f} below "
                                              f"--min-quality-score {self.truth.min_quality_score}")]
        if not calls:
            record.quality_score = a.quality
        hit = self.heldout.match(record)
        if hit is not None:
            return [Reason("heldout_duplicate", f"{hit.kind.replace('_', ' ')} (similarity {hit.similarity:.2f}) "
                           f"of held-out record {hit.label}")]
        for index, where in ((self.training, "training record"), (self.generated, "generated record")):
            hit = index.match(record)
            if hit is not None:
                code = "exact_duplicate" if hit.kind == "exact_duplicate" else "near_duplicate"
                return [Reason(code, f"{hit.kind.replace('_', ' ')} (similarity {hit.similarity:.2f}) of "
                                     f"{where} {hit.label}")]
        self.generated.add([record], "generated")
        self.kept.append(record)
        return []


def score_emergence(kept: list[Record], training: list[Record], agent_type: str | None) -> dict[str, Any]:
    """Emergence scores of the kept records, novelty measured against each other and against the
    existing training data (the detector's reference corpus), as the pipeline scores logged data."""
    from ..emergence import EmbeddingNoveltyDetector, EmergenceProcessor

    if not kept:
        return {}
    k = max(1, min(10, len(kept) - 1))  # the detector's default k=10, fewer when few records
    detector = EmbeddingNoveltyDetector(k=k, reference=training or None)
    scored, stats = EmergenceProcessor(detector=detector).process(kept, agent_type=agent_type)
    return stats.to_dict()


def drop(rejects: RejectWriter, stage: str, record: Record, reasons: list[Reason]) -> None:
    rejects.drop(stage, record, reasons, {k: v for k, v in record.metadata.items() if k.startswith("generate.")})
