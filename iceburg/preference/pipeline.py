"""From a `TrainingConfig` to preference training data: read or mine, check, split.

- `--objective dpo|orpo|kto` with preference files: `read_preferences` (per-line rejects).
- `--mine-preferences` with transcripts: the pipeline's `read_step` -> `mine_preferences` with the
  run's truth filter (`truth_filter_from`, the truth step's own factory).
- No `--data-path`: the bundled samples of the model type (`iceburg/data/sample/preference/`:
  `<type>_mined.jsonl` + `<type>_pairs.jsonl`; for mining, `<type>.jsonl` + `<type>_answers.jsonl`).
- KTO takes pairs too (each pair as a desirable and an undesirable example); DPO / ORPO need pairs.
- Held-out split: the SFT split (`iceburg.data.split.split_eval`) over each item's JSON.
"""

from __future__ import annotations

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
    """Read (or mine) the run's preference items, check them against the objective, split them."""
    paths = cfg.data_path or [str(p) for p in default_paths(cfg)]
    stats: dict[str, Any] = {"objective": cfg.objective, "paths": [str(p) for p in paths]}
    items = mine(cfg, paths, rejects, stats) if cfg.mine_preferences else read(cfg, paths, rejects, stats)
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


def mine(cfg: TrainingConfig, paths: list[str], rejects: RejectWriter | None, stats: dict[str, Any]) -> list:
    """`--mine-preferences`: the pipeline's read step over the transcripts, then pairs from the
    run's own truth filter settings (`truth_filter_from`, as the truth step builds it)."""
    from ..pipeline import read_step, run_steps
    from ..truth.from_config import truth_filter_from

    state = run_steps(cfg, rejects, (read_step,), paths=[str(p) for p in paths])
    pairs, mstats = mine_preferences(state.records, truth_filter_from(cfg), margin=cfg.preference_margin,
                                     agent_type=cfg.model_type.agent)
    stats.update(load=state.stats["load"], mining=mstats.to_dict())
    if not pairs:
        raise DataError(f"--mine-preferences found no pairs in {', '.join(map(str, paths))}: "
                        f"{mstats.prompts} distinct prompts, {mstats.single_answer_prompts} with one answer, "
                        f"{mstats.no_good_answer_prompts} without an answer the truth filter keeps, "
                        f"{mstats.below_margin} below the margin {mstats.margin}; mining needs several "
                        "answers to the same prompt (or lower --preference-margin)")
    return list(pairs)


def read(cfg: TrainingConfig, paths: list[str], rejects: RejectWriter | None, stats: dict[str, Any]) -> list:
    """Preference files (pairs or KTO lines), per-line rejects like the transcript loader."""
    load: dict[str, int] = {}
    items = list(read_preferences(paths, rejects, strict=cfg.strict, stats=load))
    stats["load"] = load
    if not items:
        raise DataError(f"no preference records in {', '.join(map(str, paths))}: --objective "
                        f"{cfg.objective} needs 'chosen'/'rejected' pairs or KTO 'completion'/'label' lines "
                        "(docs/preference.md), or --mine-preferences to build pairs from transcripts")
    return items


def _content(item: PreferencePair | KTOExample) -> str:
    return json.dumps(item.to_json(), sort_keys=True, ensure_ascii=False)


def split_items(items: list, fraction: float, seed: int) -> tuple[list, list]:
    """The SFT split's rule (`iceburg.data.split.split_eval`: the lowest content hashes are held
    out, stable when items are added or reordered) over the items' JSON."""
    from ..data.split import split_eval

    return split_eval(items, fraction, seed, content=_content)
