"""GPU training options: packed rows through varlen attention, and Liger's fused linear +
cross-entropy. Both change how a micro-batch is computed, never what is computed: the loss is the
trainer's weighted token loss over the same supervised tokens.

Varlen (`--attn-implementation flash_attention_2`): transformers 5 turns restarting `position_ids`
into flash-attention's `cu_seqlens` only for a batch of ONE row
(modeling_flash_attention_utils._is_packed_sequence checks `batch_size != 1`), so `collate_varlen`
lays a micro-batch's rows end to end in one row with no padding at all (TRL's "padding-free"
layout). Under sdpa/eager the same row gets transformers' block-diagonal mask from the same
position ids, which is how tests/training/test_accel.py proves the layout on CPU (equal loss to the
padded batch); on CPU that layout is slower (STACK.md: padding-free packing about 2x slower per
token), so it is used only with a flash kernel.

Liger (`--liger`, CUDA + `pip install liger-kernel`): the lm-head matmul and cross-entropy run
chunked in one Triton kernel (`liger_kernel.transformers.functional.liger_fused_linear_cross_entropy`),
so the [tokens x vocab] logits are never materialised. Our loss weights tokens per example, which
Liger's kernel cannot take per token; the weights are constant within an example, so the loss is
a sum over the distinct weights w of w x (Liger's summed CE over the tokens with weight w).
"""

from __future__ import annotations

import torch

from ..errors import IceburgError, MissingDependencyError
from .packing import Row

FLASH = ("flash_attention_2", "flash_attention_3")
LIGER_INSTALL = "pip install liger-kernel==0.8.5  (CUDA only: it runs Triton kernels)"


def collate_varlen(rows: list[Row]) -> dict[str, torch.Tensor]:
    """One (1, total) row: the rows end to end, positions restarting per example, no padding."""
    ids = [t for r in rows for t in r.input_ids]
    return {"input_ids": torch.tensor([ids]),
            "position_ids": torch.tensor([[p for r in rows for p in r.position_ids]]),
            "loss_mask": torch.tensor([[m for r in rows for m in r.mask]], dtype=torch.bool),
            "token_weights": torch.tensor([[w for r in rows for w in r.weights]], dtype=torch.float32)}


def liger_functional():
    try:
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
    except ImportError as e:
        raise MissingDependencyError("liger-kernel (for --liger)", LIGER_INSTALL) from e
    return liger_fused_linear_cross_entropy


def liger_forward_loss(model, batch: dict[str, torch.Tensor], device: str, autocast) -> tuple[torch.Tensor, int]:
    """The trainer's `_forward_loss` with the lm head fused into Liger's cross-entropy."""
    flce = liger_functional()
    ids = batch["input_ids"].to(device)
    tgt_mask = batch["loss_mask"][:, 1:].to(device)
    if not bool(tgt_mask.any()):
        return torch.zeros((), device=device, requires_grad=True), 0
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = inner.get_output_embeddings()
    if type(head) is not torch.nn.Linear:
        raise IceburgError("--liger needs a plain linear lm head (not adapted by LoRA); drop lm_head from "
                           "--lora-target-modules or drop --liger")
    with autocast:
        hidden = inner.model(input_ids=ids, position_ids=batch["position_ids"].to(device),
                             use_cache=False).last_hidden_state
    h = hidden[:, :-1][tgt_mask]  # hidden state at t predicts token t+1
    targets = ids[:, 1:][tgt_mask]
    weights = batch["token_weights"][:, 1:].to(device)[tgt_mask]
    loss = h.new_zeros((), dtype=torch.float32)
    for w in torch.unique(weights).tolist():
        sel = weights == w
        loss = loss + w * flce(h[sel], head.weight, targets[sel], head.bias, reduction="sum").float()
    return loss, int(tgt_mask.sum())


def gpu_option_problems(attn_implementation: str, liger: bool, device: str) -> list[str]:
    """Why the requested GPU options cannot run here (empty: they can)."""
    import importlib.util

    p = []
    on_cuda = device.startswith("cuda")
    if attn_implementation in FLASH:
        if not on_cuda:
            p.append(f"attn_implementation (--attn-implementation): {attn_implementation} runs on CUDA only "
                     f"(device here: {device}); use sdpa")
        elif importlib.util.find_spec("flash_attn" if attn_implementation == "flash_attention_2"
                                      else "flash_attn_interface") is None:
            p.append(f"attn_implementation (--attn-implementation): {attn_implementation} needs the "
                     "flash-attn package: pip install flash-attn --no-build-isolation")
    if liger:
        if not on_cuda:
            p.append(f"use_liger (--liger): Liger's kernels run on CUDA only (device here: {device})")
        elif importlib.util.find_spec("liger_kernel") is None:
            p.append(f"use_liger (--liger): liger-kernel is not installed: {LIGER_INSTALL}")
    return p
