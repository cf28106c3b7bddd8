"""The hardware table: what the product planner picks for 1B-14B bases on the machines people use.

    .venv/bin/python bench/hardware_table.py            # writes bench/results/hardware_table.{md,json}
    .venv/bin/python bench/hardware_table.py --only llama-3.2-1b:cpu-24
    .venv/bin/python bench/hardware_table.py --measured  # the measured 1B/3B/7B-QLoRA cells -> hardware_measured.md

Each model is a config-only folder (config.json, no weights) at its published shape; each machine
is an injected `SystemDescription` (the same way tests/hardware describe a 16 GB Mac or a 24 GB
RTX 4090). The planner is `iceburg.hardware.plan_training`, the code `iceburg-train
--detect-hardware --base-model FOLDER` and every training run use; nothing here re-implements it.

Beside each plan: the minimum-memory verdict of the docs' "Hardware recommendations" table
(micro-batch 1, checkpointing, `bench/memory_planner.py --recommendations`), and whether the two
agree. The original design's (seed's) own table of recommendations is not in this repository, its
git history or the issue texts (issue 26 names its columns only), so it cannot be compared here.
The plans are estimates; the estimator was measured on CPU at these 1B/3B shapes (and one 7B QLoRA
cell) by bench/memory_planner.py, which `--measured` tabulates with measured seconds per step.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers import AutoConfig  # noqa: E402

from iceburg.config import ModelType, TrainingConfig  # noqa: E402
from iceburg.errors import IceburgError  # noqa: E402
from iceburg.families.published import published_shape  # noqa: E402
from iceburg.hardware import CudaDevice, MpsDevice, SystemDescription, describe_hardware, plan_training  # noqa: E402
from iceburg.hardware.memory import estimate_training_memory  # noqa: E402
from iceburg.hardware.model_shape import read_model_shape  # noqa: E402
from iceburg.hardware.planner import MEMORY_HEADROOM, recommend_lora, resolve_targets  # noqa: E402

GIB = 2**30
RESULTS = Path(__file__).parent / "results"

# Published shapes from the family registry (iceburg/families/published.py: config.json values of
# each instruct repo; the same as the base repos'), the shapes `--detect-hardware --base-model TAG`
# plans from when the model is not on the machine.
MODELS = {name: published_shape(repo) for name, repo in {
    "llama-3.2-1b": "meta-llama/Llama-3.2-1B-Instruct", "llama-3.2-3b": "meta-llama/Llama-3.2-3B-Instruct",
    "qwen2.5-7b": "Qwen/Qwen2.5-7B-Instruct", "mistral-7b-v0.3": "mistralai/Mistral-7B-Instruct-v0.3",
    "qwen2.5-14b": "Qwen/Qwen2.5-14B-Instruct"}.items()}


def _mac(ram_gib: int) -> SystemDescription:
    # Metal's recommendedMaxWorkingSetSize, as commonly reported by llama.cpp/MLX logs: about 2/3 of
    # unified memory up to 36 GB (10.67 GiB on a 16 GB Mac, the value tests/hardware uses), about 3/4
    # above. An assumption, not read from a Mac here; `--detect-hardware` on a Mac shows the real one.
    working = ram_gib * (2 / 3 if ram_gib <= 36 else 3 / 4)
    return SystemDescription("Darwin", "arm64", f"M-series {ram_gib} GB", 10, ram_gib * GIB, int(ram_gib * 0.7 * GIB),
                             "2.13.0", mps=MpsDevice(int(working * GIB), 0, (14, 5)),
                             packages={"mlx": False, "bitsandbytes": False})


def _cuda(name: str, total_gib: float, free_gib: float, capability: tuple[int, int]) -> SystemDescription:
    return SystemDescription("Linux", "x86_64", "host CPU", 16, 64 * GIB, 60 * GIB, "2.13.0", cuda_version="12.8",
                             cuda_devices=[CudaDevice(name, int(total_gib * GIB), int(free_gib * GIB), capability)],
                             packages={"mlx": False, "bitsandbytes": True})


# Machines of the seed's target range (Apple unified memory, a 24 GB and an 80 GB CUDA card, this
# 24 GB CPU box). CUDA free memory: total minus ~0.5 GiB CUDA context (driver's mem_get_info).
MACHINES = {
    "mac-16": _mac(16), "mac-24": _mac(24), "mac-32": _mac(32), "mac-64": _mac(64), "mac-128": _mac(128),
    "cuda-24": _cuda("NVIDIA GeForce RTX 4090", 24, 23.5, (8, 9)),
    "cuda-80": _cuda("NVIDIA A100 80GB", 80, 79.3, (8, 0)),
    # this 2-core Xeon: 23.5 GiB RAM; 20 GiB available is a typical idle reading here
    "cpu-24": SystemDescription("Linux", "x86_64", "Intel Xeon (2 cores)", 2, int(23.5 * GIB), 20 * GIB, "2.13.0",
                                packages={"mlx": False, "bitsandbytes": True}),
}


def model_folder(name: str, root: Path) -> Path:
    """A config-only folder for `name` (what the planner reads; no weights)."""
    folder = root / name
    if not (folder / "config.json").is_file():
        AutoConfig.for_model(**MODELS[name]).save_pretrained(folder)
    return folder


def minimum_verdict(folder: Path, hw, config: TrainingConfig) -> dict:
    """The minimum-memory table's verdict for this machine: micro-batch 1, checkpointing, at the
    device's best precision, full weights and (where the planner may use it) QLoRA."""
    shape = read_model_shape(folder)
    r, _ = recommend_lora(config.model_type, shape)
    targets = resolve_targets(shape, config.lora_target_modules)
    budget = hw.available_memory * MEMORY_HEADROOM
    out = {}
    for qlora in (False, True):
        est = estimate_training_memory(shape, micro_batch=1, seq_len=config.max_seq_length,
                                       precision=hw.best_precision(), lora_r=r, targets=targets,
                                       gradient_checkpointing=True, qlora=qlora, device_kind=hw.device_kind)
        out["qlora" if qlora else "lora"] = {"min_gib": round(est.training_bytes / GIB, 2),
                                             "fits": est.training_bytes <= budget}
    out["qlora"]["allowed"] = hw.bitsandbytes_available and hw.device_kind in ("cuda", "cpu")
    return out


