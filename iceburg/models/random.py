"""Random-weight Hugging Face models shaped like real ones, for tests and benchmarks.

`build_random_model("qwen2", out, tokenizer_dir=tok)` writes a plain HF folder (config.json,
model.safetensors, the tokenizer files copied from `tokenizer_dir`) that every stage can load as
if it were a downloaded base. Nothing is downloaded: the weights come from the architecture's own
initialiser under a fixed seed, so two builds with the same arguments are bit-identical.

The default shapes are tiny (seconds to build) but keep each architecture's distinguishing
features: Llama has untied embeddings and no biases; Mistral is Llama-shaped with a sliding window
in its config; Qwen2 has q/k/v biases and tied embeddings (as Qwen2.5-0.5B/1.5B do).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from ..errors import IceburgError

logger = logging.getLogger(__name__)

SUPPORTED_ARCHS = ("llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gemma3_text")

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

# Tiny defaults: every 2-D weight has a row length divisible by 32 (Q8_0/Q4_0 block size) and
# head_dim 16, so all in-process GGUF types apply to every matrix.
_TINY: dict[str, dict[str, Any]] = {
    "llama": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=128, tie_word_embeddings=False, max_position_embeddings=512,
                  rope_theta=10000.0, rms_norm_eps=1e-5),
    "mistral": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                    intermediate_size=128, tie_word_embeddings=False, max_position_embeddings=512,
                    rope_theta=10000.0, rms_norm_eps=1e-5, sliding_window=4096),
    "qwen2": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=128, tie_word_embeddings=True, max_position_embeddings=512,
                  rope_theta=1000000.0, rms_norm_eps=1e-6),
    # Qwen3: q/k RMSNorm per head, explicit head_dim, tied embeddings (as Qwen3-0.6B).
    "qwen3": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                  intermediate_size=128, tie_word_embeddings=True, max_position_embeddings=512,
                  rope_theta=1000000.0, rms_norm_eps=1e-6),
    # Phi-3: fused qkv_proj and gate_up_proj, no GQA (as Phi-3.5-mini: 32 heads, 32 KV heads).
    "phi3": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                 intermediate_size=128, tie_word_embeddings=False, max_position_embeddings=512,
                 rope_theta=10000.0, rms_norm_eps=1e-5),
    # Gemma 2: (1 + w) RMSNorms before and after attention and MLP, embeddings scaled by
    # sqrt(hidden), attention and final logit soft-capping (50, 30), sliding window on every other
    # layer (4096), query scale 1/sqrt(head_dim) (gemma-2-2b/9b; 27B differs), tied embeddings.
    "gemma2": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                   intermediate_size=128, tie_word_embeddings=True, max_position_embeddings=512,
                   rope_theta=10000.0, rms_norm_eps=1e-6, query_pre_attn_scalar=16,
                   attn_logit_softcapping=50.0, final_logit_softcapping=30.0, sliding_window=4096),
    # Gemma 3 (text): (1 + w) norms incl. per-head q/k norms, no soft-capping, five sliding layers
    # then one global (as gemma-3-270m's layer_types), global RoPE base 1e6 and local 1e4 (its
    # config). The window is 16 here so the proof's ~60-token prompts cross it (270M: 512).
    "gemma3_text": dict(hidden_size=64, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
                        intermediate_size=128, tie_word_embeddings=True, max_position_embeddings=512,
                        rms_norm_eps=1e-6, query_pre_attn_scalar=16, sliding_window=16,
                        layer_types=["sliding_attention"] * 5 + ["full_attention"],
                        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                                         "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}),
}

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "chat_template.jinja", "chat_template.json", "tokenizer.model", "vocab.json",
                    "merges.txt", "added_tokens.json", "generation_config.json")


def build_random_model(arch: str, out_dir: Path, *, tokenizer_dir: Path, seed: int = 0, **shape: Any) -> Path:
    """Save a random-weight `arch` model with the tokenizer of `tokenizer_dir` into `out_dir`.

    `shape` overrides config fields (hidden_size, num_hidden_layers, ..., `dtype` of the saved
    weights: "float32" default, "bfloat16", "float16"; `initializer_range`). `vocab_size` defaults
    to the tokenizer's full length (base vocabulary + added tokens). Returns `out_dir`.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if arch not in SUPPORTED_ARCHS:
        raise IceburgError(f"build_random_model: unknown architecture {arch!r}; choose from {', '.join(SUPPORTED_ARCHS)}")
    tokenizer_dir, out_dir = Path(tokenizer_dir), Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    fields = {**_TINY[arch], **shape}
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
