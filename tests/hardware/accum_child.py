"""Child process of test_planner_measured's accumulation test: the trainer's own loop (engine +
sft_step) with gradient accumulation on a random-weight model, glibc's default allocator; prints
the training's peak RSS (VmHWM, reset after the load) and the examples' supervised share."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from iceburg.training.encoding import Example
from iceburg.training.trainer import TrainArgs, train


def peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def examples(vocab: int, seq: int, n: int, rng: random.Random) -> list[Example]:
    """Lengths and assistant turns that differ row to row, as real transcripts do, so the
    micro-batches of a step are not the same shapes."""
    out = []
    for i in range(n):
        length = rng.randint(seq // 2, seq)
        turns = [rng.random() < 0.6 for _ in range(length // 32 + 1)]
        out.append(Example([rng.randrange(vocab) for _ in range(length)], [turns[t // 32] for t in range(length)],
                           f"x{i}"))
    return out


def main() -> None:
    model_dir, micro, accum, seq, steps = sys.argv[1], *map(int, sys.argv[2:6])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    exs = examples(model.config.vocab_size, seq, 2 * micro * accum * steps, random.Random(0))  # packed ~2 per row
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here: the training steps' own peak
    args = TrainArgs(max_steps=steps, micro_batch_size=micro, grad_accum=accum, max_length=seq,
                     eval_steps=10**9, save_steps=10**9, show_progress=False)
    out = train(model, exs, lambda epoch: list(range(len(exs))), [], args)
    share = sum(e.supervised for e in exs) / sum(len(e.input_ids) for e in exs)
    print(json.dumps({"steps_peak_rss": peak_rss(), "supervised_fraction": share, "tokens": out.total_tokens}))


if __name__ == "__main__":
    main()