def cell(model: str, machine: str, root: Path, config: TrainingConfig) -> dict:
    """The planner's choice (or refusal) for one model x machine, beside the minimum table's verdict."""
    folder = model_folder(model, root)
    hw = describe_hardware(MACHINES[machine])
    row = {"model": model, "machine": machine, "device": hw.device_kind,
           "available_gib": round(hw.available_memory / GIB, 2), "seq_len": config.max_seq_length}
    minimum = minimum_verdict(folder, hw, config)
    try:
        plan = plan_training(folder, config, hw)
    except IceburgError as e:
        row.update(fits=False, refusal=str(e).splitlines()[0][:300])
    else:
        row.update(fits=True, precision=plan.precision, micro_batch=plan.micro_batch_size,
                   grad_accum=plan.gradient_accumulation_steps, checkpointing=plan.gradient_checkpointing,
                   method="QLoRA" if plan.use_qlora else "LoRA", lora_r=plan.lora_r,
                   allocator=plan.cpu_allocator or None, peak_gib=round(plan.expected_peak_bytes / GIB, 2),
                   params_b=round(plan.model["param_count"] / 1e9, 2))
    row["minimum"] = minimum
    row["agree"], row["why"] = _agreement(row, minimum)
    return row


def _agreement(row: dict, minimum: dict) -> tuple[bool, str]:
    lora, qlora = minimum["lora"], minimum["qlora"]
    table_fits = lora["fits"] or (qlora["fits"] and qlora["allowed"])
    if table_fits != row["fits"]:
        return False, f"minimum table says {'fits' if table_fits else 'does not fit'}, planner the opposite"
    if not row["fits"]:
        return True, (f"both: does not fit (LoRA needs {lora['min_gib']} GiB"
                      + (f", QLoRA {qlora['min_gib']} GiB" if qlora["allowed"] else ", no QLoRA on this device")
                      + f", budget {MEMORY_HEADROOM:g} x available)")
    wants_qlora = not lora["fits"]
    if wants_qlora != (row["method"] == "QLoRA"):
        return False, f"minimum table implies {'QLoRA' if wants_qlora else 'LoRA'}, planner chose {row['method']}"
    return True, (f"both: fits with {row['method']} (minimum {minimum['qlora' if wants_qlora else 'lora']['min_gib']} "
                  f"GiB at micro-batch 1 + checkpointing; planner's peak {row['peak_gib']} GiB)")


