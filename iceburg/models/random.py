"""Random-weight Hugging Face models shaped like real ones, for tests and benchmarks.

`build_random_model("qwen2", out, tokenizer_dir=tok)` writes a plain HF folder (config.json,
model.safetensors, the tokenizer files copied from `tokenizer_dir`) that every stage can load as
if it were a downloaded base. Nothing is downloaded: the weights come from the architecture's own
initialiser under a fixed seed, so two builds with the same arguments are bit-identical.

The default shapes are tiny (seconds to build) but keep each architecture's distinguishing
features: Llama has untied embeddings and no biases; Mistral is Llama-shaped with a sliding window
in its config; Qwen2 has q/k/v biases and tied embeddings (as Qwen2.5-0.5B/1.5B do). Each shape is
its family record's `Architecture.random_shape` (iceburg/families/).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from ..errors import IceburgError
from ..families import random_model_types, random_shape

logger = logging.getLogger(__name__)

# Real Qwen2.5-0.5B dimensions (its config.json on the Hugging Face hub: hidden_size 896,
# num_hidden_layers 24, num_attention_heads 14, num_key_value_heads 2, intermediate_size 4864,
# vocab_size 151936, tie_word_embeddings true, rope_theta 1e6, rms_norm_eps 1e-6, bf16 weights).
# 494M parameters, ~0.99 GB in F16. Pass `vocab_size=None` to size the vocabulary to the tokenizer.
QWEN25_05B_SHAPE: dict[str, Any] = dict(
    hidden_size=896,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    intermediate_size=4864,
    vocab_size=151936,
    tie_word_embeddings=True,
    max_position_embeddings=32768,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    dtype="bfloat16",
)

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "chat_template.jinja", "chat_template.json", "tokenizer.model", "vocab.json",
                    "merges.txt", "added_tokens.json", "generation_config.json")


def _scale_norm(weight: Any, gain: float) -> None:
    """Multiply a norm's effective gain: a zero-initialised weight is a (1 + weight) norm (Gemma, Qwen3-Next)."""
    if not bool(weight.any()):
        weight.copy_((1 + weight) * gain - 1)
    else:
        weight.mul_(gain)


def _sharpen(model: Any, attention_gain: float, logit_gain: float, qk_norm_gain: float = 1.0) -> None:
    """Multiply the q/k projections by `attention_gain` and the final norm's gain by `logit_gain`.

    At the initialiser's std 0.02 a tiny model attends almost uniformly (q.k scores ~1e-2) and
    its logits are near-flat (top-2 gaps ~1e-2: no position where one token leads by 0.5 nats), so
    a proof that compares next-token choices, or a defect in q/k (row order, RoPE), has nothing to
    see. Scaling only these two keeps every other layer at its initialiser's size (a model whose
    every weight is larger turns chaotic: quantization noise grows through the layers).
    `qk_norm_gain` multiplies per-head q/k norms, where a layer RMS-normalises q and k after the
    projections (the projection gain is then lost) and scores them unscaled (Gemma 4: scaling 1.0,
    so unit-RMS q and k give scores of std ~sqrt(head_dim))."""
    import torch

    cfg = model.config
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                param.mul_(attention_gain)
            elif name.endswith("qkv_proj.weight"):  # Phi-3's fused projection: q and k rows first
                # read only here: a config whose head width differs per layer (Gemma 4) refuses a global head_dim
                head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
                kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
                param[:(cfg.num_attention_heads + kv_heads) * head_dim].mul_(attention_gain)
            elif qk_norm_gain != 1.0 and name.endswith(("q_norm.weight", "k_norm.weight")):
                _scale_norm(param, qk_norm_gain)
        norm = getattr(getattr(model, "model", None), "norm", None)
        if norm is None or getattr(norm, "weight", None) is None:
            logger.warning("random %s: no final norm weight at model.norm; logit_gain not applied", cfg.model_type)
        else:
            _scale_norm(norm.weight, logit_gain)


def build_random_model(arch: str, out_dir: Path, *, tokenizer_dir: Path, seed: int = 0, attention_gain: float = 1.0,
                       logit_gain: float = 1.0, qk_norm_gain: float = 1.0, **shape: Any) -> Path:
    """Save a random-weight `arch` model with the tokenizer of `tokenizer_dir` into `out_dir`.

    `shape` overrides config fields (hidden_size, num_hidden_layers, ..., `dtype` of the saved
    weights: "float32" default, "bfloat16", "float16"; `initializer_range`). `vocab_size` defaults
    to the tokenizer's full length (base vocabulary + added tokens). `attention_gain` and
    `logit_gain` (default 1: the initialiser's weights) sharpen attention and the logits;
    `qk_norm_gain` scales per-head q/k norms (`_sharpen`). Returns `out_dir`.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tiny = random_shape(arch)
    if tiny is None:
        raise IceburgError(f"build_random_model: unknown architecture {arch!r}; choose from "
                           f"{', '.join(random_model_types())} (an architecture's tiny shape is its family "
                           "record's Architecture.random_shape, iceburg/families/)")
    tokenizer_dir, out_dir = Path(tokenizer_dir), Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    fields = {**tiny, **shape}
    dtype = getattr(torch, str(fields.pop("dtype", "float32")))
    if fields.get("vocab_size") is None:
        fields["vocab_size"] = len(tokenizer)
    if fields["vocab_size"] < len(tokenizer):
        raise IceburgError(f"build_random_model: vocab_size {fields['vocab_size']} is smaller than the tokenizer "
                           f"in {tokenizer_dir} ({len(tokenizer)} tokens)")
    rope_theta = fields.pop("rope_theta", 10000.0)
    fields.setdefault("rope_parameters", {"rope_type": "default", "rope_theta": rope_theta})
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        fields.setdefault(key, getattr(tokenizer, key))

    config = AutoConfig.for_model(arch, **fields)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if (attention_gain, logit_gain, qk_norm_gain) != (1.0, 1.0, 1.0):
        _sharpen(model, attention_gain, logit_gain, qk_norm_gain)
    model = model.to(dtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    model.generation_config.save_pretrained(out_dir)
    for name in _TOKENIZER_FILES:
        src = tokenizer_dir / name
        if src.is_file() and name != "generation_config.json":
            shutil.copy2(src, out_dir / name)
    n_params = sum(p.numel() for p in model.parameters())
    (out_dir / "iceburg_random.json").write_text(json.dumps(
        {"arch": arch, "seed": seed, "params": n_params, "dtype": str(dtype).removeprefix("torch."),
         "tokenizer_dir": str(tokenizer_dir)}, indent=2))
    logger.info("random %s model, %.1fM params, saved to %s", arch, n_params / 1e6, out_dir)
    return out_dir
