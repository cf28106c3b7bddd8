"""The CPU estimate against a real run: peak RSS of LoRA steps in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from pathlib import Path

import pytest
from transformers import AutoConfig

import iceburg
from iceburg.config import TrainingConfig
from iceburg.hardware import describe_hardware, plan_training, probe_system

CHILD = textwrap.dedent("""
    import json, sys, torch
    torch.set_num_threads(1)
    from iceburg.hardware import configure_cpu_allocator
    configure_cpu_allocator()
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM
    plan = json.loads(sys.argv[2])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(sys.argv[1]))
    model = get_peft_model(model, LoraConfig(r=plan["lora_r"], lora_alpha=plan["lora_alpha"], lora_dropout=0.05,
                                             target_modules=plan["lora_target_modules"]))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    # the trainer's own CPU loop: chunked head loss, segment attention, boolean dropout masks
    from iceburg.training.encoding import Example
    from iceburg.training.lora_dropout import lora_dropout_on_cpu
    from iceburg.training.packing import collate, pack
    from iceburg.training.trainer import TrainArgs, _forward_loss, weighted_token_loss
    seq, b = int(sys.argv[3]), plan["micro_batch_size"]
    args = TrainArgs(device="cpu", max_length=seq, micro_batch_size=b)
    with lora_dropout_on_cpu(model):
        for _ in range(2):
            exs = [Example(torch.randint(0, model.config.vocab_size, (seq,)).tolist(), [True] * seq, f"x{i}")
                   for i in range(b)]
            loss, n = _forward_loss(model, collate(pack(exs, seq, packing=False), 0), args, weighted_token_loss)
            (loss / n).backward()
            opt.step(); opt.zero_grad(set_to_none=True)
    # VmHWM: this process's own peak (ru_maxrss would start from pytest's peak at fork).
    hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    print(int(hwm.split()[1]) * 1024)
""")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from Linux /proc")
def test_cpu_estimate_within_25_percent_of_peak_rss(tmp_path):
    # 8k vocabulary and 8 layers: the loss transient and activations are about half the total.
    AutoConfig.for_model("llama", hidden_size=256, intermediate_size=688, num_hidden_layers=8,
                         num_attention_heads=8, num_key_value_heads=2, vocab_size=8192,
                         tie_word_embeddings=True).save_pretrained(tmp_path)
    hw = describe_hardware(probe_system(), device="cpu")
    seq = 256
    plan = plan_training(tmp_path, TrainingConfig(max_seq_length=seq, batch_size=8, gradient_checkpointing=False), hw)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(iceburg.__file__).parents[1])}
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), json.dumps(plan.to_dict()), str(seq)],
                         capture_output=True, text=True, env=env, check=True)
    measured = int(out.stdout.strip().splitlines()[-1])
    error = (plan.estimated_peak_bytes - measured) / measured
    print(f"estimate {plan.estimated_peak_bytes / 2**20:.0f} MiB, measured {measured / 2**20:.0f} MiB "
          f"({100 * error:+.1f}%)")
    assert abs(error) < 0.25, (plan.memory, measured)
