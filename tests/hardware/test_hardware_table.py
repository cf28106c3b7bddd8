"""The hardware table (bench/hardware_table.py, docs/hardware.md "Hardware table"): the product
planner on config-only folders of published 1B-14B shapes and injected machines. A few cells whose
answer follows from arithmetic anyone can check, so a planner or estimate change that breaks them
shows here, not in a user's out-of-memory error."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "hardware_table.py"
GIB = 2**30


@pytest.fixture(scope="module")
def table():
    spec = importlib.util.spec_from_file_location("hardware_table_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_14b_needs_qlora_so_a_16gb_mac_is_refused_and_a_24gb_card_takes_qlora(table):
    """Qwen2.5-14B has 14.77B parameters: 27.5 GiB in bf16 before anything else, so no 16 GB Mac
    (10.67 GiB working set) can hold it, and MPS has no bitsandbytes 4-bit; a 24 GB CUDA card only
    holds it as NF4 (4.127 bits/parameter, ~7.6 GiB). The planner must refuse the first and choose
    QLoRA (not LoRA) on the second, with a peak inside its 85% budget."""
    mac, cuda = table.build([("qwen2.5-14b", "mac-16"), ("qwen2.5-14b", "cuda-24")])
    assert not mac["fits"] and "does not fit" in mac["refusal"]
    assert mac["agree"], mac["why"]
    assert cuda["fits"] and cuda["method"] == "QLoRA" and cuda["precision"] == "bf16"
    # 0.85: the planner's MEMORY_HEADROOM; the plan may use that share of the free memory
    assert cuda["peak_gib"] <= 0.85 * cuda["available_gib"]
    # the plan's peak can't be below the minimum-memory setting (micro-batch 1, checkpointing)
    assert cuda["peak_gib"] >= cuda["minimum"]["qlora"]["min_gib"]
    assert cuda["agree"], cuda["why"]


def test_1b_fits_on_this_24gb_cpu_box_in_fp32_without_qlora(table):
    """Llama-3.2-1B (1.24B parameters, ~4.6 GiB fp32 weights) on a 24 GiB CPU box with 20 GiB free:
    full-precision LoRA fits, so the planner must not reach for 4-bit (QLoRA is its last resort),
    and CPU training stays fp32 (HardwareInfo.best_precision)."""
    (row,) = table.build([("llama-3.2-1b", "cpu-24")])
    assert row["fits"] and row["method"] == "LoRA" and row["precision"] == "fp32"
    assert 1.2 < row["params_b"] < 1.3  # the published shape: 1.24B with tied embeddings
    assert row["peak_gib"] <= 0.85 * row["available_gib"]
    assert row["agree"], row["why"]


def test_the_table_is_what_detect_hardware_base_model_answers(table, tmp_path):
    """The table must be the product's answer, not a re-implementation: `iceburg-train
    --detect-hardware --base-model FOLDER --json` (reports.hardware_report) on the same injected
    24 GB CUDA machine gives the same settings and peak for the Qwen2.5-14B shape."""
    import json

    from iceburg.config import ModelType, TrainingConfig
    from iceburg.hardware import describe_hardware
    from iceburg.reports import hardware_report

    folder = table.model_folder("qwen2.5-14b", tmp_path)
    (row,) = table.build([("qwen2.5-14b", "cuda-24")])
    config = TrainingConfig(base_model=str(folder), model_type=ModelType.BASE)
    plan = json.loads(hardware_report(as_json=True, hw=describe_hardware(table.MACHINES["cuda-24"]),
                                      config=config))["plan"]
    assert plan["fits"] and plan["use_qlora"] == (row["method"] == "QLoRA")
    assert (plan["micro_batch_size"], plan["gradient_accumulation_steps"], plan["gradient_checkpointing"]) == \
        (row["micro_batch"], row["grad_accum"], row["checkpointing"])
    assert round(plan["expected_peak_bytes"] / table.GIB, 2) == row["peak_gib"]


MEASURED = Path(__file__).resolve().parents[2] / "bench" / "results" / "memory_planner_hardware_measured.json"


def test_the_planner_is_within_15pct_of_the_measured_1b_3b_runs(table, tmp_path):
    """docs/hardware.md "Measured on this machine": LoRA and QLoRA steps of the published Llama-3.2
    1B/3B shapes (random weights, the trainer's CPU loss path) were measured on the project's 2-core
    Xeon (bench/memory_planner.py --name hardware_measured; 10-17 minutes per run, so not rerun here).
    The current planner, run now on config-only folders with each cell's settings, must still be
    within +-15% (issue 26's bound) of every training-step peak measured there; a planner change that
    drifts at 1B/3B fails here against real measurements, not only against the SmolLM2 cell."""
    import json

    from transformers import AutoConfig

    from iceburg.hardware.memory import estimate_training_memory
    from iceburg.hardware.model_shape import read_model_shape

    rows = []
    for r in json.loads(MEASURED.read_text())["rows"]:
        # the steps' own peak; rows from before the bench reset VmHWM after the load count only where
        # the whole-process peak came after the load (above the load's high-water mark)
        r["steps_peak"] = r.get("steps_peak_rss") or (r["peak_rss"] if r["peak_rss"] > r["load_rss"] else None)
        if r["steps_peak"]:
            rows.append(r)
    shapes = {r["shape"] for r in rows}
    assert {"llama-3.2-1b", "llama-3.2-3b"} <= shapes  # both sizes, LoRA and QLoRA, were measured
    assert any(r["qlora"] for r in rows) and any(not r["qlora"] for r in rows)
    for name in shapes:
        AutoConfig.for_model(**table.MODELS[name]).save_pretrained(tmp_path / name)
    for r in rows:
        shape = read_model_shape(tmp_path / r["shape"])
        est = estimate_training_memory(shape, micro_batch=r["micro_batch"], seq_len=r["seq_len"], precision="fp32",
                                       lora_r=r["lora_r"], targets=shape.linear_names,
                                       gradient_checkpointing=r["grad_ckpt"], qlora=r["qlora"], device_kind="cpu",
                                       supervised_fraction=0.5)  # the bench's share (memory_planner.py)
        predicted = est.glibc_total if r["allocator"] == "glibc default" else est.total
        error = 100 * (predicted - r["steps_peak"]) / r["steps_peak"]
        # 15: issue 26's bound for every validated cell
        assert abs(error) <= 15, (r["shape"], r["micro_batch"], r["seq_len"], r["grad_ckpt"], r["qlora"], error)



def test_the_cpu_time_estimate_against_the_measured_1b_3b_steps():
    """`--detect-hardware`'s seconds per step (hardware/timing.py) against the 1B/3B training steps
    bench/memory_planner.py measured on the 2-core Xeon, each row with the matmul probe taken just
    before it (bench/results/memory_planner_hardware_measured.json). Bound 35%: the probe itself read
    241-384 GFLOP/s within that quiet sitting (+-23% around its mean), so no probe-based estimate is
    closer; before the recalibration these rows were +60%..+196% off, which fails here."""
    import json
    from pathlib import Path

    from iceburg.hardware.timing import estimate_cpu_time

    rows = json.loads((Path(__file__).parents[2] / "bench/results/memory_planner_hardware_measured.json")
                      .read_text())["rows"]
    checked = 0
    for r in rows:
        if r["threads"] != 2 or not r.get("time_estimate"):
            continue
        plan = {"device": "cpu", "fits": True, "model": {"param_count": r["params_m"] * 1e6},
                "cpu_allocator": r["allocator"], "gradient_checkpointing": r["grad_ckpt"], "use_qlora": r["qlora"],
                "micro_batch_size": r["micro_batch"], "gradient_accumulation_steps": 1}
        est = estimate_cpu_time(plan, r["seq_len"], r["time_estimate"]["matmul_gflops"])
        measured = r["step_times"][-1]
        assert abs(est["seconds_per_step"] / measured - 1) < 0.35, (r["shape"], r["micro_batch"], r["seq_len"], est, measured)
        checked += 1
    assert checked >= 6  # the 1B and 3B fp32 rows with a probe
