"""From a `TrainingConfig` to preference training data: read or mine, check, split.

- `--objective dpo|orpo|kto` with preference files: `read_preferences` (per-line rejects).
- `--mine-preferences` with transcripts: `read_records` -> `mine_preferences` with the run's truth
  filter settings (min quality, patterns).
- No `--data-path`: the bundled samples of the model type (`iceburg/data/sample/preference/`:
  `<type>_mined.jsonl` + `<type>_pairs.jsonl`; for mining, `<type>.jsonl` + `<type>_answers.jsonl`).
- KTO takes pairs too (each pair as a desirable and an undesirable example); DPO / ORPO need pairs.
- Held-out split: by a hash of each item's content and the seed, ranked (the SFT split's rule).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import TrainingConfig
from ..data import SAMPLE_DIR, sample_data_path
from ..errors import DataError
from ..records import RejectWriter
from .data import KTOExample, PreferencePair, read_preferences, unpair
from .mining import mine_preferences

logger = logging.getLogger(__name__)


@dataclass
class PreparedPreferences:
    train: list[PreferencePair] | list[KTOExample]
    eval: list[PreferencePair] | list[KTOExample]
    pairs: list[PreferencePair] = field(default_factory=list)  # mined or read, before unpairing
    stats: dict[str, Any] = field(default_factory=dict)


def default_paths(cfg: TrainingConfig) -> list[Path]:
    short = cfg.model_type.short
    if cfg.mine_preferences:
        return [sample_data_path(cfg.model_type), SAMPLE_DIR / "preference" / f"{short}_answers.jsonl"]
    return [SAMPLE_DIR / "preference" / f"{short}_mined.jsonl", SAMPLE_DIR / "preference" / f"{short}_pairs.jsonl"]


def prepare_preferences(cfg: TrainingConfig, rejects: RejectWriter | None) -> PreparedPreferences:
    paths = cfg.data_path or [str(p) for p in default_paths(cfg)]
    stats: dict[str, Any] = {"objective": cfg.objective, "paths": [str(p) for p in paths]}
    if cfg.mine_preferences:
        from ..data.loader import read_records
        from ..truth import TruthFilter

        truth_system = None
        if cfg.truth_patterns:
            from ..truth import PatternTruthSystem

            truth_system = PatternTruthSystem.from_file(cfg.truth_patterns)
        load: dict[str, int] = {}
        truth = TruthFilter(min_quality_score=cfg.min_quality_score, truth_system=truth_system)
        pairs, mstats = mine_preferences(read_records(paths, rejects, strict=cfg.strict, stats=load), truth,
                                         margin=cfg.preference_margin, agent_type=cfg.model_type.agent)
        items = list(pairs)
        stats.update(load=load, mining=mstats.to_dict())
        if not pairs:
            raise DataError(f"--mine-preferences found no pairs in {', '.join(map(str, paths))}: "
                            f"{mstats.prompts} distinct prompts, {mstats.single_answer_prompts} with one answer, "
                            f"{mstats.no_good_answer_prompts} without an answer the truth filter keeps, "
                            f"{mstats.below_margin} below the margin {mstats.margin}; mining needs several "
                            "answers to the same prompt (or lower --preference-margin)")
    else:
        load: dict[str, int] = {}
        items = list(read_preferences(paths, rejects, strict=cfg.strict, stats=load))
        stats["load"] = load
        if not items:
            raise DataError(f"no preference records in {', '.join(map(str, paths))}: --objective "
                            f"{cfg.objective} needs 'chosen'/'rejected' pairs or KTO 'completion'/'label' lines "
                            "(docs/preference.md), or --mine-preferences to build pairs from transcripts")
    pairs = [x for x in items if isinstance(x, PreferencePair)]
    kto = [x for x in items if isinstance(x, KTOExample)]
    if cfg.objective in ("dpo", "orpo") and kto:
        raise DataError(f"--objective {cfg.objective} needs chosen/rejected pairs, but {len(kto)} line(s) are "
                        f"unpaired KTO examples (first: {kto[0].id}); use --objective kto for labelled answers")
    train_items, eval_items = split_items(pairs if cfg.objective != "kto" else items, cfg.eval_fraction, cfg.seed)
    if cfg.objective == "kto":  # unpair after the split so both halves of a pair stay on one side
        train_items = [k for x in train_items for k in (unpair([x]) if isinstance(x, PreferencePair) else [x])]
        eval_items = [k for x in eval_items for k in (unpair([x]) if isinstance(x, PreferencePair) else [x])]
    stats.update(pairs=len(pairs), kto_examples=len(kto), train=len(train_items), eval=len(eval_items))
    return PreparedPreferences(train_items, eval_items, pairs, stats)


def _bucket(item: PreferencePair | KTOExample, seed: int) -> str:
    payload = json.dumps(item.to_json(), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(f"{seed}:{payload}".encode()).hexdigest()


def split_items(items: list, fraction: float, seed: int) -> tuple[list, list]:
    """The round(fraction x n) items with the lowest content hash are held out (at least one when
    there are >= 10), as the SFT split does: stable when items are added or reordered."""
    if fraction <= 0 or len(items) < 2:
        return items, []
    n_eval = max(1 if len(items) >= 10 else 0, int(round(len(items) * fraction)))
    held = set(sorted(range(len(items)), key=lambda i: _bucket(items[i], seed))[:n_eval])
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]
