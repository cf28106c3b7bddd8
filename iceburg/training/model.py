"""Load the tokenizer and the model for training, and apply LoRA.

Safetensors only (never unpickle), no remote code unless the user asks for it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..config import TrainingConfig
from ..errors import IceburgError, MissingDependencyError

logger = logging.getLogger(__name__)


def load_tokenizer(path: Path, cfg: TrainingConfig):
    """The base's fast tokenizer (offsets are needed for assistant-only masking)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    if not getattr(tokenizer, "is_fast", False):
        raise IceburgError(f"{path}: a fast (Rust) tokenizer is needed for assistant-only masking "
                           "(offsets); add tokenizer.json to the folder")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def generation_config(path: Path):
    """The base's generation config (its EOS ids), or None when the folder has none."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(path)
    except OSError:  # no generation_config.json: the tokenizer's EOS is used
        return None


def load_model(path: Path, cfg: TrainingConfig, plan=None):
    """The model from a local HF folder; safetensors only, no remote code by default.

    QLoRA (plan.use_qlora) loads the base in 4-bit NF4 with bitsandbytes; otherwise the base loads
    in the planned precision (fp32 on CPU).
    """
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if not any(path.glob("*.safetensors")):
        raise IceburgError(f"base model folder {path} has no .safetensors weights; iceburg never "
                           "unpickles .bin files. Convert it with safetensors or use another base")
    torch.manual_seed(cfg.seed)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(getattr(plan, "precision", "fp32"), torch.float32)
    kwargs: dict[str, Any] = {}
    if plan is not None and getattr(plan, "use_qlora", False):
        kwargs = qlora_load_kwargs(plan.device, dtype)
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=cfg.trust_remote_code,
                                                 use_safetensors=True, dtype=dtype,
                                                 attn_implementation=None if cfg.attn_implementation == "auto"
                                                 else cfg.attn_implementation, **kwargs)
    if kwargs:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=bool(getattr(plan, "gradient_checkpointing", False)))
    return model


def qlora_load_kwargs(device: str, compute_dtype) -> dict[str, Any]:
    """`from_pretrained` arguments for a 4-bit NF4 base with double quantisation (QLoRA's recipe,
    Dettmers et al. 2023, section 3). The matmuls run in the planned precision: bf16 on GPUs that
    have it, fp32 on CPU (bitsandbytes 0.50.2 runs NF4 layers on CPU; STACK.md)."""
    try:
        from transformers import BitsAndBytesConfig
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError("bitsandbytes (for QLoRA, --qlora)", "pip install 'iceburg[qlora]'") from e
    return {"quantization_config": BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=compute_dtype),
            "device_map": {"": 0} if device == "cuda" else {"": device}}


def apply_lora(model, plan, cfg: TrainingConfig):
    import torch
    from peft import LoraConfig, TaskType, get_peft_model

    if plan.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    torch.manual_seed(cfg.seed)
    # Default targets leave out what the family record excludes by name (MoE routers, linear-attention
    # blocks: iceburg/families/, docs/families.md); targets the user names are taken as given.
    from ..families import lora_exclude_regex

    exclude = None if cfg.lora_target_modules else lora_exclude_regex(getattr(model.config, "model_type", None))
    lcfg = LoraConfig(r=plan.lora_r, lora_alpha=plan.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(plan.lora_target_modules) or "all-linear", bias="none",
                      task_type=TaskType.CAUSAL_LM, use_dora=cfg.use_dora, use_rslora=cfg.use_rslora,
                      exclude_modules=exclude)
    model = get_peft_model(model, lcfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("%s r=%d alpha=%d%s on %s: %d trainable of %d parameters (%.2f%%)",
                "DoRA" if cfg.use_dora else "LoRA", plan.lora_r, plan.lora_alpha,
                " (rsLoRA scaling)" if cfg.use_rslora else "", lcfg.target_modules, trainable, total,
                100 * trainable / total)
    return model


def build_model(path: Path, cfg: TrainingConfig, plan, tokenizer, added_tokens: bool):
    """Base model in the planned precision, embeddings grown for added template tokens, LoRA on,
    placed on the planned device."""
    model = load_model(path, cfg, plan)
    if added_tokens and len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    model = apply_lora(model, plan, cfg)
    if not plan.use_qlora:  # 4-bit weights are placed on the planned device as they load
        model.to(plan.device)
    return model
