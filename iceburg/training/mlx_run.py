"""The SFT recipe's training phase on the MLX backend (`--backend mlx`, iceburg/recipes/sft.py): same
prepared data, plan, step order and callbacks (metrics.jsonl) as torch; the adapter comes back as
a torch PEFT model, so saving, merging and every export are the torch path's own
(`iceburg.recipes.run.finish_run`). The recipe opens the run folder and passes its scratch folder
(`RunFolder.mlx_work`) and its metrics callbacks."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ..config import TrainingConfig
from ..errors import IceburgError

logger = logging.getLogger(__name__)


def train_on_mlx(base_path: Path, cfg: TrainingConfig, plan, work: Path, args, train_examples: list,
                 eval_examples: list, order_fn, added_tokens: bool, callbacks) -> tuple[object, float, object]:
    """(torch PEFT model holding the trained adapter, eval loss before, TrainOutput); `work` is a
    scratch folder (the MLX weights and adapter), removed at the end."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from .mlx_backend import _mlx, apply_lora_mlx, load_mlx_model, save_peft_adapter
    from .mlx_trainer import evaluate_mlx, train_mlx

    mx = _mlx()  # first: binds OpenBLAS on Linux before mlx loads (mlx_backend.preload_openblas)

    if added_tokens:
        raise IceburgError(f"--backend mlx: the base {base_path} has no chat template, so iceburg adds "
                           "template tokens and grows the embeddings, which the MLX backend does not do; "
                           "use --backend torch")
    try:
        mx.random.seed(cfg.seed)
        model = apply_lora_mlx(load_mlx_model(base_path, work, plan.precision), plan.lora_r, plan.lora_alpha,
                               list(plan.lora_target_modules), cfg.lora_dropout, cfg.use_rslora)
        eval_before = evaluate_mlx(model, eval_examples, args)
        logger.info("eval loss before training (mlx): %.4f", eval_before)
        out = train_mlx(model, train_examples, order_fn, eval_examples, args, callbacks=list(callbacks))
        adapter = save_peft_adapter(model, work / "adapter", plan.lora_r, plan.lora_alpha,
                                    list(plan.lora_target_modules), cfg.use_rslora, base_path)
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32, use_safetensors=True,
                                                    trust_remote_code=cfg.trust_remote_code)
        peft_model = PeftModel.from_pretrained(base, adapter)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return peft_model, eval_before, out
