"""What the models are asked: prompts cut from held-out transcripts (and `--eval-data` files).

From each record, two kinds of prompt, both "the conversation up to an assistant turn":
- an answer prompt: up to the first assistant turn that answers in words (no tool call). In a plain
  transcript that is the first reply; in a tool transcript it is the answer after the tool result,
  so the answer is judged with the tool's output in front of the model. Reference: that turn.
- tool prompts (records with tools or tool calls): up to every assistant turn, each with the calls
  that turn made (none for the final answer: "no call where none was made").
A turn that is both is asked once. Records come from RUN/heldout.jsonl (never trained on) and from
any `--eval-data` file the loader reads (every input shape it accepts, docs/data.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import IceburgError
from ..records import Record
from .toolcalls import expected_calls

# Tool turns asked at most (per suite): each is a generation per model; 64 keeps a large held-out
# set's tool part to a few minutes on CPU for a 135M model (chosen, not measured as optimal).
MAX_TOOL_PROMPTS = 64


@dataclass
class Prompt:
    key: str  # "<record id>#<turn index>"
    suite: str  # "heldout" or "eval-data"
    record: int  # index into the evaluated records
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    reference: str
    answer: bool = False  # scored for the answer metrics (truth, stop, length, similarity)
    expected: list[tuple[str, str]] | None = None  # tool prompt: the calls the transcript made
    agent: str | None = None


@dataclass
class Suite:
    records: list[Record]
    labels: list[str]  # per record: its suite
    prompts: list[Prompt] = field(default_factory=list)

    @property
    def answers(self) -> list[Prompt]:
        return [p for p in self.prompts if p.answer]

    @property
    def tool_prompts(self) -> list[Prompt]:
        return [p for p in self.prompts if p.expected is not None]


def uses_tools(record: Record) -> bool:
    return bool(record.tools) or any(m.get("tool_calls") or m["role"] == "tool" for m in record.messages)


def answer_turn(record: Record) -> int | None:
    """Index of the first assistant turn that answers in words (no tool call)."""
    return next((i for i, m in enumerate(record.messages)
                 if m["role"] == "assistant" and not m.get("tool_calls") and m["content"].strip()), None)


def _prompt(record: Record, index: int, i: int, suite: str, agent: str | None) -> Prompt:
    return Prompt(key=f"{record.id}#{i}", suite=suite, record=index, messages=record.messages[:i],
                  tools=record.tools, reference=record.messages[i]["content"], agent=agent)


def build_suite(records: list[Record], labels: list[str], n_prompts: int, agent: str | None,
                max_tool_prompts: int = MAX_TOOL_PROMPTS) -> Suite:
    """Answer prompts from the first `n_prompts` records of each suite that have one, tool prompts
    from every tool transcript (at most `max_tool_prompts` per suite)."""
    suite = Suite(records, labels)
    by_key: dict[str, Prompt] = {}
    answers: dict[str, int] = {}
    tools: dict[str, int] = {}
    for index, (r, label) in enumerate(zip(records, labels)):
        i = answer_turn(r)
        if i is not None and answers.get(label, 0) < n_prompts:
            p = by_key.setdefault(f"{r.id}#{i}", _prompt(r, index, i, label, agent))
            p.answer = True
            answers[label] = answers.get(label, 0) + 1
        if not uses_tools(r):
            continue
        for j, m in enumerate(r.messages):
            if m["role"] != "assistant" or tools.get(label, 0) >= max_tool_prompts:
                continue
            p = by_key.setdefault(f"{r.id}#{j}", _prompt(r, index, j, label, agent))
            p.expected = expected_calls(m)
            tools[label] = tools.get(label, 0) + 1
    suite.prompts = sorted(by_key.values(), key=lambda p: (p.record, len(p.messages)))  # transcript order
    return suite


def read_eval_data(paths: list[str]) -> list[Record]:
    """Records from `--eval-data` files (any shape the loader reads); unreadable lines are an error
    (an evaluation set is small and chosen by hand, so a silently smaller one would mislead)."""
    from ..data.loader import read_records
    from ..records import RejectWriter

    for p in paths:
        if not Path(p).exists():
            raise IceburgError(f"--eval-data {p}: no such file or folder; pass a JSONL file of transcripts")
    with RejectWriter(None) as rejects:
        records = list(read_records(paths, rejects))
    if rejects.total:
        raise IceburgError(f"--eval-data {', '.join(paths)}: {rejects.total} line(s) are not usable transcripts "
                           f"({rejects.counts}); see why with `iceburg-train --filter-only --data-path FILE` "
                           "(rejects.jsonl), fix or remove them")
    if not records:
        raise IceburgError(f"--eval-data {', '.join(paths)}: no transcript in the file(s)")
    return records
