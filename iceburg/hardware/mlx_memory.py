"""Activation memory of the MLX backend's training step (`--backend mlx`), measured by MLX itself.

torch's estimate (`model_shape.activation_probe`) counts what autograd saves on the meta device.
MLX has no meta device and keeps a different set of arrays for its vector-Jacobian products (its
CPU attention keeps one fp32 score matrix per head: memory grows with the square of the row length,
which torch's segment attention avoids), so torch's figure is not MLX's: the MLX run of the README
command peaked 24% above it (and that run trained its fp16 weights, not the plan's fp32).

Here the MLX loss and gradient (`models.mlx.loss_sum`, the trainer's own) run on copies of the model
cut to PROBE_LAYERS decoder layers, with random weights in the plan's precision, the plan's LoRA
layers and the real vocabulary, on PROBE_ROWS random rows whose last `supervised_fraction` of
positions carry loss, and MLX's allocator reports the peak (`mx.get_peak_memory`). The difference
between the two copies is the layers' share (assumed alike, as in `activation_probe`); the rest is the
embedding output, final norm, head and loss. A layer's share at two row lengths gives its linear and
quadratic terms, so the probe's rows stay short (at most PROBE_MAX_SEQ tokens) whatever length the
plan asks about. The peak is a maximum over the step, not a sum of parts; the planner cells
(bench/planner_cells.py, docs/hardware.md) are the check that the extrapolation holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import IceburgError

# Rows per probe: one row peaked 8% below 1/2 and 1/4 of a 2- and 4-row step per row (SmolLM2-135M,
# fp32, 512 tokens: 1,523 / 1,656 / 1,652 MiB per row, measured on mlx-cpu 0.32.4); from two rows
# on, the peak grows linearly with the rows, so the probe runs two and scales.
PROBE_ROWS = 2
# Longest probe row. The quadratic term (attention scores) comes from two lengths, this and half of it.
PROBE_MAX_SEQ = 512
# Decoder layers of the two cut copies: the first layer measured below the others (SmolLM2-135M,
# 2 rows x 512, fp32: 84 MiB from one layer to two, 89-93 MiB per layer from 2 to 4, 8, 16 and 30), so
# the per-layer share is taken between 2 and 4.
PROBE_LAYERS = (2, 4)


@dataclass(frozen=True)
class MlxActivations:
    """Per probe row: a layer's bytes at row length s are linear * s + quadratic * s^2; the rest (the
    embedding output, final norm, head and loss at the plan's supervised share) is outside * s."""

    linear: float
    quadratic: float
    outside: float

    def bytes(self, rows: int, seq_len: int, num_layers: int) -> int:
        layer = self.linear * seq_len + self.quadratic * seq_len ** 2
        return int(max(0.0, rows * (num_layers * layer + self.outside * seq_len)))


_PROBES: dict[tuple, MlxActivations] = {}


def _cut_config(config: dict, layers: int) -> dict:
    """`config` with `layers` decoder layers (per-layer lists cut to match)."""
    from ..models.mlx import mlx_config

    cfg = mlx_config(config)
    if isinstance(cfg.get("text_config"), dict):  # multimodal configs keep the decoder's shape there
        cfg["text_config"] = _cut_config(cfg["text_config"], layers)
    n = cfg.get("num_hidden_layers")
    if n is None:
        return cfg
    for key, value in list(cfg.items()):
        if isinstance(value, list) and len(value) == n:
            cfg[key] = value[:layers]
    cfg["num_hidden_layers"] = layers
    return cfg


