"""The data pipeline: a plain list of steps over records, shared by training, `--filter-only`
and bench/.

    read -> truth -> split -> emergence        (prepare: training)

Each step is a function `step(state: PipelineState) -> None` that reads and replaces
`state.records` (and writes its stats), dropping records only through `state.rejects.drop`.
`prepare(cfg, rejects)` runs TRAIN_STEPS and returns what the trainer needs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .config import TrainingConfig
from .errors import DataError
from .records import Record, RejectWriter

logger = logging.getLogger(__name__)


@dataclass
class PipelineState:
    cfg: TrainingConfig
    rejects: RejectWriter
    records: list[Record] = field(default_factory=list)
    eval_records: list[Record] = field(default_factory=list)
    curriculum: Any = None  # iceburg.emergence.curriculum.Curriculum
    stats: dict[str, Any] = field(default_factory=dict)
    paths: list[str] | None = None  # what read_step reads (None: data_paths(cfg))


@dataclass
class Prepared:
    """What training needs from the data: the curriculum (train records, weights, order), the
    held-out records, and the per-stage statistics (also written to data_stats.json)."""

    curriculum: Any  # Curriculum
    eval_records: list[Record]
    stats: dict[str, Any]

    @property
    def records_read(self) -> int:
        return int(self.stats.get("load", {}).get("lines", 0))


Step = Callable[[PipelineState], None]


def data_paths(cfg: TrainingConfig) -> list[str]:
    from .data import sample_data_path

    return list(cfg.data_path) or [str(sample_data_path(cfg.model_type))]


def read_step(state: PipelineState) -> None:
    from .data.loader import read_records

    cfg, load_stats = state.cfg, {}
    paths = state.paths or data_paths(cfg)
    state.records = list(read_records(paths, state.rejects, strict=cfg.strict, stats=load_stats))
    for r in state.records:
        r.agent_type = r.agent_type or cfg.model_type.agent
    state.stats["load"] = load_stats
    if not state.records:
        raise DataError(f"--data-path {', '.join(paths)}: no valid records ({load_stats.get('rejected', 0)} "
                        "line(s) rejected; see rejects.jsonl for the reasons)")


def truth_step(state: PipelineState) -> None:
    cfg = state.cfg
    if not cfg.use_truth_filter:
        return
    from .truth.from_config import truth_filter_from

    state.records, tstats = truth_filter_from(cfg).filter(state.records, agent_type=cfg.model_type.agent,
                                                          rejects=state.rejects)
    state.stats["truth_filter"] = tstats.to_dict()
    if not state.records:
        raise DataError("the truth filter removed every record; lower --min-quality-score or check "
                        "rejects.jsonl for the reasons")


def split_step(state: PipelineState) -> None:
    from .data.split import split_eval

    state.records, state.eval_records = split_eval(state.records, state.cfg.eval_fraction, state.cfg.seed)


def emergence_step(state: PipelineState) -> None:
    from .emergence import EmbeddingNoveltyDetector, EmergenceProcessor, plain_curriculum

    cfg = state.cfg
    if cfg.use_emergence_weighting:
        proc = EmergenceProcessor(detector=EmbeddingNoveltyDetector(dedup_threshold=cfg.semantic_dedup),
                                  rejects=state.rejects)
        scored, estats = proc.process(state.records, agent_type=cfg.model_type.agent)
        state.curriculum = proc.create_curriculum(scored, strategy=cfg.curriculum_strategy)
        state.stats["emergence"] = estats.to_dict()
    else:
        state.curriculum = plain_curriculum(state.records)
    state.stats["curriculum"] = state.curriculum.strategy


TRAIN_STEPS: tuple[Step, ...] = (read_step, truth_step, split_step, emergence_step)


def run_steps(cfg: TrainingConfig, rejects: RejectWriter, steps: tuple[Step, ...],
              paths: list[str] | None = None) -> PipelineState:
    """Run `steps` in order over one state; `paths` replaces the config's data paths (preference
    mining reads its transcripts and answers through the same read step)."""
    state = PipelineState(cfg=cfg, rejects=rejects, paths=paths)
    for step in steps:
        step(state)
        logger.debug("%s: %d records", step.__name__, len(state.records))
    return state


def prepare(cfg: TrainingConfig, rejects: RejectWriter, steps: tuple[Step, ...] = TRAIN_STEPS) -> Prepared:
    """Run the data steps; every drop is in `rejects`, every count in `Prepared.stats`."""
    state = run_steps(cfg, rejects, steps)
    return Prepared(curriculum=state.curriculum, eval_records=state.eval_records, stats=state.stats)


def filter_only(cfg: TrainingConfig) -> dict[str, Any]:
    """`--filter-only`: the read and truth steps, streamed for corpora larger than memory
    (`iceburg.truth.run_filter_only` scores record by record and spools to disk; dedup keeps only
    signatures), written to `<output_dir>/<output_name or 'filtered'>`."""
    from .truth import run_filter_only

    out = Path(cfg.output_dir) / (cfg.output_name or "filtered")
    return run_filter_only(data_paths(cfg), out, cfg)
