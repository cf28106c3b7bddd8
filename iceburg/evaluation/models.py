"""One evaluated model: its answers (transformers or the shipped GGUF through llama.cpp) and its
per-item losses (held-out transcripts, general text).

The transformers side renders each prompt with the model's own chat template and the record's
`tools=`, the way training rendered it (`training/tool_render.tool_policy`: a plain ChatML template
gets the Hermes tool format, as it did for training, so base and tuned see tools written the same
way). Greedy answers are one left-padded batch per 8 prompts (CPU decoding is memory-bound, so a
batch of 8 costs little more than one; measured for `iceburg chat`); sampled answers draw from the
model's own distribution (temperature 1, no top-k/top-p cut) with a seed per sample.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..chat import Answer, decode_answers
from ..errors import IceburgError
from ..records import Record
from .suites import Prompt

logger = logging.getLogger(__name__)

BATCH = 8


class HfModel:
    """A Hugging Face folder loaded once for answers and losses."""

    def __init__(self, folder: Path, records: list[Record], threads: int | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..training.encoding import ensure_chat_template, eos_ids
        from ..training.tool_render import tool_policy

        if threads:
            torch.set_num_threads(threads)
        self.folder = Path(folder)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        ensure_chat_template(self.tokenizer)
        self.tool_format, self.skip = tool_policy(self.tokenizer, records)
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, use_safetensors=True)
        self.model.eval()
        self.eos = sorted(eos_ids(self.tokenizer, self.model.generation_config))
        self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos[0]

    def renders(self, record: Record) -> bool:
        """Whether this model's template can write the record (tool transcripts need a tool format)."""
        return self.skip is None or self.skip(record) is None

    def _ids(self, p: Prompt) -> list[int]:
        kw: dict[str, Any] = {"tools": p.tools} if p.tools else {}
        return self.tokenizer.apply_chat_template(p.messages, add_generation_prompt=True, tokenize=True,
                                                  return_dict=False, **kw)

    def answer(self, prompts: list[Prompt], max_new_tokens: int, seed: int | None = None) -> list[Answer]:
        """Greedy answers (seed None) or one sampled answer per prompt, in the order given."""
        ids = [self._ids(p) for p in prompts]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # batch similar lengths
        out: list[Answer | None] = [None] * len(ids)
        for start in range(0, len(order), BATCH):
            chunk = order[start:start + BATCH]
            for i, a in zip(chunk, self._generate([ids[i] for i in chunk], max_new_tokens, seed)):
                out[i] = a
        return out  # type: ignore[return-value]

    def _generate(self, prompts: list[list[int]], max_new_tokens: int, seed: int | None) -> list[Answer]:
        import torch

        width = max(map(len, prompts))
        ids = torch.tensor([[self.pad] * (width - len(p)) + p for p in prompts])
        attn = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        kw: dict[str, Any] = dict(do_sample=False, top_p=None, top_k=None, temperature=None)
        if seed is not None:
            torch.manual_seed(seed)
            kw = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0)
        with torch.no_grad():
            out = self.model.generate(input_ids=ids, attention_mask=attn, max_new_tokens=max_new_tokens,
                                      eos_token_id=self.eos, pad_token_id=self.pad, **kw)
        return decode_answers(self.tokenizer, out[:, width:].tolist(), self.eos)

    def record_losses(self, records: list[Record], max_length: int) -> list[tuple[float, int] | None]:
        """Per record: (summed cross-entropy over its supervised tokens, their count), encoded exactly
        as training encodes held-out records (`encoding.encode`, truncated); None if it cannot be."""
        from ..training.encoding import encode

        out: list[tuple[float, int] | None] = []
        for r in records:
            ex = encode(self.tokenizer, r, max_length, set(self.eos)) if self.renders(r) else None
            out.append(None if ex is None or not any(ex.mask[1:]) else self._loss(ex.input_ids, ex.mask))
        return out

    def text_losses(self, texts: list[str], max_length: int) -> list[tuple[float, int]]:
        """Per text: summed next-token cross-entropy over its tokens (first `max_length`) and count."""
        out = []
        for t in texts:
            ids = self.tokenizer(t, add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
            out.append(self._loss(ids, [True] * len(ids)))
        return out

    def _loss(self, ids: list[int], mask: list[bool]) -> tuple[float, int]:
        import torch

        with torch.no_grad():
            logits = self.model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
        target = torch.tensor(ids[1:])
        keep = torch.tensor(mask[1:])
        ce = torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum")
        return float(ce), int(keep.sum())


class GgufModel:
    """The run's shipped GGUF through llama.cpp: greedy answers with the file's own chat template."""

    def __init__(self, path: Path, threads: int | None = None, n_ctx: int = 4096):
        from ..chat import GgufChatModel

        self.path = Path(path)
        self.chat = GgufChatModel(path, None, threads=threads, n_ctx=n_ctx)

    def answer(self, prompts: list[Prompt], max_new_tokens: int, seed: int | None = None) -> list[Answer]:
        out = []
        for p in prompts:
            kw: dict[str, Any] = {"tools": p.tools} if p.tools else {}
            try:
                res = self.chat.llm.create_chat_completion(messages=p.messages, max_tokens=max_new_tokens,
                                                           temperature=0.0, top_k=1, **kw)
            except ValueError as exc:  # llama.cpp: "Requested tokens (N) exceed context window of M"
                raise IceburgError(f"--gguf: prompt {p.key} does not fit llama.cpp's context ({exc}); lower "
                                   "--max-new-tokens or leave that transcript out of the evaluation") from exc
            choice = res["choices"][0]
            text = (choice["message"].get("content") or "").strip()
            out.append(Answer(text, stopped=choice.get("finish_reason") == "stop",
                              new_tokens=int(res.get("usage", {}).get("completion_tokens", 0))))
        return out
