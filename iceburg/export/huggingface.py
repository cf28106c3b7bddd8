"""Hugging Face export: LoRA adapter, merged model (safetensors, tokenizer, chat template,
generation config with the end-of-turn EOS) and a model card.

`save_adapter_and_merged` runs at the end of training; `export` works on any HF folder (a run's
`merged/` or a plain model folder) for `--export-only ... --formats huggingface`.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from .base import ExportContext, ExportResult, atomic_path, check_free_space

logger = logging.getLogger(__name__)


def save_adapter_and_merged(peft_model, tokenizer, run_dir: Path, eos: set[int]) -> tuple[Path, Path]:
    """Write `adapter/` (PEFT) and `merged/` (base + LoRA folded in) atomically."""
    import torch

    run_dir = Path(run_dir)
    adapter_dir, merged_dir = run_dir / "adapter", run_dir / "merged"
    with atomic_path(adapter_dir) as tmp:
        peft_model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    # merge on CPU in float32 so the merged weights equal base + B@A * scale exactly enough
    merged = peft_model.merge_and_unload(safe_merge=True)
    merged.to("cpu")
    if hasattr(merged, "gradient_checkpointing_disable"):
        merged.gradient_checkpointing_disable()
    gen = merged.generation_config
    ids = sorted(eos)
    gen.eos_token_id = ids if len(ids) > 1 else ids[0]
    if tokenizer.pad_token_id is not None:
        gen.pad_token_id = tokenizer.pad_token_id
    merged.config.use_cache = True
    with atomic_path(merged_dir) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return adapter_dir, merged_dir


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def model_card(model_dir: Path, ctx: ExportContext) -> str:
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    info = ctx.run_info or {}
    lines = [
        "---", "library_name: transformers", "tags: [iceburg, lora]",
        f"base_model: {json.dumps(ctx.base_model or 'unknown')}", "---", "",
        f"# {ctx.name}", "",
        f"Fine-tuned by iceburg as **{ctx.model_type.value}**.", "",
        f"- Base model: `{ctx.base_model or 'unknown'}`",
        f"- Architecture: `{', '.join(cfg.get('architectures', []))}`",
        f"- System prompt: {ctx.system}",
    ]
    if "eval_loss_before" in info:
        lines += [f"- Eval loss (held-out, assistant tokens): {info['eval_loss_before']:.4f} before, "
                  f"{info['eval_loss_after']:.4f} after training",
                  f"- Train loss (mean): {info.get('train_loss', float('nan')):.4f}"]
    if "data" in info:
        lines += ["", "## Data", "", "```json", json.dumps(info["data"], indent=2, default=str), "```"]
    if "config" in info:
        lines += ["", "## Training configuration", "", "```json",
                  json.dumps(info["config"], indent=2, default=str), "```"]
    return "\n".join(lines) + "\n"


def export(model_dir: Path, out_dir: Path, ctx: ExportContext) -> ExportResult:
    """Copy the merged HF folder (and the adapter, if any) into `out_dir/huggingface` with a card."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists() or not any(model_dir.glob("*.safetensors")):
        from ..errors import ExportError

        raise ExportError(f"{model_dir} is not a Hugging Face model folder with safetensors weights")
    dest = Path(out_dir) / "huggingface"
    check_free_space(Path(out_dir), _folder_size(model_dir), "huggingface export")
    files: list[Path] = []
    with atomic_path(dest / "merged") as tmp:
        shutil.copytree(model_dir, tmp)
        (tmp / "README.md").write_text(model_card(model_dir, ctx), encoding="utf-8")
    files.append(dest / "merged")
    if ctx.adapter_dir is not None and Path(ctx.adapter_dir).exists():
        with atomic_path(dest / "adapter") as tmp:
            shutil.copytree(ctx.adapter_dir, tmp)
        files.append(dest / "adapter")
    return ExportResult(format="huggingface", files=files,
                        report={"merged": str(dest / "merged"), "bytes": _folder_size(dest)})
