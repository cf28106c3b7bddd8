"""Child process of test_planner_measured's measured-loop tests: the trainer's own loop (engine +
sft_step, or with `dpo` as 7th argument the preference loop's DPO step, or with `grpo` GRPO's loop) with
gradient accumulation on a random-weight model, glibc's default allocator; prints the training's peak RSS
(VmHWM, reset after the load) and the examples' supervised share."""

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


def dpo(model, micro: int, accum: int, seq: int, steps: int) -> dict:
    """DPO through training/preference.train_preference: `micro` rows = micro // 2 pairs per micro-batch
    (recipes/preference.pair_args), sequences of seq - 8 .. seq tokens (padded to the longest)."""
    from iceburg.training.preference import PairExample, PreferenceArgs, train_preference

    rng, vocab = random.Random(0), model.config.vocab_size

    def side(i: int, tag: str) -> Example:
        length = rng.randint(seq - 8, seq)
        prompt = rng.randint(32, 96)
        return Example([rng.randrange(vocab) for _ in range(length)], [t >= prompt for t in range(length)], f"{tag}{i}")

    pairs = [PairExample(side(i, "c"), side(i, "r"), f"p{i}") for i in range(max(1, micro // 2) * accum * steps)]
    Path("/proc/self/clear_refs").write_text("5")
    args = TrainArgs(max_steps=steps, micro_batch_size=max(1, micro // 2), grad_accum=accum, max_length=seq,
                     eval_steps=10**9, save_steps=10**9, show_progress=False)
    train_preference(model, pairs, [], args, PreferenceArgs("dpo", 0.1))
    sides = [e for p in pairs for e in (p.chosen, p.rejected)]
    return {"supervised_fraction": sum(e.supervised for e in sides) / sum(len(e.input_ids) for e in sides)}


class Length:
    """A reward that costs nothing (the answers' length), so the loop's own memory is what is measured."""

    names = ["length"]
    weights = [1.0]

    def score(self, sources, completions):
        return {"length": [len(c.text) / 1000 for c in completions]}


def grpo(model, micro: int, accum: int, seq: int, steps: int, completion: int, group: int) -> dict:
    """GRPO through training/grpo.train_grpo: `micro` prompts x `group` answers per micro-batch, prompts of
    seq - completion tokens, every answer the full `completion` tokens (no end-of-turn id can be drawn)."""
    from transformers import AutoTokenizer

    from iceburg.base_models.resolve import resolve_base_model
    from iceburg.training.grpo import GrpoArgs, GrpoPrompt, train_grpo

    rng, vocab = random.Random(0), model.config.vocab_size
    tok = AutoTokenizer.from_pretrained(resolve_base_model("smollm2-135m").path)
    prompts = [GrpoPrompt(f"p{i}", [rng.randrange(vocab) for _ in range(seq - completion)])
               for i in range(micro * accum * steps)]
    Path("/proc/self/clear_refs").write_text("5")
    args = TrainArgs(max_steps=steps, micro_batch_size=micro, grad_accum=accum, max_length=seq,
                     eval_steps=10**9, save_steps=10**9, show_progress=False)
    train_grpo(model, tok, prompts, [], args, GrpoArgs(group=group, max_completion_length=completion), Length(),
               {vocab + 7})
    return {"supervised_fraction": completion / seq}


def main() -> None:
    model_dir, micro, accum, seq, steps = sys.argv[1], *map(int, sys.argv[2:6])
    objective = sys.argv[6] if len(sys.argv) > 6 else "sft"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    if objective in ("dpo", "grpo"):
        share = (dpo(model, micro, accum, seq, steps) if objective == "dpo" else
                 grpo(model, micro, accum, seq, steps, *map(int, sys.argv[7:9])))
        print(json.dumps({"steps_peak_rss": peak_rss(), **share}))
        return
    exs = examples(model.config.vocab_size, seq, 2 * micro * accum * steps, random.Random(0))  # packed ~2 per row
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here: the training steps' own peak
    args = TrainArgs(max_steps=steps, micro_batch_size=micro, grad_accum=accum, max_length=seq,
                     eval_steps=10**9, save_steps=10**9, show_progress=False)
    out = train(model, exs, lambda epoch: list(range(len(exs))), [], args)
    share = sum(e.supervised for e in exs) / sum(len(e.input_ids) for e in exs)
    print(json.dumps({"steps_peak_rss": peak_rss(), "supervised_fraction": share, "tokens": out.total_tokens}))


if __name__ == "__main__":
    main()
