"""Training throughput: the original approach vs TRL SFTTrainer defaults vs iceburg, one run.

Same model (iceburg-tiny + LoRA r=16 on all linear projections), same length-varied data (the
bundled sample transcripts of every type), same held-out eval set, one epoch each, threads pinned.
Each approach runs in its own subprocess so peak RSS is its own.

  (1) original: HF Trainer, every example padded to max_seq_length, labels = the whole sequence
      including padding (what the seed implementation did)
  (2) trl:      TRL SFTTrainer with its defaults (no packing, loss on all tokens, gradient
      checkpointing on), conversational `messages` data
  (3) iceburg:  packed rows (no cross-attention), assistant-only loss, logits only where supervised

Reported: supervised tokens/s (assistant, non-padding tokens of the epoch / wall time), wall time
per epoch, peak RSS, eval loss after one epoch (iceburg's assistant-only metric, same for all),
achieved FLOP/s against a large matmul measured in the same run.

    python bench/training_throughput.py [--threads 2] [--max-seq-length 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def load_data(max_len: int, seed: int = 42):
    from transformers import AutoTokenizer

    from iceburg.data import SAMPLE_DIR
    from iceburg.data.loader import read_records
    from iceburg.models.tiny import ensure_tiny_model
    from iceburg.training.encoding import encode, eos_ids
    from iceburg.data.split import split_eval

    model_dir = ensure_tiny_model()
    tok = AutoTokenizer.from_pretrained(model_dir)
    recs = list(read_records(sorted(SAMPLE_DIR.glob("*.jsonl"))))
    train, ev = split_eval(recs, 0.1, seed)
    eos = eos_ids(tok)
    tr_ex = [e for e in (encode(tok, r, max_len, eos) for r in train) if e]
    ev_ex = [e for e in (encode(tok, r, max_len, eos) for r in ev) if e]
    return model_dir, tok, train, tr_ex, ev_ex


def lora_model(model_dir):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return get_peft_model(m, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                        task_type="CAUSAL_LM"))


def eval_loss(model, ev_ex, max_len):
    from iceburg.training.trainer import TrainArgs, evaluate

    return evaluate(model, ev_ex, TrainArgs(max_length=max_len, micro_batch_size=4))


def run_original(model_dir, tok, train_recs, tr_ex, ev_ex, a):
    import torch
    from torch.utils.data import Dataset
    from transformers import Trainer, TrainingArguments

    class Padded(Dataset):
        def __init__(self, exs):
            self.exs = exs

        def __len__(self):
            return len(self.exs)

        def __getitem__(self, i):
            ids = self.exs[i].input_ids[: a.max_seq_length]
            ids = ids + [tok.pad_token_id] * (a.max_seq_length - len(ids))
            t = torch.tensor(ids)
            return {"input_ids": t, "attention_mask": torch.ones_like(t), "labels": t.clone()}

    model = lora_model(model_dir)
    args = TrainingArguments(output_dir=a.tmp + "/orig", per_device_train_batch_size=a.batch, num_train_epochs=1,
                             learning_rate=2e-4, use_cpu=True, report_to=[], save_strategy="no",
                             logging_steps=1000, disable_tqdm=True, dataloader_num_workers=0, seed=0)
    tr = Trainer(model=model, args=args, train_dataset=Padded(tr_ex))
    t0 = time.time()
    tr.train()
    wall = time.time() - t0
    return model, wall, len(tr_ex) * a.max_seq_length


def run_trl(model_dir, tok, train_recs, tr_ex, ev_ex, a):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model = lora_model(model_dir)
    ds = Dataset.from_list([{"messages": r.messages} for r in train_recs])
    cfg = SFTConfig(output_dir=a.tmp + "/trl", per_device_train_batch_size=a.batch, num_train_epochs=1,
                    learning_rate=2e-4, use_cpu=True, bf16=False, report_to=[], save_strategy="no",
                    logging_steps=1000, disable_tqdm=True, max_length=a.max_seq_length, seed=0)
    tr = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok)
    processed = sum(len(x["input_ids"]) for x in tr.train_dataset)
    t0 = time.time()
    tr.train()
    wall = time.time() - t0
    model.eval()
    return model, wall, processed


def run_iceburg(model_dir, tok, train_recs, tr_ex, ev_ex, a):
    import random

    from iceburg.training.trainer import TrainArgs, train

    model = lora_model(model_dir)
    order = list(range(len(tr_ex)))
    random.Random(0).shuffle(order)
    args = TrainArgs(epochs=1, learning_rate=2e-4, micro_batch_size=max(1, a.batch // 2), grad_accum=1,
                     max_length=a.max_seq_length, pad_id=tok.pad_token_id, eval_steps=10**9, show_progress=False)
    t0 = time.time()
    out = train(model, tr_ex, lambda e: order, [], args)
    wall = time.time() - t0
    return model, wall, out.total_tokens


def child(a) -> None:
    import torch

    torch.set_num_threads(a.threads)
    from _common import peak_rss_mb

    model_dir, tok, train_recs, tr_ex, ev_ex = load_data(a.max_seq_length)
    fn = {"original": run_original, "trl": run_trl, "iceburg": run_iceburg}[a.child]
    model, wall, processed = fn(model_dir, tok, train_recs, tr_ex, ev_ex, a)
    sup = sum(e.supervised for e in tr_ex)
    n_params = sum(p.numel() for p in model.parameters())
    res = {"approach": a.child, "wall_s": wall, "supervised_tokens": sup, "processed_tokens": processed,
           "supervised_tok_per_s": sup / wall, "eval_loss": eval_loss(model, ev_ex, a.max_seq_length),
           "peak_rss_mb": peak_rss_mb(),
           # LoRA training ~ forward 2N + backward input-grads 2N FLOPs per processed token
           "achieved_gflops": 4 * n_params * processed / wall / 1e9}
    print("RESULT " + json.dumps(res))


def matmul_gflops(threads: int, n: int = 2048, reps: int = 5) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    t0 = time.time()
    for _ in range(reps):
        torch.mm(a, b)
    return 2 * n ** 3 * reps / (time.time() - t0) / 1e9


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-seq-length", type=int, default=1024)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--approaches", nargs="+", default=["original", "trl", "iceburg"])
    p.add_argument("--child")
    p.add_argument("--tmp", default="/tmp/iceburg-bench")
    a = p.parse_args()
    if a.child:
        return child(a)
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    from _common import machine_info, save

    import torch

    torch.set_num_threads(a.threads)
    peak = matmul_gflops(a.threads)
    rows = []
    for name in a.approaches:
        cmd = [sys.executable, __file__, "--child", name, "--threads", str(a.threads), "--max-seq-length",
               str(a.max_seq_length), "--batch", str(a.batch), "--tmp", a.tmp]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if out.returncode != 0 or not line:
            sys.stderr.write(out.stderr[-3000:])
            raise SystemExit(f"{name} failed")
        r = json.loads(line[0][7:])
        r["pct_of_matmul_peak"] = 100 * r["achieved_gflops"] / peak
        rows.append(r)
        print(json.dumps(r))
    base = {r["approach"]: r for r in rows}
    if "iceburg" in base:
        for r in rows:
            r["speedup_vs_this"] = base["iceburg"]["supervised_tok_per_s"] / r["supervised_tok_per_s"]
    meta = {**machine_info(), "matmul_2048_gflops": round(peak, 1), "max_seq_length": a.max_seq_length,
            "batch": a.batch, "lora": "r16 all-linear", "model": "iceburg-tiny"}
    print(save(f"training_throughput_L{a.max_seq_length}", rows, meta,
               ["approach", "supervised_tok_per_s", "wall_s", "peak_rss_mb", "eval_loss", "processed_tokens",
                "supervised_tokens", "achieved_gflops", "pct_of_matmul_peak", "speedup_vs_this"]))


if __name__ == "__main__":
    main()
