"""bench/training_throughput.py's product rows and gates (issue 26): the `iceburg` row is built the way
the CLI builds its run (plan, allocator, precision, LoRA), and the printed gates compare what the issue
asks for (default vs the best --batch-size, vs trl-best, bf16 vs fp32, Amdahl from the profile)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import training_throughput

    yield training_throughput
    sys.modules.pop("training_throughput", None)


def _row(name, tok_s, rnd=1, **kw):
    return {"approach": name, "round": rnd, "supervised_tok_per_s": tok_s, **kw}


def test_default_gate_compares_with_batch_size_rows_only(bench):
    # a faster bf16 variant is not a --batch-size row: the gate is the "best of 2/4/8"
    rows = [_row("iceburg", 100.0), _row("iceburg:b2", 105.0), _row("iceburg:b4", 120.0),
            _row("iceburg:precision-bf16", 200.0)]
    gate = bench.default_gate(rows)
    assert gate["verdicts"][0]["best_variant"] == "iceburg:b4"
    assert not gate["verdicts"][0]["ok"]  # 100 / 120 = 0.83 < 0.90
    assert gate["lines"][0].startswith("REGRESSION")
    rows[2]["supervised_tok_per_s"] = 110.0  # 100 / 110 = 0.91 >= 0.90
    assert bench.default_gate(rows)["verdicts"][0]["ok"]


def test_comparisons_trl_bf16_and_planner(bench):
    rows = [_row("iceburg", 200.0, precision="fp32", eval_loss=3.30, step_losses=[3.5, 3.4],
                 planned_peak_mb=1150.0, peak_rss_mb=1000.0),
            _row("trl-best", 150.0),
            _row("iceburg:precision-bf16", 310.0, precision="bf16", eval_loss=3.315, eval_loss_fp32_base=3.301,
                 step_losses=[3.51, 3.42])]
    comp = bench.comparisons(rows)
    assert comp["trl"][0]["default_over_trl_best"] == pytest.approx(200 / 150, abs=1e-3)
    assert comp["trl"][0]["ok"]  # 1.33 >= 1.25
    b = comp["bf16"][0]
    assert b["speedup_vs_fp32_default"] == pytest.approx(1.55)
    assert b["eval_loss_diff"] == pytest.approx(0.015) and b["eval_loss_diff_fp32_base"] == pytest.approx(0.001)
    assert b["max_step_loss_diff"] == pytest.approx(0.02)
    assert not b["ok"]  # fast enough, but the product's own eval loss is 0.015 > 0.01 worse
    assert rows[0]["plan_error"] == pytest.approx(0.15)


def test_amdahl_from_profiled_seconds(bench):
    # fp32: 6 s of matmul in 10 s; bf16: matmuls 4x faster (1.5 s), the rest unchanged plus 0.5 s of casts
    rows = [_row("iceburg", 100.0, precision="fp32", profile={"seconds": {"matmul": 6.0, "other": 4.0}}),
            _row("iceburg:autocast-bf16", 150.0, precision="bf16",
                 profile={"seconds": {"matmul": 1.5, "other": 4.0, "cast": 0.5}})]
    (x,) = bench.amdahl(rows)
    assert x["matmul_share_fp32"] == pytest.approx(0.6) and x["matmul_speedup"] == pytest.approx(4.0)
    assert x["amdahl_if_only_matmuls_changed"] == pytest.approx(1 / (0.4 + 0.6 / 4), abs=1e-3)
    assert x["measured_microbatch_speedup"] == pytest.approx(10 / 6, abs=1e-3)
    assert x["ceiling_free_matmuls"] == pytest.approx(2.5)


def test_op_categories(bench):
    assert bench.op_category("aten::mm") == "matmul" and bench.op_category("aten::addmm") == "matmul"
    assert bench.op_category("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert bench.op_category("aten::copy_") == "cast" and bench.op_category("aten::mul") == "other"


@pytest.mark.slow
def test_product_row_is_the_cli_plan(bench, tiny_model_dir):
    """The `iceburg` row's model and examples are the CLI's: split overflow, the plan's micro-batch and
    LoRA rank, the base in the plan's precision; `--precision bf16` loads a bf16 base with fp32 LoRA
    where the CPU has bf16 kernels."""
    import torch

    from iceburg.hardware import get_m4_optimizer

    _, tok, recs, truncated, _ = bench.load_data(128, model=str(tiny_model_dir))
    a = argparse.Namespace(max_seq_length=128, seed=0)
    model, plan, examples = bench.product_model(tiny_model_dir, tok, recs, "iceburg", a)
    assert plan.precision == "fp32" and plan.cpu_allocator  # CPU default; the allocator is chosen
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    lora = [n for n, p in model.named_parameters() if p.requires_grad]
    assert lora and all("lora_" in n for n in lora)
    assert any(n.endswith("lora_A.default.weight") for n in lora)
    assert next(p for n, p in model.named_parameters() if "lora_A" in n).shape[0] == plan.lora_r
    # the CLI's --overflow split: conversations longer than 128 tokens (most sample transcripts) give
    # further windows, so more examples than the bench's truncated encoding of the same records
    assert len(examples) > len(truncated)
    if "bf16" not in get_m4_optimizer().detect_hardware().supported_precisions:
        pytest.skip("no bf16 kernels on this CPU: --precision bf16 is refused here")
    model, plan, _ = bench.product_model(tiny_model_dir, tok, recs, "iceburg:precision-bf16", a)
    assert plan.precision == "bf16"
    assert {p.dtype for p in model.parameters() if not p.requires_grad} == {torch.bfloat16}
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}  # peft keeps adapters fp32
