"""Model-based completeness (issue 31): the probability of end-of-turn right after the answer.

A small causal LM with a chat template (the embedded `smollm2-135m`, or the base being trained)
reads the conversation rendered up to the last character of the final assistant answer; the
log-probability it gives the template's end-of-turn token there (`<|im_end|>` for ChatML) is the
signal. A finished answer makes the end of turn likely; an answer cut mid-sentence or mid-list
makes a continuation likely.

The model is not consulted for every record. `EotBand` consults it only where the rules
disagree: issue 13's line rules see a cut but the last markdown block looks complete
(`structure.review_cut` cleared it). Everywhere else the rules' verdict stands, so the clean
majority pays nothing (cost per record: bench/truth_eot.py).

This module takes a local Hugging Face folder (`iceburg.truth` does not depend on
`iceburg.base_models`; callers resolve `smollm2-135m` with `resolve_base_model`). Threads are the
caller's (`torch.set_num_threads` is not touched here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import IceburgError

# ChatML's end-of-turn token first, then the tokenizer's eos (templates without a turn token).
EOT_CANDIDATES = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")


class EotModelError(IceburgError):
    """The end-of-turn model cannot be used (no chat template, no end-of-turn token)."""


def render_until_answer_end(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The conversation as the chat template renders it, cut right after the final assistant
    answer's last character (so the next token is where the template puts end-of-turn)."""
    answered = [i for i, m in enumerate(messages) if m["role"] == "assistant" and str(m.get("content") or "").strip()]
    if not answered:
        raise EotModelError("no assistant answer with text to score; the filter rejects such records before the model")
    last = answered[-1]
    msgs = [{"role": m["role"], "content": str(m.get("content") or "")} for m in messages[:last + 1]]
    answer = msgs[-1]["content"].rstrip()
    msgs[-1]["content"] = answer
    text = tokenizer.apply_chat_template(msgs, tokenize=False)
    at = text.rfind(answer)
    if not answer or at < 0:
        raise EotModelError("the chat template does not render the assistant answer verbatim; "
                            "use a model whose template copies message content (ChatML, Llama 3)")
    return text[:at + len(answer)]


@dataclass
class EotScorer:
    """log P(end-of-turn | conversation up to the answer's end) under a small causal LM."""

    model_dir: str | Path
    batch_size: int = 8
    max_tokens: int = 256  # the answer's tail decides; longer contexts are cut from the left
    calls: int = 0  # records scored (tests count the consultations)
    _model: Any = field(default=None, repr=False)
    _tok: Any = field(default=None, repr=False)
    _eot: int = -1

    def __getstate__(self) -> dict:  # worker processes load their own copy
        return {**self.__dict__, "_model": None, "_tok": None}

    def load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._tok = AutoTokenizer.from_pretrained(str(self.model_dir))
        if not getattr(self._tok, "chat_template", None):
            raise EotModelError(f"{self.model_dir}: the tokenizer has no chat template; the end-of-turn "
                                "signal needs one (use smollm2-135m or an instruct base)")
        self._eot = self.eot_token_id(self._tok)
        self._model = AutoModelForCausalLM.from_pretrained(str(self.model_dir), dtype=torch.float32).eval()

    @staticmethod
    def eot_token_id(tok: Any) -> int:
        vocab = tok.get_vocab()
        for t in EOT_CANDIDATES:
            if t in vocab:
                return vocab[t]
        if tok.eos_token_id is None:
            raise EotModelError("the tokenizer has neither an end-of-turn token nor an eos token")
        return int(tok.eos_token_id)

    def score(self, conversations: list[list[dict[str, str]]]) -> list[float]:
        """Per conversation: log P(end-of-turn) after its final assistant answer (natural log).
        Batches hold records of similar length (sorted), so little compute goes to padding."""
        self.load()
        ids = [self._tok(render_until_answer_end(self._tok, c), add_special_tokens=False)["input_ids"][-self.max_tokens:]
               for c in conversations]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = [0.0] * len(ids)
        for k in range(0, len(order), self.batch_size):
            part = order[k:k + self.batch_size]
            for i, v in zip(part, self._score_batch([ids[i] for i in part])):
                out[i] = v
        self.calls += len(ids)
        return out

    def _score_batch(self, ids: list[list[int]]) -> list[float]:
        import torch

        width = max(len(x) for x in ids)
        pad = self._tok.pad_token_id if self._tok.pad_token_id is not None else 0
        batch = torch.tensor([[pad] * (width - len(x)) + x for x in ids])  # left padding: last = answer end
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = self._model(input_ids=batch, attention_mask=mask, position_ids=pos).logits[:, -1, :]
        return torch.log_softmax(logits.float(), -1)[:, self._eot].tolist()


# An answer that ends in sentence punctuation (optionally closed by a quote, bracket or emphasis),
# a closed code fence or a table row ends where a writer stops; any other ending (a bare word, a
# list item or label with no full stop) is where the rules guess from list siblings and block
# shapes, and where bench/truth_loso.py's missed truncations are (bench/results/truth_loso.json).
_CLOSED_END = re.compile(r"(?:[.!?]['\")\]*_`]*|^\s*(?:```|~~~)\s*|\|)\s*$")


def ends_open(answer: str) -> bool:
    """The answer's last line does not end like a finished sentence, fence or table row."""
    lines = answer.rstrip().split("\n")
    return not _CLOSED_END.search(lines[-1]) if lines[-1].strip() else False


@dataclass
class EotBand:
    """Consult the end-of-turn model only inside the rules' uncertain band; there, log
    P(end-of-turn) below `threshold` makes the record truncated. The band (`in_band`):
    - "disagree": the line rules (`signals.truncation`) saw a cut and the last markdown block
      judged the answer complete (`structure.review_cut` cleared it);
    - "open" (with `open_endings=True`): no rule saw a cut, but the answer ends open
      (`ends_open`): the rules judged completeness from list siblings or a block shape.
    """

    scorer: EotScorer
    threshold: float
    open_endings: bool = True

    def in_band(self, answer: str, line_cut: str | None) -> bool:
        return bool(line_cut) or (self.open_endings and ends_open(answer))

    def judge(self, messages: list[dict[str, str]]) -> tuple[bool, float]:
        """(cut, log-prob) for one record inside the band."""
        lp = self.scorer.score([messages])[0]
        return lp < self.threshold, lp
