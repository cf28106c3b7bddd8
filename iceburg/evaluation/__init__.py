"""`iceburg eval RUN [--against BASE] [--gate ...]`: is the tuned agent better at its job?

Modules: `suites` (prompts from held-out transcripts and `--eval-data`), `models` (answers through
transformers or the shipped GGUF, per-item losses), `metrics` (truth verdict, stop rate, length,
reference similarity, tool-call accuracy), `forgetting` (the shipped general-text set),
`bootstrap` (paired 95% intervals), `gates` (release gates), `run` (the driver and eval.json).
docs/evaluation.md describes every metric.
"""

from .gates import GATE_EXIT, check_gates, failed, parse_gates
from .heldout import DEFAULT_MAX_NEW_TOKENS, DEFAULT_PROMPTS, prompt_of, read_heldout
from .run import EvalOptions, evaluate_run, format_eval, regressions_first

__all__ = ["DEFAULT_MAX_NEW_TOKENS", "DEFAULT_PROMPTS", "EvalOptions", "GATE_EXIT", "check_gates", "evaluate_run",
           "failed", "format_eval", "parse_gates", "prompt_of", "read_heldout", "regressions_first"]
