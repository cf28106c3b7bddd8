"""`--judge URL --judge-model NAME`: pairwise preference of an LLM judge, tuned vs base.

Any OpenAI-compatible chat endpoint (a hosted model, vLLM, llama.cpp's server, Ollama's /v1)
through the `openai` client. For each answer prompt the judge sees the question and the two
answers twice, once in each order, because LLM judges favour a position (Zheng et al. 2023,
"Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena", section 3.3 and their swap remedy).
Per prompt the tuned model scores 1 for each order it wins, 0 for each it loses and 0.5 for a
verdict that names neither answer; the prompt's score is the mean of its two orders, and the base
scores 1 minus that. The metric `judge_win_rate` is aggregated with the same paired bootstrap
as every other metric; eval.json `judge` keeps the raw verdicts.
"""

from __future__ import annotations

import os
import re

from ..chat import Answer
from ..errors import IceburgError, MissingDependencyError
from .bootstrap import ItemValues
from .suites import Prompt

INSTRUCTION = ("You are judging two answers from a research assistant to the same question. Prefer the "
               "answer that is more accurate, better supported by evidence, and more useful; ignore length "
               "for its own sake. Reply with one letter only: A or B.")
_VERDICT = re.compile(r"\b([AB])\b")


def _client(url: str):
    try:
        import openai
    except ImportError as exc:
        raise MissingDependencyError("openai (the client for --judge)", "pip install 'iceburg[judge]'") from exc
    return openai.OpenAI(base_url=url, api_key=os.environ.get("OPENAI_API_KEY") or "not-needed", max_retries=1)


def _ask(client, model: str, question: str, a: str, b: str) -> str:
    import openai

    text = f"Question:\n{question}\n\nAnswer A:\n{a}\n\nAnswer B:\n{b}\n\nWhich answer is better, A or B?"
    try:
        res = client.chat.completions.create(model=model, temperature=0, max_tokens=8, messages=[
            {"role": "system", "content": INSTRUCTION}, {"role": "user", "content": text}])
    except openai.APIError as exc:
        raise IceburgError(f"--judge: the endpoint refused the request: {exc}; check --judge URL (it must end "
                           "in /v1 for most servers) and --judge-model") from exc
    return (res.choices[0].message.content or "").strip()


def verdict(text: str) -> str | None:
    """"A" or "B" from a judge's reply, None when it names neither (or both)."""
    found = set(_VERDICT.findall(text.upper()))
    return found.pop() if len(found) == 1 else None


def judge_answers(url: str, model: str, prompts: list[Prompt], base: list[Answer], tuned: list[Answer]
                  ) -> tuple[ItemValues, ItemValues, dict]:
    """Per-prompt win scores of base and tuned (answer prompts only; others carry no value)."""
    client = _client(url)
    vb, vt, rows = ItemValues(), ItemValues(), []
    for p, b, t in zip(prompts, base, tuned):
        if not p.answer:
            vb.add(None), vt.add(None)
            continue
        question = next((m["content"] for m in reversed(p.messages) if m["role"] == "user"), "")
        first = _ask(client, model, question, t.text, b.text)  # tuned is A
        second = _ask(client, model, question, b.text, t.text)  # tuned is B
        score = (_score(verdict(first), "A") + _score(verdict(second), "B")) / 2
        vt.add(score), vb.add(1 - score)
        rows.append({"id": p.key, "tuned_first": first, "base_first": second, "tuned_score": score})
    undecided = sum(verdict(r[k]) is None for r in rows for k in ("tuned_first", "base_first"))
    return vb, vt, {"url": url, "model": model, "requests": 2 * len(rows), "undecided": undecided, "verdicts": rows}


def _score(v: str | None, tuned_letter: str) -> float:
    return 0.5 if v is None else float(v == tuned_letter)
