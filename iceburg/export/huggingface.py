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

from ..errors import ExportError
from .base import (PROVEN, ExportContext, ExporterSpec, ExportResult, atomic_path, check_free_space, failed,
                   not_verified)

logger = logging.getLogger(__name__)


def save_adapter_and_merged(peft_model, tokenizer, run_dir: Path, eos: set[int], base_path: Path | None = None,
                            trust_remote_code: bool = False) -> tuple[Path, Path]:
    """Write `adapter/` (PEFT) and `merged/` (base + LoRA folded in) atomically.

    A QLoRA model is never merged into its 4-bit weights (that would give a lossy NF4 checkpoint
    whose packed tensor names no exporter reads): the saved adapter is merged into the base
    reloaded from `base_path` in float32, and stored in the base checkpoint's own dtype."""
    run_dir = Path(run_dir)
    adapter_dir, merged_dir = run_dir / "adapter", run_dir / "merged"
    with atomic_path(adapter_dir) as tmp:
        peft_model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    merged = merged_model(peft_model, adapter_dir, base_path, trust_remote_code)
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


def merged_model(peft_model, adapter_dir: Path, base_path: Path | None, trust_remote_code: bool = False):
    """The LoRA update folded into full-precision base weights, on CPU."""
    if not _is_quantized(peft_model):
        # merge in the training dtype on CPU: the merged weights are base + B@A * scale
        merged = peft_model.merge_and_unload(safe_merge=True)
        return merged.to("cpu")
    if base_path is None:
        raise ExportError("a QLoRA model can only be merged into its base reloaded in 16/32-bit; "
                          "pass base_path (the base model folder)")
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32, use_safetensors=True,
                                                trust_remote_code=trust_remote_code)
    _copy_grown_embeddings(peft_model.get_base_model(), base)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload(safe_merge=True)
    stored = _checkpoint_dtype(Path(base_path))
    return merged.to(stored) if stored is not None else merged


def _is_quantized(model) -> bool:
    """True when the (PEFT-wrapped) model holds 4-bit or 8-bit bitsandbytes weights."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False)
                or getattr(base.config, "quantization_config", None))


def _copy_grown_embeddings(trained, base) -> None:
    """Rows added to the embeddings for template tokens exist only in the trained model (embeddings
    stay unquantised under QLoRA); give the reloaded base the same rows."""
    n = trained.get_input_embeddings().weight.shape[0]
    if base.get_input_embeddings().weight.shape[0] == n:
        return
    base.resize_token_embeddings(n)
    pairs = [(trained.get_input_embeddings(), base.get_input_embeddings())]
    if not getattr(base.config, "tie_word_embeddings", False) and trained.get_output_embeddings() is not None:
        pairs.append((trained.get_output_embeddings(), base.get_output_embeddings()))
    for src, dst in pairs:
        dst.weight.data.copy_(src.weight.detach().to("cpu", dst.weight.dtype))


def _checkpoint_dtype(base_path: Path):
    """The dtype the base checkpoint was stored in when 16-bit (None: keep float32)."""
    import torch

    cfg = json.loads((base_path / "config.json").read_text(encoding="utf-8"))
    name = cfg.get("dtype") or cfg.get("torch_dtype")
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(name)


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
    report = {"merged": str(dest / "merged"), "bytes": _folder_size(dest)}
    if ctx.verify:
        report["copy_check"] = compare_copy(model_dir, dest / "merged")
        if report["copy_check"]["differ"]:
            raise ExportError(f"huggingface: the copy in {dest / 'merged'} differs from {model_dir}: "
                              f"{report['copy_check']['differ'][:3]}; check the disk and export again")
    return ExportResult(format="huggingface", files=files, report=report)


def compare_copy(src: Path, dest: Path) -> dict:
    """Every file of `src` read back from `dest` and compared byte for byte (the model card is new)."""
    import filecmp

    names = sorted(p.relative_to(src) for p in Path(src).rglob("*") if p.is_file())
    differ = [str(n) for n in names if n != Path("README.md") and not filecmp.cmp(src / n, dest / n, shallow=False)]
    return {"files": len(names), "differ": differ, "rule": "every file of the merged model equal byte for byte"}


def _status(report: dict) -> str:
    check = report.get("copy_check")
    if check is None:
        return not_verified("verification turned off")
    return failed(f"{len(check['differ'])} files differ") if check["differ"] else PROVEN


SPEC = ExporterSpec(
    name="huggingface", order=0, module="iceburg.export.huggingface", options=(),
    headline=lambda rep: f"{rep.get('bytes', 0) / 2**20:.0f} MiB" if rep.get("bytes") else "",
    status=_status, summary="the merged model (safetensors, tokenizer, card) and the LoRA adapter, read back")
