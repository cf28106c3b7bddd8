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
