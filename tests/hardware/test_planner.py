"""The planner: choices per machine, explicit settings kept, and stopping before loading."""

from __future__ import annotations

import dataclasses

import pytest

from iceburg.config import RECOMMENDED, ModelType, TrainingConfig
from iceburg.errors import IceburgError
from iceburg.hardware import describe_hardware, plan_training, read_model_shape, recommend_lora
from iceburg.hardware.planner import DEFAULT_EFFECTIVE_BATCH, MEMORY_HEADROOM

GIB = 2**30


def test_16gb_mac_plans_a_3b_model(machines, llama_3b_dir):
    hw = describe_hardware(machines.mac(ram_gib=16, working_set_gib=10.67))
    plan = plan_training(llama_3b_dir, TrainingConfig(model_type=ModelType.SURVEYOR), hw)
    assert plan.device == "mps" and plan.precision == "bf16" and not plan.use_qlora
    # 3.2B bf16 weights are 6.4 GB; a 128k vocabulary at 1024 tokens needs checkpointing to fit.
    assert plan.gradient_checkpointing
    assert plan.effective_batch_size >= DEFAULT_EFFECTIVE_BATCH
    assert plan.estimated_peak_bytes <= MEMORY_HEADROOM * hw.available_memory
    assert (plan.lora_r, plan.lora_alpha) == (16, 32)  # surveyor row of the original table
    assert plan.memory["weights"] == 2 * plan.model["param_count"]


def test_24gb_cuda_chooses_qlora_for_14b(machines, qwen_14b_dir):
    hw = describe_hardware(machines.cuda_box(total_gib=24, free_gib=23.5))
    plan = plan_training(qwen_14b_dir, TrainingConfig(), hw)
    assert plan.device == "cuda" and plan.use_qlora and plan.precision == "bf16"
    assert plan.model["param_count"] > 14e9
    assert plan.memory["weights"] < 0.4 * 2 * plan.model["param_count"]  # 4-bit projections
    assert plan.estimated_peak_bytes <= MEMORY_HEADROOM * hw.available_memory
    assert any("QLoRA" in n for n in plan.notes)


def test_80gb_cuda_trains_14b_in_bf16(machines, qwen_14b_dir):
    plan = plan_training(qwen_14b_dir, TrainingConfig(), describe_hardware(machines.cuda_box(80, 79)))
    assert not plan.use_qlora and plan.precision == "bf16"


def test_no_bitsandbytes_stops_with_the_install_command(machines, qwen_14b_dir):
    hw = describe_hardware(machines.cuda_box(bnb=False))
    with pytest.raises(IceburgError) as err:
        plan_training(qwen_14b_dir, TrainingConfig(), hw)
    msg = str(err.value)
    assert "needs" in msg and "available" in msg and "pip install 'iceburg[qlora]'" in msg
    assert "--max-seq-length" in msg and "smaller base model" in msg


def test_nothing_fits_on_a_small_cpu_box(machines, llama_3b_dir):
    with pytest.raises(IceburgError, match=r"does not fit.*GiB.*Options"):
        plan_training(llama_3b_dir, TrainingConfig(), describe_hardware(machines.cpu_box(4, 2)))


def test_explicit_settings_are_kept_or_refused(machines, llama_3b_dir):
    hw = describe_hardware(machines.cuda_box(80, 79))
    cfg = TrainingConfig(batch_size=2, gradient_accumulation_steps=3, gradient_checkpointing=True,
                         precision="fp16", lora_r=8)
    plan = plan_training(llama_3b_dir, cfg, hw)
    assert (plan.micro_batch_size, plan.gradient_accumulation_steps) == (2, 3)
    assert plan.gradient_checkpointing and plan.precision == "fp16"
    assert (plan.lora_r, plan.lora_alpha) == (8, 16)
    small = describe_hardware(machines.cuda_box(16, 15))
    with pytest.raises(IceburgError, match="drop --batch-size"):
        plan_training(llama_3b_dir, dataclasses.replace(cfg, batch_size=64), small)
    with pytest.raises(IceburgError, match="--precision"):
        plan_training(llama_3b_dir, TrainingConfig(precision="bf16"), describe_hardware(machines.cpu_box(64, 60)))
    with pytest.raises(IceburgError, match="--qlora.*CUDA or CPU"):
        plan_training(llama_3b_dir, TrainingConfig(use_qlora=True), describe_hardware(machines.mac()))