def _probe_model(cfg: dict, precision: str, lora: tuple):
    """The cut model with random weights in `precision` and the plan's LoRA layers (alpha scales the
    adapters' values, not their memory, so 2r stands in for it)."""
    import mlx.core as mx
    from mlx_lm.utils import _get_classes

    from ..models.mlx import MLX_DTYPES, apply_lora_mlx

    try:
        model_class, args_class = _get_classes(cfg)
    except ValueError as e:  # mlx-lm: "Model type X not supported."
        raise IceburgError(f"--backend mlx: mlx-lm has no model for model_type {cfg.get('model_type')!r} ({e}); "
                           "use --backend torch") from e
    model = model_class(args_class.from_dict(cfg))
    model.set_dtype(getattr(mx, MLX_DTYPES[precision]))
    r, targets, dropout = lora
    apply_lora_mlx(model, r, 2 * r, list(targets), dropout)
    model.train()
    mx.eval(model.parameters())
    return model


def _peak_bytes(model, vocab: int, seq_len: int, kept: int, packed: bool) -> int:
    """MLX's peak memory for one loss-and-gradient of PROBE_ROWS random rows, above the weights."""
    import mlx.core as mx
    import mlx.nn as nn

    from ..models.mlx import loss_sum, segment_mask

    ids = mx.array(np.random.default_rng(0).integers(0, vocab, (PROBE_ROWS, seq_len)).astype(np.int32))
    # packed rows hold two examples each (the block-diagonal mask the trainer builds for packed rows)
    positions = np.tile(np.arange(seq_len) % max(1, (seq_len + 1) // 2 if packed else seq_len), (PROBE_ROWS, 1))
    seg = mx.array(segment_mask(positions)) if packed else None
    keep = mx.arange(seq_len - kept, seq_len)
    targets, weights = ids[:, seq_len - kept:], mx.ones((PROBE_ROWS, kept), dtype=mx.float32)
    mx.eval(*(a for a in (ids, seg, keep, targets, weights) if a is not None))
    mx.clear_cache()
    mx.reset_peak_memory()
    before = mx.get_active_memory()
    mx.eval(*nn.value_and_grad(model, loss_sum)(model, ids, targets, weights, seg, keep))
    return mx.get_peak_memory() - before


def mlx_activation_probe(config: dict, precision: str, seq_len: int, supervised_fraction: float,
                         lora_r: int, targets: list[str], lora_dropout: float, packed: bool = True) -> MlxActivations:
    """The per-row terms of MLX's step memory for the HF `config` (see the module docstring)."""
    from ..models.mlx import mlx_core

    mx = mlx_core()  # first: binds OpenBLAS on Linux before mlx loads (models.mlx.preload_openblas)
    s2 = max(8, min(seq_len, PROBE_MAX_SEQ))
    s1 = s2 // 2
    frac = min(1.0, max(0.0, supervised_fraction))
    kept = {s: max(1, math.ceil(s * frac)) for s in (s1, s2)}
    lora = (lora_r, tuple(sorted(targets)), float(lora_dropout))
    key = (repr(sorted(config.items())), precision, s2, kept[s2], lora, packed)
    if key not in _PROBES:
        peaks = {}  # (layers, length) -> bytes per probe row
        for n in PROBE_LAYERS:
            cfg = _cut_config(config, n)
            model = _probe_model(cfg, precision, lora)
            for s in (s1, s2):
                peaks[n, s] = _peak_bytes(model, cfg["vocab_size"], s, kept[s], packed) / PROBE_ROWS
            del model
            mx.clear_cache()
        short, deep = PROBE_LAYERS
        layer = {s: max(0.0, (peaks[deep, s] - peaks[short, s]) / (deep - short)) for s in (s1, s2)}
        outside = max(0.0, peaks[short, s2] - short * layer[s2]) / s2
        # layer(s) = linear s + quadratic s^2 through the two lengths; the rest grows with s (the head
        # runs at the supervised share of positions, a fixed fraction)
        quadratic = max(0.0, (layer[s2] / s2 - layer[s1] / s1) / (s2 - s1))
        _PROBES[key] = MlxActivations(max(0.0, layer[s2] / s2 - quadratic * s2), quadratic, outside)
    return _PROBES[key]
