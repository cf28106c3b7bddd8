"""Render conversations with the tokenizer's own chat template and mark the assistant tokens.

Loss is computed on assistant turns only. Most real chat templates (Llama 3, Qwen2.5, Mistral)
carry no `{% generation %}` markers, so `return_assistant_tokens_mask` cannot be used. Instead
(written by hand, because no library does this for arbitrary templates) we find each assistant
turn's characters by prefix rendering: the text of `messages[:i]` with the generation prompt is a
prefix of the text of `messages[:i+1]`; the difference is the assistant turn as the template
writes it (content plus end-of-turn marker). Trailing whitespace after the end-of-turn marker
(ChatML's newline) is not supervised. Tokens are mapped to characters through the fast
tokenizer's offsets, so the supervised tokens decode to exactly the assistant text + EOS.

If a template does not emit an end-of-turn token after the assistant content, the tokenizer's
EOS is appended (and supervised) so the model learns to stop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..errors import IceburgError
from ..records import Record
from .tool_render import render_with_tools

logger = logging.getLogger(__name__)

# Used only when the base model has no chat template (original design's format).
CHATML_FALLBACK = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@dataclass
class Example:
    """One tokenised conversation: ids, per-token supervision mask, and its origin."""

    input_ids: list[int]
    mask: list[bool]  # True = assistant token that carries loss
    id: str
    weight: float = 1.0
    truncated: bool = False

    @property
    def supervised(self) -> int:
        return sum(self.mask)


def ensure_chat_template(tokenizer) -> bool:
    """Give the tokenizer ChatML when it has no template. Returns True if one was added."""
    if getattr(tokenizer, "chat_template", None):
        return False
    special = ["<|im_start|>", "<|im_end|>"]
    missing = [t for t in special if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    tokenizer.chat_template = CHATML_FALLBACK
    logger.warning("base tokenizer has no chat template: using ChatML%s",
                   f" (added tokens {missing}; embeddings will be resized)" if missing else "")
    return True


def eos_ids(tokenizer, generation_config=None) -> set[int]:
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if generation_config is not None and generation_config.eos_token_id is not None:
        e = generation_config.eos_token_id
        ids.update(int(x) for x in (e if isinstance(e, (list, tuple)) else [e]))
    return ids


def _render(tokenizer, messages, add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_spans(tokenizer, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """Full rendered text and the [start, end) character span of each assistant turn."""
    full = _render(tokenizer, messages, False)
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = _render(tokenizer, messages[:i], True)
        upto = _render(tokenizer, messages[: i + 1], False)
        if not full.startswith(upto) or not upto.startswith(prefix):
            raise IceburgError(
                "the chat template does not render conversations prefix-consistently, so assistant "
                "turns cannot be located for assistant-only loss; use a base whose template appends "
                "turns (ChatML, Llama 3, Qwen, Mistral) or pass a tokenizer with a standard template")
        start, end = len(prefix), len(upto.rstrip())
        # Some templates strip or alter content; locate it to be safe.
        if m["content"].strip() and m["content"].strip() not in full[start:end]:
            raise IceburgError("the chat template changes assistant content when rendering "
                               "(e.g. strips reasoning); assistant-only masking needs the content verbatim")
        spans.append((start, end))
    return full, spans


def encode(tokenizer, record: Record, max_length: int, eos: set[int]) -> Example | None:
    """Tokenise one record; None when no assistant token fits within `max_length`."""
    text, spans = render_with_tools(assistant_spans, tokenizer, record)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    offsets = enc["offset_mapping"]
    mask = [False] * len(ids)
    # A token is supervised when it overlaps an assistant span; a token straddling the boundary
    # (e.g. " Se" after a template's "assistant: ") carries the first characters of the answer.
    si = 0
    for t, (a, b) in enumerate(offsets):
        while si < len(spans) and a >= spans[si][1]:
            si += 1
        if si < len(spans) and b > spans[si][0] and a < spans[si][1] and b > a:
            mask[t] = True
    # Ensure every assistant turn ends with an end-of-turn token the model can learn to emit.
    if eos:
        out_ids, out_mask = [], []
        for t in range(len(ids)):
            out_ids.append(ids[t])
            out_mask.append(mask[t])
            turn_ends = mask[t] and (t + 1 == len(ids) or not mask[t + 1])
            if turn_ends and ids[t] not in eos:
                out_ids.append(min(eos))
                out_mask.append(True)
        ids, mask = out_ids, out_mask
    truncated = len(ids) > max_length
    if truncated:
        ids, mask = ids[:max_length], mask[:max_length]
    if not any(mask):
        return None
    return Example(input_ids=ids, mask=mask, id=record.id, weight=record.weight, truncated=truncated)


@dataclass
class EncodedSet:
    examples: list[Example]
    kept: list[int]  # index into the input records of each example
    truncated: int


def encode_all(tokenizer, records: list[Record], max_length: int, eos: set[int], rejects=None,
               weights: list[float] | None = None) -> EncodedSet:
    """Encode every record (with its curriculum weight); a record with no assistant token within
    `max_length` is dropped through `rejects` (stage "encode"), never silently."""
    out = EncodedSet([], [], 0)
    for i, rec in enumerate(records):
        if weights is not None:
            rec.weight = float(weights[i])
        ex = encode(tokenizer, rec, max_length, eos)
        if ex is None:
            if rejects is not None:
                rejects.drop("encode", rec, [f"no assistant token within max_seq_length={max_length}"])
            continue
        out.truncated += ex.truncated
        out.examples.append(ex)
        out.kept.append(i)
    return out
