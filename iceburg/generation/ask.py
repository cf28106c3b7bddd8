"""What to ask: a new prompt near each seed, written by the teacher, then the teacher's answer.

The rewrite request is Evol-Instruct's "in-breadth evolving" (Xu et al. 2023, "WizardLM", appendix:
"draw inspiration from the given prompt to create a brand new prompt ... in the same domain but
more rare"), with the agent type's system prompt so the new task is one that agent would get. The
answer request is the agent's own conversation: its system prompt and the new user prompt, so the
kept transcript has the shape of logged data. When the seed record had tools, the rewrite request names
them (so the new task is one they serve) and the answer request sends their definitions (`tools=`,
with `tool_choice` when `--tool-choice` is not auto). Requests are plain dicts: the job log stores
them verbatim and a restart compares nothing but their keys.
"""

from __future__ import annotations

import re
import zlib
from typing import Any

from .seeds import Seed

REWRITE = ("You write new tasks for an AI agent. The agent's instructions are:\n\n{system}\n\nHere is a "
           "task the agent was given:\n\n<task>\n{task}\n</task>\n\nDraw inspiration from it and write ONE "
           "brand new task in the same domain but on a different, rarer question, one the agent would "
           "need its instructions for. Reply with the new task only, as the user would write it.")
# Lead-ins small teachers put before the task ("Here is a new task:", "New task:") and quotes.
_LEAD = re.compile(r"^\s*(?:(?:here(?:'s| is) )?(?:a |the |one )?(?:brand )?new (?:task|question|prompt)"
                   r"(?: for the agent)?|task|question|prompt|the agent (?:should|could) (?:ask|be asked))\s*[:\-]\s*",
                   re.IGNORECASE)


def item_seed(job_seed: int, item: int) -> int:
    """The sampling seed of one item: stable across restarts and machines."""
    return zlib.crc32(f"{job_seed}:{item}".encode()) & 0x7FFFFFFF


TOOLS_NOTE = "\n\nThe agent can call these tools:\n{tools}\nWrite a task these tools help with."


def ask_request(seed: Seed, system: str, *, max_tokens: int, temperature: float, sampling_seed: int
                ) -> dict[str, Any]:
    task = "\n\n".join(m["content"] for m in seed.messages if m["role"] == "user").strip()
    content = REWRITE.format(system=system, task=task[:2000])
    if seed.tools:
        lines = [f"- {t['function']['name']}" + (f": {t['function']['description']}"
                                                  if t["function"].get("description") else "") for t in seed.tools]
        content += TOOLS_NOTE.format(tools="\n".join(lines))
    return {"messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "temperature": temperature, "seed": sampling_seed}


def parse_prompt(text: str) -> str:
    """The new task from the teacher's reply: lead-ins, tags and wrapping quotes removed; when the
    reply holds a question line, the first such line (small teachers add commentary after it)."""
    text = re.sub(r"</?task>", "", text).strip()
    lines = [_LEAD.sub("", ln).strip().strip('"“”').strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.endswith(":")]  # "And here is the new task:" introduces it
    questions = [ln for ln in lines if ln.endswith("?")]
    if questions:
        return questions[0]
    return "\n".join(lines).strip()


def answer_request(prompt: str, system: str, *, max_tokens: int, temperature: float, sampling_seed: int,
                   tools: list[dict[str, Any]] | None = None, tool_choice: str = "auto") -> dict[str, Any]:
    req: dict[str, Any] = {"messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt}],
                           "max_tokens": max_tokens, "temperature": temperature, "seed": sampling_seed}
    if tools:
        req["tools"] = tools
        choice = tool_choice_value(tool_choice, tools)
        if choice is not None:
            req["tool_choice"] = choice
    return req


def tool_choice_value(tool_choice: str, tools: list[dict[str, Any]]) -> str | dict[str, Any] | None:
    """The request's `tool_choice` for `--tool-choice`: None for auto (the endpoint's default: the
    teacher decides), "none" / "required" as given, a function name as OpenAI's named choice
    (`{"type": "function", "function": {"name": ...}}`: the teacher must call it) when the seed's tools
    define it, else None. A named choice is the one llama-cpp-python's server honours, by constraining
    the answer to the function's JSON schema with a grammar (llama_chat_format.py)."""
    if tool_choice in ("none", "required"):
        return tool_choice
    if tool_choice != "auto" and any(t["function"]["name"] == tool_choice for t in tools):
        return {"type": "function", "function": {"name": tool_choice}}
    return None
