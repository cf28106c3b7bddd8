"""Preference tuning from the truth filter's verdicts: data (pairs, KTO), pair mining, DPO/ORPO/KTO.

- `data`: `read_preferences(paths, rejects)` -> `PreferencePair` / `KTOExample` (TRL and
  LLaMA-Factory shapes), per-line rejects like the transcript loader.
- `mining`: `mine_preferences(records, truth_filter, margin=0.1)` -> pairs + `MiningStats`.
- `losses`: DPO / ORPO / KTO, term for term as TRL 1.16.0.
- `pipeline`: `prepare_preferences(cfg, rejects)` (read or mine, check, split).
The loop is `iceburg.training.preference` (it runs on the SFT encoding), a layer above.
"""

from .data import KTOExample, PreferencePair, read_preferences, unpair
from .mining import DEFAULT_MARGIN, MiningStats, mine_preferences

__all__ = ["KTOExample", "PreferencePair", "read_preferences", "unpair", "DEFAULT_MARGIN", "MiningStats",
           "mine_preferences"]
