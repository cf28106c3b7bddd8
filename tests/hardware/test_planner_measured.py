"""The planner against the loop that runs: estimated vs measured peak RSS of real LoRA steps, and the
CPU cost model's micro-batch choice."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoConfig

from iceburg.config import TrainingConfig
from iceburg.hardware import describe_hardware, plan_training
from iceburg.hardware.memory import estimate_training_memory
from iceburg.hardware.model_shape import head_apart_shape, shape_from_config

BENCH = Path(__file__).resolve().parents[2] / "bench" / "memory_planner.py"
# The bound (issue 26): every validated cell within +-15% of the measured peak RSS.
TOLERANCE_PCT = 15


def _bench():
    spec = importlib.util.spec_from_file_location("memory_planner_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from /proc (Linux)")
@pytest.mark.parametrize("shape,batch,seq", [("smollm2-135m", 2, 512)])
def test_estimate_within_15pct_of_a_measured_step(shape, batch, seq, tmp_path):
    """A fresh process loads a random-weight model of the real shape, runs 2 LoRA steps through the
    trainer's own CPU loss path (chunked head, segment attention, boolean dropout masks, the fixed
    mmap threshold the estimate assumes) and reports its VmHWM; the estimate must be within 15%."""
    bench = _bench()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    row = bench.run_case(shape, batch, seq, False, {}, "cpu", False, "iceburg", 2, root=tmp_path)  # model under tmp_path
    assert abs(row["error_pct"]) <= TOLERANCE_PCT, row


def test_smollm2_shape_runs_the_head_apart():
    cfg = AutoConfig.for_model(**_bench().SHAPES["smollm2-135m"])
    assert head_apart_shape(cfg)


def test_chunked_head_drops_the_logits_term():
    """With the head in chunks only HEAD_CHUNK_ROWS rows of logits are alive: the loss transient no
    longer grows with the micro-batch (it did: 2.4 GB at 8 x 512 before the chunked head was modelled)."""
    shape = shape_from_config(AutoConfig.for_model(**_bench().SHAPES["smollm2-135m"]))
    kw = dict(seq_len=512, precision="fp32", lora_r=16, targets=shape.linear_names, gradient_checkpointing=False,
              supervised_fraction=0.5)
    small, big = (estimate_training_memory(shape, micro_batch=b, **kw) for b in (1, 8))
    assert small.loss_transient == big.loss_transient < 200 * 2**20  # 256 x 49152 x 4 B x 3 = 151 MB
    # activations are linear in the batch (probed per row)
    assert big.activations == 8 * small.activations


def test_cpu_plan_prefers_glibcs_allocator_over_a_bigger_micro_batch(machines, tmp_path):
    """Measured (CPU_COST_MODEL): tokens/s is flat in the micro-batch from ~2,048 tokens on, glibc's
    allocator ~1.6x the fixed threshold's. So with room, micro-batch 4 (4 x 512 tokens) under glibc's
    allocator, never 8; with room for micro-batch 4 only under the fixed threshold, micro-batch 2 under
    glibc's allocator."""
    d = tmp_path / "smollm2"
    AutoConfig.for_model(**_bench().SHAPES["smollm2-135m"]).save_pretrained(d)
    cfg = TrainingConfig(max_seq_length=512)
    roomy = plan_training(d, cfg, describe_hardware(machines.cpu_box(ram_gib=24, available_gib=21)),
                          num_examples=13, supervised_fraction=0.5)
    assert (roomy.micro_batch_size, roomy.gradient_accumulation_steps, roomy.cpu_allocator) == (4, 3, "glibc default")
    assert any("4 (2,048 tokens) x 3 accumulation" in n for n in roomy.notes)
    # 8 GiB: budget 6.8 GiB; micro 4 (4.23 GiB estimate, up to 2x = 8.46 GiB) fits only under the
    # fixed threshold, micro 2 (2.67 GiB, 2x = 5.34 GiB) under glibc's allocator too
    tight = plan_training(d, cfg, describe_hardware(machines.cpu_box(ram_gib=16, available_gib=8)),
                          num_examples=13, supervised_fraction=0.5)
    assert (tight.micro_batch_size, tight.cpu_allocator) == (2, "glibc default")
    assert tight.gradient_accumulation_steps == 6 and any("glibc" in n for n in tight.notes)
    assert tight.memory["glibc_total"] > tight.memory["total"]
    # an explicit --batch-size is kept, under the allocator that fits it
    kept = plan_training(d, TrainingConfig(max_seq_length=512, batch_size=8),
                         describe_hardware(machines.cpu_box(ram_gib=16, available_gib=12)), num_examples=13,
                         supervised_fraction=0.5)
    assert (kept.micro_batch_size, kept.cpu_allocator) == (8, "fixed mmap threshold")


