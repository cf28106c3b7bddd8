"""The curation stages as datatrove pipeline steps (`datatrove.pipeline.base.PipelineStep`).

Each step does one stage for one task (`rank` of `world_size`) and exchanges files with the
other stages through a shared work folder, so any datatrove executor (local, Slurm, Ray) can run
it. The shape is datatrove's own MinHash dedup chain (signature -> buckets -> cluster -> filter):
per-shard work, one global decision, per-shard application of it.

    TruthScoreStep     N tasks  read + score this task's files; spool the records that pass,
                                write their dedup signatures; load/truth rejects
    DedupResolveStep   1 task   iceburg's `Deduplicator.resolve` over ALL signatures, in the
                                single-process order -> one table of dropped records
    DedupApplyStep     N tasks  drop the records the table names (dedup rejects), keep the rest;
                                embed the kept records' digests (the costly part of emergence)
    NoveltyStep        1 task   the kNN novelty (and optional semantic dedup) over ALL embeddings
    EmergenceApplyStep N tasks  `EmergenceProcessor.process` on this shard with the global novelty

Every decision is made by iceburg's own code (TruthFilter, Deduplicator, EmbeddingNoveltyDetector,
EmergenceProcessor); these steps only shard, order and hand over. The order of the global stages
is the single-process order (files sorted as `expand_paths` sorts them, then line), which is what
makes the sharded result equal the single-process one (tests/curate).
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from datatrove.pipeline.base import PipelineStep

from ..records import Record, RejectWriter

# Exchange files under the work folder, one set per task rank.
SCORED, SIGS, STATS, REJECTS = "{rank:05d}.scored.jsonl", "{rank:05d}.sig.npz", "{rank:05d}.stats.json", "{rank:05d}.rejects.jsonl"
KEPT, EMB = "{rank:05d}.kept.jsonl", "{rank:05d}.emb.npy"


@dataclass(frozen=True)
class CurateSpec:
    """Everything a step needs, picklable (datatrove copies steps into its worker processes)."""

    files: tuple[str, ...]  # every input file, in the single-process order (expand_paths)
    work: str  # the shared work folder
    agent: str | None  # rubric / agent type (ModelType.agent)
    min_quality_score: float = 0.7
    truth_patterns: str | None = None
    strict: bool = False
    emergence: bool = True
    semantic_dedup: float | None = None
    threads: int = 1  # torch / faiss threads per task (cores / local workers)

    def dir(self, stage: str) -> Path:
        d = Path(self.work) / stage
        d.mkdir(parents=True, exist_ok=True)
        return d

    def truth_filter(self):
        from ..truth.from_config import truth_filter_from

        return truth_filter_from(self, workers=1)

    def shard(self, rank: int, world_size: int) -> list[int]:
        """The file numbers of one task: files are the unit of sharding (datatrove's readers shard
        the same way), round-robin so neighbouring files spread over tasks."""
        return list(range(rank, len(self.files), world_size))


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, default=float), encoding="utf-8")
    tmp.replace(path)


def spool_line(record: Record, file_no: int, extra: dict[str, Any] | None = None) -> str:
    obj = {"f": file_no, "s": record.source, "l": record.line, "r": record.to_json(), **(extra or {})}
    return json.dumps(obj, ensure_ascii=False) + "\n"


def read_spool(path: Path) -> Iterator[tuple[int, Record, dict[str, Any]]]:
    """(file number, record, the rest of the line) for each spooled record, in written order."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            obj = json.loads(line)
            r = obj["r"]
            record = Record(messages=r["messages"], source=obj["s"], line=obj["l"],
                            quality_score=r.get("quality_score"), emergence_score=r.get("emergence_score"),
                            agent_type=r.get("agent_type"), metadata=r.get("metadata", {}),
                            signals=r.get("signals", {}), weight=r.get("weight", 1.0), tools=r.get("tools"))
            yield obj["f"], record, obj


