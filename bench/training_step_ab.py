"""Interleaved A/B of one training micro-batch on a real model: where iceburg's step loses time.

Same LoRA model, same 4 x 512 best-fit rows of the bundled transcripts, fwd+bwd alternated
A, B, A, B, ... in one process (so machine load hits both alike):
  packed:  iceburg's step (position ids restart per transcript -> block-diagonal mask, logits only
           at supervised positions)
  causal:  the same rows without position ids (plain causal attention across the row, as TRL's
           "wrapped" packing and the original approach run), logits at supervised positions
  causal-full: plain causal and full-vocabulary logits at every position (the original's lm head)
  mask / segments: packed, with sdpa's block-diagonal mask or segment attention forced
  +cpu-dropout: with the trainer's CPU LoRA dropout (training/lora_dropout.py) instead of PEFT's
  iceburg: segments + CPU dropout + the lm head only at supervised (row, position) pairs (the
           trainer's CPU step; the cases above compute it at the rows' union of positions)

    python bench/training_step_ab.py --model smollm2-135m --reps 2 --threads 1
    python bench/training_step_ab.py --threads 2 --reps 3 --tag dropout \
        --cases mask segments mask+cpu-dropout segments+cpu-dropout
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--max-seq-length", type=int, default=512)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--cases", nargs="+", default=["packed", "causal", "causal-full"],
                   help="packed (the trainer's own choice), causal, causal-full, mask, segments, "
                        "mask+cpu-dropout, segments+cpu-dropout, iceburg")
    p.add_argument("--tag", default="")
    a = p.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    import torch

    torch.set_num_threads(a.threads)
    from _common import machine_info, save
    from training_throughput import load_data

    from iceburg.training.packing import collate, pack
    from iceburg.training.segment_attention import segment_work_share
    from iceburg.training.trainer import TrainArgs, _forward_loss, weighted_token_loss

    model_dir, tok, _, tr_ex, _ = load_data(a.max_seq_length, model=a.model, types=["surveyor"])
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                           LoraConfig(r=16, lora_alpha=32, lora_dropout=a.lora_dropout, target_modules="all-linear",
                                      task_type="CAUSAL_LM"))
    model.train()
    rows = pack(tr_ex, a.max_seq_length, True, best_fit=True)[: a.rows]
    batch = collate(rows, tok.pad_token_id)
    args = TrainArgs(max_length=a.max_seq_length)

    from iceburg.training.lora_dropout import lora_dropout_on_cpu

    def packed():
        model._iceburg_head_apart = False
        loss, n = _forward_loss(model, batch, args, weighted_token_loss)
        (loss / n).backward()

    def step(segments: bool, cpu_dropout: bool, head_apart: bool = False):
        def run():
            model._iceburg_head_apart = None if head_apart else False  # None: decide (allowed here)
            with lora_dropout_on_cpu(model, cpu_dropout):
                loss, n = _forward_loss(model, batch, TrainArgs(max_length=a.max_seq_length,
                                                                segment_attention=segments), weighted_token_loss)
                (loss / n).backward()
        return run

    def causal():
        model._iceburg_head_apart = False
        b = dict(batch, position_ids=torch.arange(batch["input_ids"].shape[1]).expand_as(batch["input_ids"]))
        loss, n = _forward_loss(model, b, args, weighted_token_loss)
        (loss / n).backward()

    def causal_full():
        ids = batch["input_ids"]
        out = model(input_ids=ids, labels=ids, use_cache=False)
        out.loss.backward()

    cases = {"packed": packed, "causal": causal, "causal-full": causal_full,
             # packed rows, each attention path forced, with PEFT's dropout or iceburg's CPU dropout
             "mask": step(False, False), "segments": step(True, False),
             "mask+cpu-dropout": step(False, True), "segments+cpu-dropout": step(True, True),
             # + the lm head only at supervised (row, position) pairs: the trainer's CPU step now
             "iceburg": step(True, True, True)}
    cases = {k: cases[k] for k in a.cases}
    times: dict[str, list[float]] = {k: [] for k in cases}
    next(iter(cases.values()))()  # warm-up, untimed: the first step of a process pays one-time allocation
    load_start = os.getloadavg()
    for rep in range(a.reps):
        for name, fn in cases.items():
            model.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
            print(name, rep, round(times[name][-1], 2), flush=True)
    tokens = sum(len(r) for r in rows)
    first = next(iter(cases))
    med = {k: statistics.median(v) for k, v in times.items()}
    rows_out = [{"case": k, "seconds": [round(x, 2) for x in v], "best_s": min(v), "median_s": med[k],
                 "tokens_per_s": tokens / med[k], f"vs_{first}": med[first] / med[k],
                 # per rep: the cases of one rep ran back to back, so their ratio sees the same load
                 "per_rep_vs": [round(f / x, 3) for f, x in zip(times[first], v)]} for k, v in times.items()]
    meta = {**machine_info(), "model": a.model, "rows": f"{a.rows} x {a.max_seq_length}", "real_tokens": tokens,
            "lora": f"r16 all-linear, dropout {a.lora_dropout}", "reps": a.reps, "load_average_start": load_start,
            "load_average_end": os.getloadavg()}
    meta["work_share"] = round(segment_work_share(batch["position_ids"]), 3)
    print(save(f"training_step_ab_{a.model}_L{a.max_seq_length}" + (f"_{a.tag}" if a.tag else ""), rows_out, meta,
               ["case", "median_s", "best_s", "tokens_per_s", f"vs_{first}", "per_rep_vs", "seconds"]))


if __name__ == "__main__":
    main()