# (row tokens, CPU micro-batch, micro-batch with --gradient-accumulation-steps 2: 16 / 2 = 8 where 8 fits
# 120 GiB, at 4,096 tokens only 4)
@pytest.mark.parametrize("seq,micro,with_accum", [(256, 8, 8), (512, 4, 8), (1024, 2, 8), (2048, 1, 8), (4096, 1, 4)])
def test_cpu_micro_batch_is_the_smallest_that_fills_the_matmuls(machines, tmp_path, seq, micro, with_accum):
    """CPU: the smallest micro-batch with CPU_SATURATING_TOKENS (2,048) tokens, the rest accumulated
    (the effective batch stays the same); a GPU still takes the largest that fits; an explicit
    --gradient-accumulation-steps keeps the largest micro-batch that completes the effective batch."""
    d = tmp_path / "smollm2"
    AutoConfig.for_model(**_bench().SHAPES["smollm2-135m"]).save_pretrained(d)
    cfg = TrainingConfig(max_seq_length=seq)
    cpu = plan_training(d, cfg, describe_hardware(machines.cpu_box(ram_gib=128, available_gib=120)),
                        supervised_fraction=0.5)
    assert (cpu.micro_batch_size, cpu.effective_batch_size) == (micro, 16)
    gpu = plan_training(d, cfg, describe_hardware(machines.cuda_box(80, 79)), supervised_fraction=0.5)
    assert gpu.micro_batch_size > micro  # the largest power of two that fits 79 GiB (16 up to 1,024 tokens)
    accum = plan_training(d, TrainingConfig(max_seq_length=seq, gradient_accumulation_steps=2),
                          describe_hardware(machines.cpu_box(ram_gib=128, available_gib=120)), supervised_fraction=0.5)
    assert (accum.micro_batch_size, accum.gradient_accumulation_steps) == (with_accum, 2)
    # GRPO samples a micro-batch of prompts at a time (more rows per decode step are faster), and the
    # preference objectives were not measured under the rule: both keep the largest that fits
    for objective in ("grpo", "dpo"):
        other = plan_training(d, TrainingConfig(max_seq_length=seq, objective=objective),
                              describe_hardware(machines.cpu_box(ram_gib=128, available_gib=120)),
                              supervised_fraction=0.5)
        assert other.micro_batch_size >= with_accum
        # plan.json says which loop's memory a preference run was planned with
        assert any(n.startswith("dpo: memory of the preference loop") for n in other.notes) == (objective == "dpo")
        assert any(n.startswith("grpo: memory of GRPO's step") for n in other.notes) == (objective == "grpo")
        # GRPO's estimate carries the sampling copy and KV cache; DPO's has none
        assert (other.memory["sampling"] > 0) == (objective == "grpo")


ACCUM_CHILD = Path(__file__).resolve().parent / "accum_child.py"