class _CurateStep(PipelineStep):
    type = "iceburg"

    def __init__(self, spec: CurateSpec):
        super().__init__()
        self.spec = spec

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        t0 = time.perf_counter()
        with self.track_time("task"):  # datatrove's own stats.json then shows each step's time
            info = self.stage(rank, world_size) or {}
        info.update(seconds=round(time.perf_counter() - t0, 3), peak_rss_mb=peak_rss_mb(), rank=rank)
        write_json(self.spec.dir(self.stage_name) / f"{rank:05d}.task.json", info)
        return iter(())  # these steps hand over files, not documents

    stage_name = ""

    def stage(self, rank: int, world_size: int) -> dict[str, Any] | None:
        raise NotImplementedError


class TruthScoreStep(_CurateStep):
    """Read this task's files and score every record (iceburg's TruthFilter.score_stream)."""

    name = "truth: read + score"
    stage_name = "truth"

    def stage(self, rank: int, world_size: int) -> dict[str, Any]:
        from ..data.loader import read_records
        from ..truth import TruthFilterStats

        spec, out = self.spec, self.spec.dir("truth")
        tf = spec.truth_filter()
        stats, load_stats = TruthFilterStats(), {}
        file_no = {p: i for i, p in enumerate(spec.files)}
        fs, lines, scores, exact, digests = [], [], [], [], []
        mine = [spec.files[i] for i in self.spec.shard(rank, world_size)]
        with RejectWriter(out / REJECTS.format(rank=rank)) as rejects, \
                open(out / SCORED.format(rank=rank), "w", encoding="utf-8", errors="backslashreplace") as spool:
            records = read_records(mine, rejects, strict=spec.strict, stats=load_stats)
            for record, a, sig in tf.score_stream(records, spec.agent, rejects, stats):
                f = file_no[record.source]
                fs.append(f), lines.append(record.line), scores.append(a.quality), exact.append(sig.exact)
                if sig.digest is not None:
                    digests.append(sig.digest)
                spool.write(spool_line(record, f, {"a": [a.quality, a.category.value, a.details]}))
                self.stat_update("passed")
            counts = dict(rejects.counts)
        num_perm = tf.dedup.config.num_perm
        np.savez(out / SIGS.format(rank=rank), fileno=np.asarray(fs, np.int32), line=np.asarray(lines, np.int64),
                 score=np.asarray(scores, np.float64), exact=np.asarray(exact, dtype="S16"),
                 digest=np.asarray(digests, np.uint32).reshape(-1, num_perm) if digests else np.empty((0, num_perm), np.uint32))
        self.stat_update("lines", value=load_stats.get("lines", 0))
        return {"stats": stats.to_dict(), "load": load_stats, "reject_counts": counts}


