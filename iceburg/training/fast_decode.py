"""GRPO's decode loop for Llama-shaped models: `generate`'s greedy-with-processor loop, written flat.

Sampling GRPO's answers is ~70% of a CPU step, and a decoded token there is ~1,800 small torch ops
besides its ~120 matrix products: `generate`'s per-step bookkeeping, the decoder's module calls,
three projections where one product over adjacent weights does, HF's attention-mask building. This
loop runs the same arithmetic with fewer ops: one product for q/k/v and one for gate/up where the
weights lie back to back (they do in the kept sampling buffer, `grpo.merged_lora`), the rotary
embedding and the attention call as transformers' Llama code makes them (`apply_rotary_pos_emb`,
`sdpa_attention_forward`'s single-query GQA packing), the key/value written into the cache's spare
room (`_RoomyLayer`, below), and `generate`'s token rule (logits in float32, the processor, argmax,
pad after EOS, stop when every row has ended or at the budget). Measured in docs/grpo.md "Speed".

It applies only where that arithmetic is the model's: `model_type` llama, mistral or qwen2 (q/k/v
and o biases included), SiLU MLP, RMSNorm, full attention in every layer and no sliding window
inside the answer's reach, the HF modules these are built from, on CPU (where it was measured);
anything else (and a cache that is not the roomy one) samples through `generate`. tests/grpo/test_fast_decode.py checks it returns `generate`'s tokens.
Written by hand: transformers' own decode (`generate`) is what it replaces, and no library decodes
a transformers model's weights in place with less overhead on CPU.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

MODEL_TYPES = ("llama", "mistral", "qwen2")


@dataclass
class _Layer:
    norm_in: Any  # RMSNorm modules (weight and epsilon read at call time)
    norm_post: Any
    qkv: list[tuple[torch.Tensor, torch.Tensor | None]]  # (weight, bias) products giving q|k|v in order
    o: torch.Tensor
    o_bias: torch.Tensor | None  # Llama's attention_bias puts one on o_proj too
    gate_up: list[torch.Tensor]  # one [gate; up] product, or the two
    down: torch.Tensor
    scaling: float


def supports(model, cache, length: int) -> bool:
    """Whether `decode` computes what `model.generate` would for this model and cache, for
    sequences of up to `length` tokens."""
    base = _causal_lm(model)
    cfg = getattr(base, "config", None)
    roomy = roomy_layer_class()
    if cfg is None or not _config_fits(cfg, length) or cache is None:
        return False
    if not all(type(x) is roomy for x in getattr(cache, "layers", [None])):
        return False
    if cache.layers[0].keys.device.type != "cpu":  # measured on CPU; on a GPU generate's deferred stop checks
        return False
    inner = getattr(base, "model", None)
    if getattr(inner, "layers", None) is None or not hasattr(inner, "rotary_emb"):
        return False
    return isinstance(base.get_output_embeddings(), torch.nn.Linear) and all(map(_layer_fits, inner.layers))


def _config_fits(cfg, length: int) -> bool:
    """Llama's arithmetic: a listed model type, SiLU, no MLP bias, SDPA, no tensor-parallel split,
    full attention everywhere within `length` tokens."""
    window = getattr(cfg, "sliding_window", None)
    return (getattr(cfg, "model_type", None) in MODEL_TYPES and getattr(cfg, "hidden_act", None) == "silu"
            and not getattr(cfg, "mlp_bias", False) and getattr(cfg, "_attn_implementation", "sdpa") == "sdpa"
            and getattr(cfg, "pretraining_tp", 1) == 1 and not getattr(cfg, "use_sliding_window", False)
            and (window is None or window >= length)
            and all(t == "full_attention" for t in getattr(cfg, "layer_types", None) or ()))


def _layer_fits(layer) -> bool:
    """Plain Linear projections (the LoRA layers swapped out while sampling), a bias-free MLP, an
    RMSNorm and no q/k norms (Qwen3's)."""
    attn, mlp = layer.self_attn, layer.mlp
    return (all(type(getattr(attn, n, None)) is torch.nn.Linear for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
            and all(type(getattr(mlp, n, None)) is torch.nn.Linear and getattr(mlp, n).bias is None
                    for n in ("gate_proj", "up_proj", "down_proj"))
            and type(layer.input_layernorm).__name__.endswith("RMSNorm") and not hasattr(attn, "q_norm"))


def _causal_lm(model):
    get = getattr(model, "get_base_model", None)
    return get() if get is not None else model


def _adjacent(weights: list[torch.Tensor]) -> torch.Tensor | None:
    """The weights as one matrix (rows stacked) without a copy when they lie back to back in one
    storage, else None."""
    first = weights[0]
    if not all(w.is_contiguous() and w.dtype == first.dtype and w.shape[1] == first.shape[1] for w in weights):
        return None
    if any(w.untyped_storage().data_ptr() != first.untyped_storage().data_ptr() for w in weights):
        return None
    offset = first.storage_offset()
    for w in weights:
        if w.storage_offset() != offset:
            return None
        offset += w.numel()
    rows = sum(w.shape[0] for w in weights)
    return torch.as_strided(first, (rows, first.shape[1]), (first.shape[1], 1), first.storage_offset())


def _layers(inner) -> list[_Layer]:
    out = []
    for layer in inner.layers:
        a, mlp = layer.self_attn, layer.mlp
        projs = [a.q_proj, a.k_proj, a.v_proj]
        fused = _adjacent([p.weight for p in projs])
        if fused is not None:
            biases = [p.bias for p in projs]
            bias = None if all(b is None for b in biases) else torch.cat(
                [b if b is not None else p.weight.new_zeros(p.weight.shape[0]) for b, p in zip(biases, projs)])
            qkv = [(fused, bias)]
        else:
            qkv = [(p.weight, p.bias) for p in projs]
        gu = _adjacent([mlp.gate_proj.weight, mlp.up_proj.weight])
        out.append(_Layer(layer.input_layernorm, layer.post_attention_layernorm, qkv, a.o_proj.weight, a.o_proj.bias,
                          [gu] if gu is not None else [mlp.gate_proj.weight, mlp.up_proj.weight],
                          mlp.down_proj.weight, a.scaling))
    return out


def _rms(norm, x: torch.Tensor) -> torch.Tensor:
    """LlamaRMSNorm.forward (and Mistral's, Qwen2's): in float32, the weight times the cast back."""
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * h.to(x.dtype)


@torch.inference_mode()
def decode(model, ids: torch.Tensor, attn: torch.Tensor, cache, max_new_tokens: int, eos: set[int], pad_id: int,
           processor: Callable | None) -> torch.Tensor:
    """`model.generate(input_ids=ids, attention_mask=attn, cache=cache, max_new_tokens=...,
    eos_token_id=eos, pad_token_id=pad_id, do_sample=False, logits_processor=[processor])` for a
    model and roomy cache `supports` accepts: `cache` holds every prompt token but the last."""
    base = _causal_lm(model)
    inner, cfg = base.model, base.config
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    layers = _layers(inner)
    rows, n = ids.shape[0], cache.layers[0].keys.shape[-2]
    keep = attn.bool()
    padded = not bool(keep.all())
    pos = attn.sum(-1, keepdim=True) - 1  # generate's position of each row's last prompt token
    tokens, eos_t = ids[:, -1:], torch.tensor(sorted(eos), dtype=ids.dtype, device=ids.device)
    unfinished = torch.ones(rows, dtype=torch.long, device=ids.device)
    out = [ids]
    embed, head, final_norm = base.get_input_embeddings(), base.get_output_embeddings(), inner.norm
    for _ in range(max_new_tokens):
        x = embed(tokens)
        cos, sin = inner.rotary_emb(x, pos)
        # rotate_half(x) * sin == roll(x, d/2) * [-sin_1, sin_2], exactly: one op in place of four
        cos, sin = cos.unsqueeze(2), torch.cat([-sin[..., :dim // 2], sin[..., dim // 2:]], dim=-1).unsqueeze(2)
        mask = keep[:, None, None, :n + 1] if padded else None
        for i, layer in enumerate(layers):
            x = x + _attention(layer, _rms(layer.norm_in, x), cos, sin, cache.layers[i], mask, heads, kv_heads, dim)
            h = _rms(layer.norm_post, x)
            if len(layer.gate_up) == 1:
                gate, up = F.linear(h, layer.gate_up[0]).chunk(2, dim=-1)
            else:
                gate, up = F.linear(h, layer.gate_up[0]), F.linear(h, layer.gate_up[1])
            x = x + F.linear(F.silu(gate) * up, layer.down)
        logits = head(_rms(final_norm, x))[:, -1].to(dtype=torch.float32, copy=True)  # the module: its hooks run
        scores = processor(torch.cat(out, dim=-1), logits) if processor is not None else logits
        nxt = scores.argmax(-1)
        nxt = nxt * unfinished + pad_id * (1 - unfinished)
        out.append(nxt[:, None])
        unfinished = unfinished & ~torch.isin(nxt, eos_t)
        if not bool(unfinished.any()):
            break
        tokens, pos, n = nxt[:, None], pos + 1, n + 1
        if padded:
            keep = torch.cat([keep, keep.new_ones(rows, 1)], dim=-1)
    return torch.cat(out, dim=-1)


def _attention(layer: _Layer, h: torch.Tensor, cos, sin, cache_layer, mask, heads: int, kv_heads: int,
               dim: int) -> torch.Tensor:
    """One query token's attention, as LlamaAttention.forward with sdpa_attention_forward computes it."""
    rows = h.shape[0]
    parts = [F.linear(h, w, b) for w, b in layer.qkv]
    if len(parts) == 1:  # q and k rotated together: [rows, 1, heads + kv_heads, dim]
        qk, v = parts[0].split([(heads + kv_heads) * dim, kv_heads * dim], dim=-1)
        qk = qk.view(rows, 1, heads + kv_heads, dim)
        qk = qk * cos + qk.roll(dim // 2, -1) * sin
        q, k = qk[:, :, :heads], qk[:, :, heads:]
    else:
        q, k, v = (x.view(rows, 1, -1, dim) for x in parts)
        q, k = q * cos + q.roll(dim // 2, -1) * sin, k * cos + k.roll(dim // 2, -1) * sin
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.view(rows, 1, kv_heads, dim).transpose(1, 2)
    keys, values = cache_layer.update(k, v)
    rep = heads // kv_heads
    if rep > 1 and mask is not None:  # transformers' pack_gqa: the group's heads as query rows
        a = F.scaled_dot_product_attention(q.reshape(rows, kv_heads, rep, dim), keys, values, attn_mask=mask,
                                           scale=layer.scaling)
    else:
        a = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=layer.scaling, enable_gqa=rep > 1)
    a = a.reshape(rows, heads, 1, dim).transpose(1, 2).reshape(rows, 1, heads * dim)
    return F.linear(a, layer.o, layer.o_bias)


@functools.cache
def roomy_layer_class() -> type:
    """`_RoomyLayer`, defined on first use (transformers is imported lazily in iceburg.training)."""
    from transformers.cache_utils import DynamicLayer

    class _RoomyLayer(DynamicLayer):
        """A DynamicLayer whose keys and values are views into buffers with room for `room` more tokens:
        each decode step writes its token's key and value in place instead of `torch.cat`-ing the whole
        cache into a new tensor (the same values; what `generate` sees is the same shape and content).
        Falls back to DynamicLayer's concatenation when out of room or when something replaced the views."""

        def __init__(self, layer: DynamicLayer, room: int):
            super().__init__()
            k, v = layer.keys, layer.values
            n = k.shape[-2]
            self._k = k.new_empty(*k.shape[:-2], n + room, k.shape[-1])
            self._v = v.new_empty(*v.shape[:-2], n + room, v.shape[-1])
            self._k[..., :n, :] = k
            self._v[..., :n, :] = v
            self.device, self.is_initialized = k.device, True
            self.keys, self.values = self._k[..., :n, :], self._v[..., :n, :]

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            n, m = self.keys.shape[-2], key_states.shape[-2]
            if n + m > self._k.shape[-2] or self.keys.data_ptr() != self._k.data_ptr():
                return super().update(key_states, value_states, *args, **kwargs)
            self._k[..., n:n + m, :] = key_states
            self._v[..., n:n + m, :] = value_states
            self.keys, self.values = self._k[..., :n + m, :], self._v[..., :n + m, :]
            return self.keys, self.values

    return _RoomyLayer
