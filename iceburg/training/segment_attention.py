"""Packed rows on CPU without a block-diagonal mask: causal attention per packed example.

The trainer packs several examples into one row with `position_ids` restarting at each example.
Under sdpa, transformers turns those positions into a [rows x L x L] block-diagonal causal mask
(masking_utils.find_packed_sequence_indices), and torch's CPU flash kernel then computes every
query-key block of the row, masked or not: measured on SmolLM2-135M at 4 x 512 it was 17% of a
training step (bench/results/training_throughput_profile.txt). This attention function
reads the example boundaries from the same `position_ids` and runs `scaled_dot_product_attention`
with `is_causal=True` on each example alone, so the work is the sum of the examples' squared
lengths (halved by causality) instead of the row's squared length, and the kernel takes its
unmasked causal path.

It computes the same function as the masked path (tests/training/test_segment_attention.py checks
loss and gradients against sdpa's block mask). It is registered under the name `SEGMENT_SDPA`
and used by the trainer only for its own training/evaluation forwards, and only for models whose
attention is plain causal attention (no sliding window shorter than a row, no soft-capping).
Each row is cut into its examples with `unbind`/`split` (their backward is one stack/cat;
indexing a slice would allocate and add a zero-filled gradient of the whole tensor per example)
and grouped KV heads are shared inside the kernel (`enable_gqa`) rather than copied: with both,
segments beat the mask even on rows of mostly one example (docs/training.md).
Generation and every export keep the model's own implementation (`segment_attention(model)`
restores it).

Hand-written because no library does it on CPU: flash-attention's varlen kernels (the GPU path,
accel.py) are CUDA-only.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

SEGMENT_SDPA = "iceburg_segment_sdpa"


def segments(position_ids: torch.Tensor) -> list[list[tuple[int, int]]]:
    """Per row, the (start, end) spans over which positions count up by one (one packed example
    each; trailing padding restarts its positions too, so it is a span of its own)."""
    pos = position_ids
    brk = torch.ones_like(pos, dtype=torch.bool)
    brk[:, 1:] = pos[:, 1:] != pos[:, :-1] + 1
    out = []
    n = pos.shape[1]
    for row in brk.tolist():
        starts = [i for i, b in enumerate(row) if b]
        out.append(list(zip(starts, starts[1:] + [n])))
    return out


def segment_work_share(position_ids: torch.Tensor) -> float:
    """Attention work per example (sum of squared lengths) over the masked path's (rows x L^2):
    how much packing there is in a micro-batch (reported by bench/training_step_ab.py)."""
    spans = segments(position_ids)
    n = position_ids.shape[1]
    return sum((e - s) ** 2 for row in spans for s, e in row) / max(1, len(spans) * n * n)


def segment_sdpa_forward(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         attention_mask: torch.Tensor | None, dropout: float = 0.0,
                         scaling: float | None = None, **kwargs):
    """transformers attention interface: query (B, H, L, D), key/value (B, Hkv, L, D) ->
    output (B, L, H, D), no weights."""
    pos = kwargs.get("position_ids")
    if pos is None or attention_mask is not None or query.shape[2] != key.shape[2]:
        raise RuntimeError(f"{SEGMENT_SDPA} is a training kernel for packed rows (position_ids, no mask, "
                           "no cache); the trainer enables it only around its own forwards")
    if kwargs.get("softcap") is not None:
        raise RuntimeError(f"{SEGMENT_SDPA} cannot soft-cap attention scores")
    gqa = query.shape[1] != key.shape[1]  # grouped KV heads: sdpa shares them, no repeat_kv copy
    if pos.shape[0] != query.shape[0]:
        pos = pos.expand(query.shape[0], -1)
    window = kwargs.get("sliding_window")
    spans = segments(pos)
    if window is not None and max(e - s for row in spans for s, e in row) > window:
        raise RuntimeError(f"{SEGMENT_SDPA}: an example is longer than the sliding window ({window})")

    def attend(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=scaling,
                                              enable_gqa=gqa)

    if all(len(row) == 1 for row in spans):  # no row is packed: one causal call for the batch
        out = attend(query, key, value)
    else:
        # unbind/split, not indexing (module docstring)
        rows = []
        for q, k, v, row in zip(query.unbind(0), key.unbind(0), value.unbind(0), spans):
            lens = [e - s for s, e in row]
            rows.append(torch.cat([attend(qs[None], ks[None], vs[None]) for qs, ks, vs in
                                   zip(q.split(lens, 1), k.split(lens, 1), v.split(lens, 1))], dim=2))
        out = torch.cat(rows, dim=0)
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(SEGMENT_SDPA, segment_sdpa_forward)


_SOFTMAX_LAYERS = ("full_attention", "sliding_attention", "chunked_attention")  # transformers' layer_types


def supports_segments(model, max_length: int) -> str | None:
    """Why the model's attention cannot run per segment (None: it can)."""
    config = getattr(model, "config", None)
    if config is None:
        return "no config"
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(text, "_attn_implementation", None) not in ("sdpa", "eager", None):
        return f"attention implementation {text._attn_implementation}"
    if getattr(text, "attn_logit_softcapping", None):
        return "attention soft-capping"
    window = getattr(text, "sliding_window", None)
    layer_types = getattr(text, "layer_types", None) or []
    # Only softmax attention splits per segment; a recurrent layer (Qwen3.5's "linear_attention",
    # a hybrid's "mamba") carries state along the row, and gpt-oss's attention sinks add a
    # per-head logit this kernel does not compute (issue 32).
    other = sorted({t for t in layer_types if t not in _SOFTMAX_LAYERS})
    if other:
        return f"layers that are not softmax attention ({', '.join(other)})"
    if any(hasattr(m, "sinks") for m in model.modules()):
        return "attention sinks"
    if window is not None and window < max_length and (
            any("sliding" in t for t in layer_types) or getattr(text, "use_sliding_window", True)):
        return f"sliding window {window} < row length {max_length}"
    return None


def _configs(model):
    """Every config (and text sub-config) of the model's modules that names an attention kernel."""
    found: dict[int, object] = {}
    for m in model.modules():
        cfg = getattr(m, "config", None)
        for c in (cfg, getattr(cfg, "text_config", None)):
            if c is not None and hasattr(c, "_attn_implementation"):
                found.setdefault(id(c), c)
    return list(found.values())


@contextmanager
def segment_attention(model, enabled: bool = True):
    """Run the block with every attention of `model` computed per packed example, then restore."""
    if not enabled:
        yield
        return
    _register()
    cfgs = _configs(model)
    saved = [c._attn_implementation for c in cfgs]
    try:
        for c in cfgs:
            c._attn_implementation = SEGMENT_SDPA
        yield
    finally:
        for c, s in zip(cfgs, saved):
            c._attn_implementation = s