def test_qlora_on_cpu_needs_only_bitsandbytes(machines, llama_3b_dir):
    """bitsandbytes 0.50.2 runs NF4 on CPU (tests/training/test_qlora.py trains that way), so the
    planner allows --qlora on a CPU box with it, and falls back to it when fp32 does not fit."""
    with pytest.raises(IceburgError, match="pip install 'iceburg\\[qlora\\]'"):
        plan_training(llama_3b_dir, TrainingConfig(use_qlora=True), describe_hardware(machines.cpu_box(64, 60)))
    plan = plan_training(llama_3b_dir, TrainingConfig(use_qlora=True),
                         describe_hardware(machines.cpu_box(64, 60, bnb=True)))
    assert plan.device == "cpu" and plan.use_qlora and plan.precision == "fp32"
    assert not plan_training(llama_3b_dir, TrainingConfig(), describe_hardware(machines.cpu_box(64, 60, bnb=True))).use_qlora
    # 3B in fp32 needs ~12 GiB of weights alone: a 14 GiB box fits only with 4-bit weights
    small = describe_hardware(machines.cpu_box(16, 14, bnb=True))
    with pytest.raises(IceburgError, match="does not fit"):
        plan_training(llama_3b_dir, TrainingConfig(use_qlora=False), small)
    assert plan_training(llama_3b_dir, TrainingConfig(), small).use_qlora


def test_accumulation_alone_sets_the_micro_batch(machines, small_qwen_dir):
    plan = plan_training(small_qwen_dir, TrainingConfig(gradient_accumulation_steps=4),
                         describe_hardware(machines.cpu_box(8, 6)))
    assert (plan.micro_batch_size, plan.gradient_accumulation_steps) == (4, 4)


def test_effective_batch_capped_by_data(machines, small_qwen_dir):
    plan = plan_training(small_qwen_dir, TrainingConfig(), describe_hardware(machines.cpu_box(8, 6)),
                         num_examples=5)
    # 1,024-token rows: micro-batch 2 is the CPU's smallest with 2,048 tokens (CPU_SATURATING_TOKENS)
    assert plan.micro_batch_size == 2 and plan.effective_batch_size <= 5


def test_lora_table_scaled_by_size(llama_3b_dir, small_qwen_dir):
    big = read_model_shape(llama_3b_dir)
    for mt in ModelType:
        assert recommend_lora(mt, big) == (RECOMMENDED[mt]["lora_r"], RECOMMENDED[mt]["lora_alpha"])
    tiny = read_model_shape(small_qwen_dir)
    for mt in ModelType:
        r, alpha = recommend_lora(mt, tiny)
        assert 8 <= r < RECOMMENDED[mt]["lora_r"] and alpha == 2 * r


def test_targets_from_the_models_own_names(machines, gpt2_dir):
    hw = describe_hardware(machines.cpu_box(8, 6))
    plan = plan_training(gpt2_dir, TrainingConfig(), hw)
    assert plan.lora_target_modules == ["c_attn", "c_proj", "c_fc"]
    assert plan_training(gpt2_dir, TrainingConfig(lora_target_modules=["c_attn"]), hw).lora_target_modules == ["c_attn"]
    with pytest.raises(IceburgError, match="c_attn, c_proj, c_fc"):
        plan_training(gpt2_dir, TrainingConfig(lora_target_modules=["q_proj"]), hw)


