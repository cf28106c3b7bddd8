"""The run's held-out records (RUN/heldout.jsonl, written by the fine-tuner, never trained on),
the run's base folder, and the answer budget of `iceburg eval`."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import IceburgError
from ..run_folder import RunFolder

# Budget for the stop rate: the bundled sample answers are 300-900 tokens long in SmolLM2's
# tokenizer, so 384 tokens lets a concise answer finish while a model that never emits the
# end-of-turn token (the failure this measures) is caught; chosen, not measured as optimal.
DEFAULT_MAX_NEW_TOKENS = 384
# Answer prompts per suite: each is one generation per model. 16 (was 8) so the paired bootstrap
# has some items to resample; an interval over 16 prompts is still wide, and says so.
DEFAULT_PROMPTS = 16


def read_heldout(run_dir: Path) -> list:
    from ..data.loader import normalise

    path = RunFolder(run_dir).heldout
    if not path.is_file():
        raise IceburgError(f"{path} is missing: the run kept no held-out records (trained with "
                           "--eval-fraction 0, or by an iceburg older than `iceburg eval`); retrain with "
                           "--eval-fraction > 0")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [normalise(row["record"], row["source"], row["line"]) for row in rows]


def prompt_of(messages: list[dict[str, str]]) -> tuple[list[dict[str, str]], str]:
    """The conversation up to its first assistant turn, and that turn (the reference answer)."""
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            return messages[:i], m["content"]
    raise IceburgError("a held-out record has no assistant turn")


def run_base_folder(run_dir: Path) -> tuple[str, Path]:
    info = json.loads(RunFolder(run_dir).base_model.read_text(encoding="utf-8"))
    return info.get("spec", "base"), Path(info["path"])
