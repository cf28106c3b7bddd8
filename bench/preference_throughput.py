"""DPO throughput and peak memory: iceburg's loop vs TRL's DPOTrainer, same model, data and shapes.

Each run is its own subprocess (peak RSS is per process). Both use LoRA r 8 on every linear layer
of the same base, the bundled preference pairs (iceburg/data/sample/preference), beta 0.1, the same
micro-batch, max length and number of optimizer steps, fp32 on CPU, gradient checkpointing off
(TRL turns it on by default; off for both is the fair comparison, STACK.md), and the reference =
the base with the adapter disabled in both. Reported: pairs/s over the training steps (after
reference precompute for ours; TRL recomputes the reference every step unless
precompute_ref_log_probs, which we also time), and the process's peak RSS.

Run: OMP_NUM_THREADS=2 PYTHONPATH=. python bench/preference_throughput.py [--model DIR] [--steps 20]
SmolLM2 (docs/preference.md): OMP_NUM_THREADS=1 PYTHONPATH=. python bench/preference_throughput.py
    --model smollm2-135m --steps 4 --batch 2 --max-length 128 --pairs 16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def _pairs(n: int | None = None):
    """The bundled pairs (the first `n`: both implementations precompute or train on the same set)."""
    from iceburg.data import SAMPLE_DIR
    from iceburg.preference.data import read_preferences

    d = SAMPLE_DIR / "preference"
    return list(read_preferences(sorted(d.glob("*_mined.jsonl")) + sorted(d.glob("*_pairs.jsonl"))))[:n]


def _model(path: str):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(path)
    cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, cfg), tok


def run_ours(a) -> dict:
    from iceburg.training.preference import PreferenceArgs, encode_pairs, precompute_reference, train_preference
    from iceburg.training.encoding import eos_ids
    from iceburg.training.trainer import TrainArgs
    from _common import peak_rss_mb

    model, tok = _model(a.model)
    loaded = peak_rss_mb()
    data, _ = encode_pairs(tok, _pairs(a.pairs), a.max_length, eos_ids(tok))
    args = TrainArgs(epochs=1, max_steps=a.steps, learning_rate=5e-4, micro_batch_size=a.batch, max_length=a.max_length,
                     warmup_ratio=0.0, show_progress=False, pad_id=tok.pad_token_id or 0)
    t0 = time.time()
    precompute_reference(model, data, args)
    ref_s = time.time() - t0
    out = train_preference(model, data, [], args, PreferenceArgs("dpo"))
    # train_preference precomputes again; the loop time excludes both
    return {"impl": "iceburg", "pairs": out.pairs_seen, "ref_precompute_s": round(ref_s, 2),
            "train_s": round(out.wall_seconds, 2), "pairs_per_s": out.pairs_seen / out.wall_seconds,
            "rss_after_load_mb": loaded, "peak_rss_mb": peak_rss_mb()}


def run_trl(a, precompute: bool) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer
    from _common import peak_rss_mb

    model, tok = _model(a.model)
    loaded = peak_rss_mb()
    ds = Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in _pairs(a.pairs)])
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *args, **kw):
            times.append(time.time()) if not times else None

        def on_train_end(self, *args, **kw):
            times.append(time.time())

    cfg = DPOConfig(output_dir="/tmp/iceburg-bench-trl", per_device_train_batch_size=a.batch, max_steps=a.steps,
                    learning_rate=5e-4, use_cpu=True, bf16=False, report_to=[], beta=0.1, max_length=a.max_length,
                    gradient_checkpointing=False, precompute_ref_log_probs=precompute, save_strategy="no",
                    logging_steps=10_000, dataloader_num_workers=0, disable_tqdm=True)
    t0 = time.time()
    trainer = DPOTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[Clock()])
    trainer.train()
    train_s = times[-1] - times[0]
    n = a.steps * a.batch
    return {"impl": "trl" + (" +precompute" if precompute else ""), "pairs": n,
            "ref_precompute_s": None, "setup_s": round(times[0] - t0, 2), "train_s": round(train_s, 2),
            "pairs_per_s": n / train_s, "rss_after_load_mb": loaded, "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=None, help="HF folder or embedded base name, e.g. smollm2-135m "
                   "(default: iceburg-tiny)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--pairs", type=int, default=None, help="use the first N bundled pairs (default: all)")
    p.add_argument("--one", choices=["iceburg", "trl", "trl-precompute"], help=argparse.SUPPRESS)
    a = p.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    if a.model is None:
        from iceburg.models.tiny import ensure_tiny_model

        a.model = str(ensure_tiny_model())
    elif not Path(a.model).is_dir():  # an embedded base (smollm2-135m): its cached HF folder
        from iceburg.base_models import resolve_base_model

        a.name = a.model
        a.model = str(resolve_base_model(a.model).path)
    if a.one:
        res = run_ours(a) if a.one == "iceburg" else run_trl(a, a.one == "trl-precompute")
        print("RESULT " + json.dumps(res))
        return
    from _common import machine_info, save

    load_start = os.getloadavg()[0]
    rows = []
    for which in ("iceburg", "trl", "trl-precompute"):
        cmd = [sys.executable, __file__, "--one", which, "--model", a.model, "--steps", str(a.steps),
               "--batch", str(a.batch), "--max-length", str(a.max_length)] + \
            (["--pairs", str(a.pairs)] if a.pairs else [])
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
        if not line:
            raise SystemExit(f"{which} failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(line[0][7:]))
        print(rows[-1], flush=True)
    model_name = getattr(a, "name", None) or Path(a.model).name
    meta = {**machine_info(), "model": model_name, "steps": a.steps, "batch_pairs": a.batch,
            "max_length": a.max_length, "pairs_in_data": a.pairs or "all", "lora": "r8 all-linear",
            "precision": "fp32", "threads": torch.get_num_threads(), "load_avg_1m_start": load_start}
    name = f"preference_throughput_{model_name}"
    print(save(name, rows, meta, ["impl", "pairs", "ref_precompute_s", "train_s", "pairs_per_s",
                                  "rss_after_load_mb", "peak_rss_mb"]))


if __name__ == "__main__":
    main()