def _global_order(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate per-shard arrays and sort them into the single-process order (file, line)."""
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.lexsort((cat["line"], cat["fileno"]))
    return {k: v[order] for k, v in cat.items()}


class DedupResolveStep(_CurateStep):
    """One task: exact + MinHash clusters over every shard's signatures (iceburg's resolve)."""

    name = "dedup: resolve globally"
    stage_name = "dedup"

    def stage(self, rank: int, world_size: int) -> dict[str, Any]:
        spec, src = self.spec, self.spec.dir("truth")
        tf = spec.truth_filter()
        parts = []
        for f in sorted(src.glob("*.sig.npz")):
            with np.load(f) as z:
                parts.append({k: z[k] for k in z.files})
        sig = _global_order(parts) if parts else {}
        store = tf.dedup.store()
        from ..truth.dedup import Signature

        near = tf.dedup.config.near
        for i in range(len(sig.get("fileno", ()))):
            store.add(i, float(sig["score"][i]), Signature(bytes(sig["exact"][i]), sig["digest"][i] if near else None))
        dropped = tf.dedup.resolve(store)
        idx = np.asarray(sorted(dropped), dtype=np.int64)
        of = np.asarray([dropped[i][1] for i in idx], dtype=np.int64)
        table = {"fileno": sig["fileno"][idx] if idx.size else np.empty(0, np.int32),
                 "line": sig["line"][idx] if idx.size else np.empty(0, np.int64),
                 "exact": np.asarray([dropped[i][0] == "exact_duplicate" for i in idx], dtype=bool),
                 "kept_fileno": sig["fileno"][of] if idx.size else np.empty(0, np.int32),
                 "kept_line": sig["line"][of] if idx.size else np.empty(0, np.int64),
                 "kept_quality": sig["score"][of] if idx.size else np.empty(0, np.float64),
                 "similarity": np.asarray([dropped[i][2] for i in idx], dtype=np.float64)}
        np.savez(spec.dir("dedup") / "decisions.npz", **table)
        self.stat_update("dropped", value=len(idx))
        return {"signatures": store.n, "dropped": len(idx)}


_EMBEDDERS: dict[str, Any] = {}  # cache folder -> SentenceEmbedder, per process


class DedupApplyStep(_CurateStep):
    """Apply the global dedup decision to this shard; embed the kept records for novelty."""

    name = "dedup: apply + embed"
    stage_name = "kept"

    def stage(self, rank: int, world_size: int) -> dict[str, Any]:
        from ..truth import Assessment, Category, TruthFilterStats

        spec, out = self.spec, self.spec.dir("kept")
        tf = spec.truth_filter()
        with np.load(spec.dir("dedup") / "decisions.npz") as z:
            t = {k: z[k] for k in z.files}
        drop = {(int(f), int(ln)): i for i, (f, ln) in enumerate(zip(t["fileno"], t["line"]))}
        stats = TruthFilterStats()
        kept: list[Record] = []
        keys: list[tuple[int, int]] = []
        with RejectWriter(out / REJECTS.format(rank=rank)) as rejects, \
                open(out / KEPT.format(rank=rank), "w", encoding="utf-8", errors="backslashreplace") as fh:
            for f, record, obj in read_spool(spec.dir("truth") / SCORED.format(rank=rank)):
                q, cat, details = obj["a"]
                a = Assessment(q, Category(cat), [], details)
                d = drop.get((f, record.line))
                if d is not None:
                    kept_id = f"{spec.files[int(t['kept_fileno'][d])]}:{int(t['kept_line'][d])}"
                    kind = "exact_duplicate" if t["exact"][d] else "near_duplicate"
                    tf.reject_duplicate(record, a, kind, kept_id, float(t["kept_quality"][d]),
                                        float(t["similarity"][d]), rejects, stats)
                    continue
                tf.count_kept(record, a, stats)  # not finished: the merge divides the sum once
                fh.write(spool_line(record, f))
                if spec.emergence:
                    kept.append(record)
                    keys.append((f, record.line))
        if spec.emergence:
            import torch

            from ..emergence import SentenceEmbedder
            from ..emergence.embedding import default_cache_dir

            torch.set_num_threads(spec.threads)
            # one model per worker process, not one per task (~1 GB RSS, seconds to load)
            key = str(default_cache_dir())
            if key not in _EMBEDDERS:
                _EMBEDDERS[key] = SentenceEmbedder()
            embedder = _EMBEDDERS[key]
            emb = embedder.embed_records(kept) if kept else np.empty((0, 384), np.float32)
            np.save(out / EMB.format(rank=rank), np.asarray(emb, np.float32))
            np.save(out / f"{rank:05d}.keys.npy", np.asarray(keys, np.int64).reshape(-1, 2))
        self.stat_update("kept", value=stats.final_output)
        return {"stats": stats.to_dict()}


class _Preembedded:
    """A `SentenceEmbedder` stand-in holding embeddings the shards computed (same digests, same
    model), so `EmbeddingNoveltyDetector.detect` runs its own search over them."""

    def __init__(self, emb: np.ndarray):
        self.emb, self.hits, self.misses = emb, len(emb), 0

    def embed_records(self, records) -> np.ndarray:
        assert len(records) == len(self.emb)
        return self.emb


class NoveltyStep(_CurateStep):
    """One task: kNN novelty and semantic dedup over every kept record (iceburg's detector)."""

    name = "emergence: novelty globally"
    stage_name = "novelty"

    def stage(self, rank: int, world_size: int) -> dict[str, Any]:
        from ..emergence import EmbeddingNoveltyDetector

        spec, src = self.spec, self.spec.dir("kept")
        embs, keys = [], []
        for f in sorted(src.glob("*.emb.npy")):
            embs.append(np.load(f, allow_pickle=False))
            keys.append(np.load(f.with_name(f.name.replace(".emb.", ".keys.")), allow_pickle=False))
        emb = np.concatenate(embs) if embs else np.empty((0, 384), np.float32)
        key = np.concatenate(keys) if keys else np.empty((0, 2), np.int64)
        order = np.lexsort((key[:, 1], key[:, 0]))
        emb, key = emb[order], key[order]
        table: dict[str, np.ndarray] = {"fileno": key[:, 0], "line": key[:, 1]}
        if len(emb):
            det = EmbeddingNoveltyDetector(dedup_threshold=spec.semantic_dedup, embedder=_Preembedded(emb),
                                           threads=spec.threads)
            out = det.detect([None] * len(emb))  # the records are only counted; embeddings are given
            table["novelty"] = out.novelty
            for name, v in out.signals.items():
                table[f"signal.{name}"] = v
            dup = out.duplicate_of or [None] * len(emb)
            table["dup_of"] = np.asarray([d[0] if d else -1 for d in dup], np.int64)
            table["dup_sim"] = np.asarray([d[1] if d else 0.0 for d in dup], np.float64)
        np.savez(spec.dir("novelty") / "novelty.npz", **table)
        return {"records": len(emb)}


class _NoveltyLookup:
    """An `EmergenceDetector` answering from the global novelty table: each shard's records get
    the novelty they have in the whole corpus, and duplicates name their kept record by id."""

    def __init__(self, spec: CurateSpec, table: dict[str, np.ndarray]):
        self.spec, self.t = spec, table
        self.row = {(int(f), int(ln)): i for i, (f, ln) in enumerate(zip(table["fileno"], table["line"]))}
        self.file_no = {p: i for i, p in enumerate(spec.files)}

    def detect(self, records) -> Any:
        from ..emergence import DetectorOutput

        rows = np.asarray([self.row[(self.file_no[r.source], r.line)] for r in records], np.int64)
        t = self.t
        dup = []
        for i in rows:
            j = int(t["dup_of"][i])
            dup.append(None if j < 0 else (f"{self.spec.files[int(t['fileno'][j])]}:{int(t['line'][j])}",
                                           float(t["dup_sim"][i])))
        signals = {k[len("signal."):]: v[rows] for k, v in t.items() if k.startswith("signal.")}
        return DetectorOutput(novelty=t["novelty"][rows], signals=signals, duplicate_of=dup,
                              info={"search": "global (curate NoveltyStep)"})


class EmergenceApplyStep(_CurateStep):
    """Score this shard's kept records with iceburg's EmergenceProcessor and the global novelty."""

    name = "emergence: score"
    stage_name = "emergence"

    def stage(self, rank: int, world_size: int) -> dict[str, Any]:
        from ..emergence import EmergenceProcessor

        spec, out = self.spec, self.spec.dir("emergence")
        with np.load(spec.dir("novelty") / "novelty.npz") as z:
            table = {k: z[k] for k in z.files}
        records = [r for _, r, _ in read_spool(spec.dir("kept") / KEPT.format(rank=rank))]
        with RejectWriter(out / REJECTS.format(rank=rank)) as rejects:
            proc = EmergenceProcessor(detector=_NoveltyLookup(spec, table), rejects=rejects)
            scored, stats = proc.process(records, agent_type=spec.agent)
        file_no = {p: i for i, p in enumerate(spec.files)}
        with open(out / KEPT.format(rank=rank), "w", encoding="utf-8", errors="backslashreplace") as fh:
            for r in scored:
                fh.write(spool_line(r, file_no[r.source]))
        self.stat_update("scored", value=len(scored))
        return {"stats": stats.to_dict()}