def test_real_cpu_plan(small_qwen_dir):
    plan = plan_training(small_qwen_dir, TrainingConfig(max_seq_length=256))
    assert plan.device in ("cpu", "cuda", "mps")
    assert plan.micro_batch_size >= 1 and plan.estimated_peak_bytes > plan.memory["weights"]
    assert plan.to_dict()["effective_batch_size"] == plan.effective_batch_size


def test_world_size_keeps_the_global_batch_and_splits_cpu_memory(machines, small_qwen_dir):
    """N data-parallel processes: accumulation divided by N (same global batch); on CPU each
    process plans with 1/N of the memory; on GPUs each has its own device."""
    hw = describe_hardware(machines.cpu_box(8, 6))
    one = plan_training(small_qwen_dir, TrainingConfig(batch_size=2), hw)
    two = plan_training(small_qwen_dir, TrainingConfig(batch_size=2), hw, world_size=2)
    assert (two.world_size, two.micro_batch_size) == (2, 2)
    assert two.gradient_accumulation_steps * 2 == one.gradient_accumulation_steps
    assert two.effective_batch_size == one.effective_batch_size == DEFAULT_EFFECTIVE_BATCH
    assert two.to_dict()["effective_batch_size"] == DEFAULT_EFFECTIVE_BATCH
    explicit = plan_training(small_qwen_dir, TrainingConfig(batch_size=1, gradient_accumulation_steps=3), hw,
                             world_size=4)
    assert explicit.effective_batch_size == 12  # per-process values kept, times the processes
    assert any("per process (2 processes)" in n for n in two.notes)


def test_grpo_is_planned_with_its_own_step(machines, small_qwen_dir):
    """GRPO's estimate (hardware/memory.py loop='grpo'): the merged sampling copy is kept through the step on
    CPU and only transient on a GPU, and the estimate follows the group, the answer budget and the longest
    prompt, which plan_run passes from the data (training/run_parts.py)."""
    from iceburg.hardware.memory import estimate_training_memory

    shape = read_model_shape(small_qwen_dir)
    kw = dict(seq_len=512, precision="fp32", lora_r=8, targets=shape.linear_names, gradient_checkpointing=False,
              supervised_fraction=0.2, loop="grpo")

    def est(micro=4, group=4, completion=96, prompt=None, device="cpu"):
        return estimate_training_memory(shape, micro_batch=micro, grpo_group=group, completion_length=completion,
                                        prompt_length=prompt, device_kind=device, **kw)

    base = est()
    copy = (sum(li.in_features * li.out_features for li in shape.linears) + shape.vocab_size * shape.hidden_size) * 4
    assert base.sampling >= copy  # kept on CPU
    assert est(device="cuda").sampling < copy  # re-made per sampling call: not under the training phase
    assert est(group=8, micro=8).total > base.total
    assert est(completion=192).activations > base.activations and est(completion=192).loss_transient > base.loss_transient
    assert est(prompt=64).activations < base.activations  # 64 of the 416 prompt tokens the budget allows
    assert est(prompt=10_000).activations == base.activations  # a prompt is at most seq_len - completion
    assert est(micro=2).total == base.total  # fewer rows than the group is still one prompt's G answers
    cfg = TrainingConfig(objective="grpo", max_seq_length=512, max_completion_length=96, batch_size=4)
    plan = plan_training(small_qwen_dir, cfg, describe_hardware(machines.cpu_box(64, 60)), prompt_length=64)
    want = estimate_training_memory(shape, micro_batch=4, grpo_group=4, completion_length=96, prompt_length=64,
                                    device_kind="cpu", **{**kw, "lora_r": plan.lora_r}).to_dict()
    assert {k: plan.memory[k] for k in ("activations", "loss_transient", "sampling")} == {
        k: want[k] for k in ("activations", "loss_transient", "sampling")}
    assert any(n.startswith("grpo: memory of GRPO's step") for n in plan.notes)
