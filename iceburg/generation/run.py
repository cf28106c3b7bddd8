"""`generate(settings)`: seeds -> ask -> answer -> keep, over a resumable job folder (docs/emergence.md).

    existing data (read -> truth -> split, as training reads it) -> ranked seeds (seeds.py)
    for item n = 0, 1, ...: seed n mod S -> teacher writes a new prompt (ask.py) -> prompt dedup
        -> teacher answers it -> truth filter, held-out leak check, dedup (keep.py)
    until `budget` records are kept or `max_items` items were tried -> emergence scores -> files

Every teacher call goes through the job log (job.py) first: an item whose call is in the log is
never asked again, so a killed job restarted with the same command continues where it stopped and
reaches the same decisions (the keep stage replays the log in order).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import SYSTEM_PROMPTS, ModelType, TrainingConfig
from ..errors import ConfigError
from ..records import Reason, Record, RejectWriter
from . import ask as asking
from .job import JobFolder, write_atomic
from .keep import Curator, NearIndex, drop, prompt_record, score_emergence
from .seeds import Seed, rank_seeds
from .teacher import TeacherClient, TeacherSettings

logger = logging.getLogger(__name__)

STRATEGIES = ("curiosity", "random")
# Codes of truth rejects that say the topic was answered badly (a seed for the `rejected` signal);
# duplicates say nothing about a missing topic.
_DUPLICATE_CODES = {"exact_duplicate", "near_duplicate", "duplicate_group_lost"}


@dataclass
class GenerateSettings:
    model_type: str
    teacher: str
    budget: int
    job_dir: str
    teacher_model: str | None = None
    data_path: list[str] = field(default_factory=list)
    heldout: list[str] = field(default_factory=list)  # extra held-out sets: files or run folders
    strategy: str = "curiosity"
    student: str | None = "iceburg-tiny"  # None: no instruction-following difficulty signal
    max_items: int | None = None  # items tried at most (default 4 x budget)
    ask_max_tokens: int = 96
    answer_max_tokens: int = 384
    temperature: float = 0.8
    seed: int = 42  # the split seed: iceburg-train's default, so the held-out set is the one training keeps out
    eval_fraction: float = 0.1
    min_quality_score: float = 0.7
    timeout_s: float = 120.0
    retries: int = 3
    rate_limit: float = 0.0
    threads: int | None = None
    # tools sent with the answer request of a seed that had tools: auto (the teacher decides), none,
    # required, or a function name the teacher must call (docs/emergence.md "Tools")
    tool_choice: str = "auto"

    def problems(self) -> list[str]:
        p = []
        if self.budget < 1:
            p.append(f"--budget {self.budget}: must be >= 1 (records to keep)")
        if self.strategy not in STRATEGIES:
            p.append(f"--seed-strategy {self.strategy!r}: choose {' or '.join(STRATEGIES)}")
        if not self.tool_choice.strip():
            p.append("--tool-choice '': auto, none, required, or a function name")
        if self.max_items is not None and self.max_items < 1:
            p.append(f"--max-items {self.max_items}: must be >= 1")
        if not self.teacher.startswith(("http://", "https://")):
            p.append(f"--teacher {self.teacher!r}: an http(s) URL of an OpenAI-compatible endpoint, e.g. "
                     "http://127.0.0.1:8000/v1")
        try:
            ModelType.parse(self.model_type)
        except ValueError:
            p.append(f"--model-type {self.model_type!r}: one of {', '.join(m.short for m in ModelType)}")
        return p

    def job_key(self) -> dict[str, Any]:
        """The settings that decide what is asked: a restart must match them (job.json). The URL is not
        one of them (a local server may come back on another port); each logged call names its URL."""
        keep = ("model_type", "teacher_model", "data_path", "strategy", "student", "ask_max_tokens",
                "answer_max_tokens", "temperature", "seed", "eval_fraction", "tool_choice")
        key = {k: v for k, v in asdict(self).items() if k in keep}
        if key["tool_choice"] == "auto":  # the default is left out: jobs started before the flag still resume
            del key["tool_choice"]
        return key


@dataclass
class ExistingData:
    train: list[Record]
    heldout: list[Record]
    rejected: list[Record]


def read_existing(s: GenerateSettings, job: JobFolder) -> ExistingData:
    """The curated data as training reads it (read -> truth -> split, same seed and fraction), its
    truth rejects, and every held-out set (the split's and --heldout's)."""
    from ..pipeline import read_step, run_steps, split_step, truth_step

    cfg = TrainingConfig(model_type=ModelType.parse(s.model_type), data_path=list(s.data_path), seed=s.seed,
                         eval_fraction=s.eval_fraction, min_quality_score=s.min_quality_score)
    path = job.root / "data_rejects.jsonl"
    with RejectWriter(path) as rejects:
        state = run_steps(cfg, rejects, (read_step, truth_step, split_step))
    rejected = [_row_record(r) for r in job.read_jsonl(path)
                if r.get("stage") == "truth" and r.get("record") and not set(r.get("codes", ())) & _DUPLICATE_CODES]
    heldout = list(state.eval_records)
    for spec in s.heldout:
        heldout += read_heldout_set(Path(spec))
    return ExistingData(state.records, heldout, rejected)


def _row_record(row: dict[str, Any]) -> Record:
    from ..data.loader import normalise

    return normalise(row["record"], row.get("source", ""), row.get("line", 0))


def read_heldout_set(path: Path) -> list[Record]:
    """A run folder (its heldout.jsonl), a heldout.jsonl (rows `{"record": ...}`) or any data file."""
    from ..data.loader import read_records
    from ..run_folder import RunFolder

    if path.is_dir() and RunFolder(path).heldout.is_file():
        path = RunFolder(path).heldout
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()] if path.is_file() else []
    if rows and all(isinstance(r, dict) and "record" in r for r in rows):
        return [_row_record({**r, "source": r.get("source") or str(path)}) for r in rows]
    return list(read_records([str(path)], RejectWriter(None)))


def load_seeds(s: GenerateSettings, job: JobFolder, data: ExistingData, embedder: Any) -> list[Seed]:
    if job.seeds.is_file():  # computed once: a restart asks about the same seeds in the same order
        return [Seed(**row) for row in job.read_jsonl(job.seeds)]
    seeds = rank_seeds(data.train, data.rejected, strategy=s.strategy, embedder=embedder, student=s.student,
                       seed=s.seed, threads=s.threads)
    job.write_jsonl(job.seeds, (x.to_json() for x in seeds))
    return seeds


class _Calls:
    """Teacher calls through the job log: a finished key is read back, never asked again."""

    def __init__(self, job: JobFolder, client: TeacherClient):
        self.job, self.client = job, client
        self.done = job.finished()
        self.made = 0

    def get(self, key: str, item: int, seed_id: str, request: dict[str, Any]) -> dict[str, Any]:
        if key in self.done:
            return self.done[key]["response"]
        started = time.perf_counter()
        response = self.client.complete(request)
        entry = {"key": key, "item": item, "seed_id": seed_id, "teacher": self.client.settings.url,
                 "request": request, "response": response, "latency_s": round(time.perf_counter() - started, 3),
                 "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.job.append(entry)
        self.done[key] = entry
        self.made += 1
        return response


@dataclass
class _Loop:
    s: GenerateSettings
    system: str
    seeds: list[Seed]
    calls: _Calls
    prompts: NearIndex
    curator: Curator
    rejects: RejectWriter
    tried: int = 0

    def item(self, n: int) -> None:
        """One item: a new prompt near seed n mod S; if it is new, its answer; then the keep stage."""
        s, seed = self.s, self.seeds[n % len(self.seeds)]
        sampling = asking.item_seed(s.seed, n)
        req = asking.ask_request(seed, self.system, max_tokens=s.ask_max_tokens, temperature=s.temperature,
                                 sampling_seed=sampling)
        prompt = asking.parse_prompt(self.calls.get(f"ask:{n}", n, seed.id, req)["text"])
        meta = {"source": "generated", "seed_id": seed.id, "seed_source": seed.source, "seed_origin": seed.origin,
                "strategy": s.strategy, "teacher": s.teacher, "item": n}
        asked = Record(messages=[{"role": "system", "content": self.system}, {"role": "user", "content": prompt}],
                       source="generated", line=n, metadata=meta, agent_type=ModelType.parse(s.model_type).agent)
        why = self._prompt_problem(asked, prompt)
        if why is not None:
            drop(self.rejects, "generate.prompt", asked, [why])
            return
        req = asking.answer_request(prompt, self.system, max_tokens=s.answer_max_tokens, temperature=s.temperature,
                                    sampling_seed=sampling, tools=seed.tools, tool_choice=s.tool_choice)
        ans = self.calls.get(f"answer:{n}", n, seed.id, req)
        meta = {**meta, "teacher_model": ans.get("model"), "finish_reason": ans.get("finish_reason")}
        record, reasons = answer_record(asked, ans, seed.tools, meta)
        reasons = reasons or self.curator.check(record)
        if reasons:
            drop(self.rejects, "generate.keep", record, reasons)

    def _prompt_problem(self, asked: Record, prompt: str) -> Reason | None:
        """Before answering: an empty prompt, or one the data (training, held-out, rejected) or an
        earlier generated prompt already asks."""
        if len(prompt.split()) < 3:
            return Reason("empty", f"the teacher wrote no usable prompt ({prompt!r})")
        hit = self.prompts.match(prompt_record(asked.messages))
        if hit is None:
            self.prompts.add([prompt_record(asked.messages)], "generated")
            return None
        what = f"{hit.kind.replace('_', ' ')} (similarity {hit.similarity:.2f}) of the prompt of {hit.label}"
        if hit.label.startswith("heldout:"):
            return Reason("heldout_duplicate", what)
        return Reason("exact_duplicate" if hit.kind == "exact_duplicate" else "near_duplicate", what)


def answer_record(asked: Record, ans: dict[str, Any], tools: list[dict[str, Any]] | None, meta: dict[str, Any]
                  ) -> tuple[Record, list[Reason]]:
    """The transcript of one answer. A text answer is the assistant's turn; an answer that calls tools
    ends with the assistant turn that carries its calls, read by the loader (`data/loader.normalise`:
    arguments parsed from their JSON text, every call checked against the seed's tools) into the
    shape logged tool-call turns have. Nothing follows the call: the tools are not run, and a tool
    result is never invented. A call the loader refuses is returned with its reason."""
    from ..data.loader import InvalidLine, normalise

    turn: dict[str, Any] = {"role": "assistant", "content": ans["text"]}
    plain = Record(messages=[*asked.messages, turn], source="generated", line=asked.line, agent_type=asked.agent_type,
                   metadata=meta, tools=tools)
    if not ans.get("tool_calls"):
        return plain, []
    turn["tool_calls"] = ans["tool_calls"]
    meta = {**meta, "answer": "tool_call"}
    plain.metadata = meta
    if not tools:
        return plain, [Reason("invalid_tool_call", "the teacher called a tool, but none was sent "
                                                   "(the seed has no tools)")]
    try:
        return normalise({"messages": plain.messages, "tools": tools, "metadata": meta,
                          "agent_type": asked.agent_type}, "generated", asked.line), []
    except InvalidLine as exc:
        return plain, [Reason(exc.code, f"the teacher's tool call: {exc}")]


def generate(s: GenerateSettings) -> dict[str, Any]:
    """Run (or resume) the job; writes generated.jsonl, rejects.jsonl, summary.json; returns the summary."""
    from ..emergence import SentenceEmbedder
    from ..truth.from_config import truth_filter_from

    if s.problems():
        raise ConfigError(s.problems())
    job = JobFolder(s.job_dir)
    resumed = job.open(s.job_key())
    data = read_existing(s, job)
    embedder = SentenceEmbedder()
    seeds = load_seeds(s, job, data, embedder)
    agent = ModelType.parse(s.model_type).agent
    heldout, training = NearIndex(embedder), NearIndex(embedder)
    heldout.add(data.heldout, "heldout")
    training.add(data.train, "training")
    prompts = NearIndex(embedder)
    prompts.add([prompt_record(r.messages, r.source, r.line) for r in data.heldout], "heldout")
    prompts.add([prompt_record(r.messages, r.source, r.line) for r in data.train + data.rejected], "data")
    curator = Curator(truth_filter_from(s), agent, heldout, training, NearIndex(embedder))
    client = TeacherClient(TeacherSettings(s.teacher, s.teacher_model, s.timeout_s, s.retries, s.rate_limit))
    with RejectWriter(job.rejects) as rejects:
        loop = _Loop(s, SYSTEM_PROMPTS[ModelType.parse(s.model_type)], seeds, _Calls(job, client), prompts,
                     curator, rejects)
        limit = s.max_items or 4 * s.budget
        while len(curator.kept) < s.budget and loop.tried < limit:
            loop.item(loop.tried)
            loop.tried += 1
            logger.info("item %d: %d/%d kept", loop.tried, len(curator.kept), s.budget)
        emergence = score_emergence(curator.kept, data.train, agent)
        summary = _summary(s, job, loop, rejects, emergence, resumed, data)
    job.write_jsonl(job.generated, (r.to_json() for r in curator.kept))
    write_atomic(job.summary, json.dumps(summary, indent=2))
    return summary


def _summary(s: GenerateSettings, job: JobFolder, loop: _Loop, rejects: RejectWriter, emergence: dict,
             resumed: bool, data: ExistingData) -> dict[str, Any]:
    kept = loop.curator.kept
    return {"job": str(job.root), "resumed": resumed, "budget": s.budget, "kept": len(kept), "items": loop.tried,
            "teacher": s.teacher, "teacher_calls_this_run": loop.calls.made,
            "teacher_calls_logged": len(loop.calls.done), "rejects": dict(sorted(rejects.counts.items())),
            "seeds": len(loop.seeds), "seed_strategy": s.strategy, "existing": {"train": len(data.train),
            "heldout": len(data.heldout), "rejected": len(data.rejected)},
            "emergence": {k: emergence.get(k) for k in ("novel_count", "transitional_count", "familiar_count",
                                                        "baseline_count", "average_emergence")},
            "generated": str(job.generated)}