def _measured_child(tmp_path, *args: str) -> tuple:
    """(shape, measurement) of `accum_child.py MODEL *args` on a random-weight SmolLM2-135M-shaped model in
    a fresh process (one torch thread unless OMP_NUM_THREADS says otherwise)."""
    from iceburg.hardware.model_shape import read_model_shape

    folder = _bench().model_folder("smollm2-135m", {}, tmp_path, "fp32")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run([sys.executable, str(ACCUM_CHILD), str(folder), *args], capture_output=True, text=True,
                          env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_model_shape(folder), json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS is read from /proc (Linux)")
def test_accumulation_keeps_the_glibc_estimate(tmp_path):
    """Gradient accumulation through the trainer's own loop under glibc's default allocator: the peak
    stays at the planner's `glibc_total`. When a micro-batch's loss (its autograd graph) was still
    alive during the next micro-batch, its small allocations pinned the freed activations' heap and
    the next forward grew it: +42% at 2 x 512 x 4 accumulation on the surveyor data (bench/results/
    training_throughput.md, 5,910 vs 4,174 MiB); the fix (trainer.sft_step frees it) measured
    7,864 vs 7,217 MiB at 4 x 512 x 2 (docs/hardware.md)."""
    # 2 x 512 x 4 accumulation, 2 steps: measured 4,459 MiB with the fix against 4,173 estimated (-6.4%),
    # 5,269 without it (-20.8%); at 2 accumulation steps the unfixed loop read -10.8% and -15.6% in two
    # runs, too close to the bound to tell the two apart
    shape, meas = _measured_child(tmp_path, "2", "4", "512", "2")
    est = estimate_training_memory(shape, micro_batch=2, seq_len=512, precision="fp32", lora_r=16,
                                   targets=shape.linear_names, gradient_checkpointing=False,
                                   supervised_fraction=meas["supervised_fraction"])
    error = (est.glibc_total - meas["steps_peak_rss"]) / meas["steps_peak_rss"]
    assert abs(error) * 100 <= TOLERANCE_PCT, (est.glibc_total >> 20, meas["steps_peak_rss"] >> 20, error)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS is read from /proc (Linux)")
def test_dpo_peak_is_the_preference_loops_estimate(tmp_path):
    """DPO's loop (training/preference.py) is not SFT's: padded chosen/rejected rows, logits and
    log-sum-exp at every position, torch's own LoRA dropout. Planned with SFT's loop (chunked head,
    boolean masks) the README-sized DPO run (SmolLM2-135M, 2 rows x 512, 5 accumulation) read 4,125
    MiB planned against 5,328 measured (-22.6%, bench/results/planner_cells.md); the preference loop's
    estimate is what this holds within 15%."""
    shape, meas = _measured_child(tmp_path, "2", "2", "512", "2", "dpo")
    kw = dict(micro_batch=2, seq_len=512, precision="fp32", lora_r=16, targets=shape.linear_names,
              gradient_checkpointing=False, supervised_fraction=meas["supervised_fraction"])
    est = estimate_training_memory(shape, loop="preference", **kw)
    error = (est.glibc_total - meas["steps_peak_rss"]) / meas["steps_peak_rss"]
    assert abs(error) * 100 <= TOLERANCE_PCT, (est.glibc_total >> 20, meas["steps_peak_rss"] >> 20, error)
    # and SFT's loop model would not have held it (the bug this guards against)
    sft = estimate_training_memory(shape, **kw)
    assert (sft.glibc_total - meas["steps_peak_rss"]) / meas["steps_peak_rss"] * 100 < -TOLERANCE_PCT


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS is read from /proc (Linux)")
def test_grpo_peak_is_grpos_step_estimate(tmp_path):
    """GRPO's step (training/grpo.py) is neither SFT's rows nor DPO's pairs: the prompt runs once and its
    G answers on its cache, logits at every answer position, plus the merged sampling copy of the weights
    kept through the step on CPU. One real step (SmolLM2-135M shape, random weights, 1 prompt of 208
    tokens x 4 answers of 48, glibc's default allocator as the planner's fast path runs it) must peak
    within the issue-26 bound of GRPO's estimate: 2,853 MiB measured against 2,932 planned (+2.8%,
    2026-12-07; at 416 + 4 x 96: 4,221 vs 4,363, +3.4%). Planned as SFT's loop (4 full rows) the same step
    reads 4,171 (+46%; +71% at 416 + 4 x 96): the SFT model must stay off by more than the bound here, or
    this test no longer shows why GRPO has its own. The size is the smallest that keeps that gap (a
    ~25 s child)."""
    shape, meas = _measured_child(tmp_path, "1", "1", "256", "1", "grpo", "48", "4")
    kw = dict(micro_batch=4, seq_len=256, precision="fp32", lora_r=16, targets=shape.linear_names,
              gradient_checkpointing=False, supervised_fraction=meas["supervised_fraction"])
    est = estimate_training_memory(shape, loop="grpo", grpo_group=4, completion_length=48, **kw)
    error = (est.glibc_total - meas["steps_peak_rss"]) / meas["steps_peak_rss"]
    assert abs(error) * 100 <= TOLERANCE_PCT, (est.glibc_total >> 20, meas["steps_peak_rss"] >> 20, error)
    # the sampling copy is in it: the adapted weights and the head, in the training dtype
    assert est.sampling >= (sum(li.in_features * li.out_features for li in shape.linears)
                            + shape.vocab_size * shape.hidden_size) * 4
    sft = estimate_training_memory(shape, **kw)
    assert (sft.glibc_total - meas["steps_peak_rss"]) / meas["steps_peak_rss"] * 100 > TOLERANCE_PCT