def _plan_text(r: dict) -> str:
    if not r["fits"]:
        return "does not fit"
    ckpt = "ckpt" if r["checkpointing"] else "no ckpt"
    alloc = f", {r['allocator']}" if r.get("allocator") else ""
    return (f"{r['method']} r{r['lora_r']}, {r['precision']}, {r['micro_batch']} x {r['grad_accum']}, "
            f"{ckpt}{alloc}, peak {r['peak_gib']} GiB")


def markdown(rows: list[dict], config: TrainingConfig) -> str:
    lines = [f"# Hardware table: the planner's choice per model x machine ({config.max_seq_length} tokens, "
             f"model type {config.model_type.value}, effective batch 16)", "",
             "Estimates from `iceburg.hardware.plan_training` on config-only folders of the published shapes and "
             "injected machine descriptions; not measured on those machines. The planner is validated within "
             "+-15% of measured peak RSS on CPU only (docs/hardware.md).", "",
             "| model | machine | available (GiB) | planner: method, precision, micro x accum, checkpointing, peak "
             "| minimum table: LoRA / QLoRA min (GiB) | agree | why |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["minimum"]
        q = f"{m['qlora']['min_gib']}" if m["qlora"]["allowed"] else f"({m['qlora']['min_gib']}, not on {r['device']})"
        lines.append(f"| {r['model']} | {r['machine']} ({r['device']}) | {r['available_gib']} | {_plan_text(r)} "
                     f"| {m['lora']['min_gib']} / {q} | {'yes' if r['agree'] else 'NO'} | {r['why']} |")
    return "\n".join(lines) + "\n"


def build(cells: list[tuple[str, str]], config: TrainingConfig | None = None) -> list[dict]:
    config = config or TrainingConfig(model_type=ModelType.BASE)
    with tempfile.TemporaryDirectory(prefix="iceburg-hwtable-") as tmp:
        return [cell(model, machine, Path(tmp), config) for model, machine in cells]


MEASURED = RESULTS / "memory_planner_hardware_measured.json"  # bench/memory_planner.py --name hardware_measured


def measured_rows(path: Path = MEASURED) -> list[dict]:
    """The measured 1B/3B cells (bench/memory_planner.py runs of the same published shapes, random
    weights): estimate vs measured peak, measured vs estimated seconds per step, and the seed table's
    "3 epochs of 1,000 samples" at the measured speed (full-length records, as hardware/timing.py)."""
    from iceburg.hardware.timing import SEED_EPOCHS, SEED_RECORDS

    out = []
    for r in json.loads(path.read_text())["rows"]:
        tokens = r["micro_batch"] * r["seq_len"]
        tok_s = tokens / r["step_times"][-1]  # the last step: AdamW's states exist, allocator warm
        seed_tokens = SEED_EPOCHS * SEED_RECORDS * r["seq_len"]
        est = r.get("time_estimate") or {}
        out.append({"model": r["shape"], "params_b": round(r["params_m"] / 1e3, 2), "micro_batch": r["micro_batch"],
                    # rows from before the bench reset VmHWM after the load measured the whole process
                    # (their peak is the steps' where it lies above the load's high-water mark)
                    "measured_what": "steps" if r.get("steps_peak_rss") or r["peak_rss"] > r["load_rss"]
                    else "whole process (load included)",
                    "seq_len": r["seq_len"], "checkpointing": r["grad_ckpt"],
                    "method": "QLoRA" if r.get("qlora") else "LoRA", "lora_r": r["lora_r"], "allocator": r["allocator"],
                    "estimate_gib": round(r["estimated_gib"], 2), "measured_gib": round(r["measured_gib"], 2),
                    "error_pct": round(r["error_pct"], 1), "load_peak_gib": round(r["load_rss"] / GIB, 2),
                    "step_s": r["step_times"][-1], "step_s_estimated": est.get("seconds_per_step"),
                    "step_s_error_pct": round(r["step_s_error_pct"]) if "step_s_error_pct" in r else None,
                    "matmul_gflops": est.get("matmul_gflops"), "tokens_per_s": round(tok_s, 1),
                    "seed_table_hours": round(seed_tokens / tok_s / 3600, 1),
                    "seed_table_hours_estimated": round(seed_tokens / est["tokens_per_s"] / 3600, 1) if est else None,
                    "threads": r.get("threads"), "load_average": round(r["loadavg"][0], 2)})
    return out


def measured_markdown(rows: list[dict]) -> str:
    lines = ["# Hardware table, measured cells (this CPU box): planner vs measured peak RSS and seconds per step", "",
             f"From {MEASURED.relative_to(RESULTS.parent.parent)} (bench/memory_planner.py, random weights at the "
             "published shapes, the trainer's CPU loss path, 2 optimizer steps of one micro-batch each). "
             "Measured: the training steps' peak RSS (VmHWM reset after the load), or the whole process where marked *. "
             "Seed column: 3 epochs of 1,000 records of the cell's length at the measured (estimated) tokens/s.", "",
             "| model | method | micro x tokens | ckpt | allocator | estimate (GiB) | measured (GiB) | error "
             "| load peak (GiB) | s/step measured | s/step estimated (error) | tok/s | 3 x 1,000 records: measured "
             "(estimated) | threads | load avg |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        est = (f"{r['step_s_estimated']:.1f} ({r['step_s_error_pct']:+d}%)" if r["step_s_estimated"] is not None
               else "not estimated (QLoRA)")
        seed = f"{r['seed_table_hours']} h" + (f" ({r['seed_table_hours_estimated']} h)"
                                               if r["seed_table_hours_estimated"] else "")
        lines.append(f"| {r['model']} | {r['method']} r{r['lora_r']} | {r['micro_batch']} x {r['seq_len']} | "
                     f"{'yes' if r['checkpointing'] else 'no'} | {r['allocator']} | {r['estimate_gib']} | "
                     f"{r['measured_gib']}{'' if r['measured_what'] == 'steps' else ' *'} | {r['error_pct']:+.1f}% | "
                     f"{r['load_peak_gib']} | {r['step_s']:.1f} | {est} | "
                     f"{r['tokens_per_s']} | {seed} | {r['threads']} | {r['load_average']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None, help="MODEL:MACHINE cells (default: all)")
    ap.add_argument("--max-seq-length", type=int, default=1024)
    ap.add_argument("--measured", action="store_true", help="only the measured 1B/3B table from "
                    "bench/results/memory_planner_hardware_measured.json -> bench/results/hardware_measured.{md,json}")
    args = ap.parse_args()
    if args.measured:
        rows = measured_rows()
        (RESULTS / "hardware_measured.md").write_text(measured_markdown(rows))
        (RESULTS / "hardware_measured.json").write_text(json.dumps(rows, indent=1) + "\n")
        return print(measured_markdown(rows))
    cells = ([tuple(c.split(":")) for c in args.only] if args.only
             else [(m, k) for m in MODELS for k in MACHINES])
    config = TrainingConfig(model_type=ModelType.BASE, max_seq_length=args.max_seq_length)
    rows = build(cells, config)
    text = markdown(rows, config)
    if not args.only:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "hardware_table.md").write_text(text)
        (RESULTS / "hardware_table.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
