"""iceburg's LoRA trainer against TRL's best packed configuration on a CUDA GPU.

Shapes: Qwen2.5-0.5B and Qwen2.5-1.5B (their published config.json values, random weights: nothing
is downloaded). Data: random-token examples of random lengths with the second half of each
supervised (an assistant turn), the same examples for every mode. Modes:

- `iceburg-sdpa`: our trainer (trainer.train), packed rows, sdpa's block-diagonal mask, bf16.
- `iceburg-varlen`: packed micro-batches as one padding-free row through flash_attention_2
  (training/accel.py; needs flash-attn).
- `iceburg-varlen-liger`: the same plus Liger's fused lm head + cross-entropy (needs liger-kernel).
- `trl-bfd`: TRL SFTTrainer, `packing=True, packing_strategy="bfd"` (padding-free, position ids
  through flash_attention_2 when flash-attn is installed, else sdpa), completion-only loss, bf16,
  no gradient checkpointing: TRL's fastest packed setting (its docs recommend bfd + flash attention).

Reported per mode: supervised tokens/s (after `--warmup` steps), MFU, peak `max_memory_allocated`
and the planner's estimate for the same shape and batch (hardware/memory.estimate_training_memory).

MFU counts the FLOPs a LoRA step must do, the same way for every mode: per token 4 x the frozen
projection parameters (forward + input gradients; frozen weights get no weight gradient; LoRA's
own FLOPs, under 1%, ignored), attention 3 x 4 x layers x hidden x the mean causal context (QK^T
and AV, forward + backward), and the lm head 4 x hidden x vocab per supervised token only. Peak
device FLOP/s: `--peak-tflops`, default from the device name (dense bf16 of the data sheets).

    python bench/gpu.py                       # both shapes, all modes whose packages are installed
    python bench/gpu.py --shapes qwen2.5-0.5b --modes iceburg-sdpa trl-bfd --steps 10
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Published config.json values of the Hugging Face repos Qwen/Qwen2.5-0.5B and Qwen/Qwen2.5-1.5B.
SHAPES = {
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                         tie_word_embeddings=True, max_position_embeddings=32768, rope_theta=1e6,
                         rms_norm_eps=1e-6),
    "qwen2.5-1.5b": dict(model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                         tie_word_embeddings=True, max_position_embeddings=131072, rope_theta=1e6,
                         rms_norm_eps=1e-6),
}
MODES = ("iceburg-sdpa", "iceburg-varlen", "iceburg-varlen-liger", "trl-bfd")
# Dense bf16 tensor-core peak of the data sheets (no sparsity), by a substring of the device name.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0,
               "RTX 4090": 165.0}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_R = 16


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=sorted(SHAPES))
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--seq-len", type=int, default=2048, help="packed row length (TRL max_length)")
    p.add_argument("--micro-batch", type=int, default=4, help="rows per micro-batch")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3, help="steps left out of the timing")
    p.add_argument("--examples", type=int, default=600)
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--name", default="gpu")
    a = p.parse_args(argv)
    if a.warmup >= a.steps:
        p.error(f"--warmup ({a.warmup}) must be below --steps ({a.steps})")
    return a


def require_cuda() -> str:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("error: bench/gpu.py measures CUDA training and this machine has no CUDA device "
                         "(torch.cuda.is_available() is False); run it on a GPU machine")
    return torch.cuda.get_device_name(0)


def peak_tflops(device_name: str, override: float | None) -> float:
    if override:
        return override
    for key, v in PEAK_TFLOPS.items():
        if key in device_name:
            return v
    raise SystemExit(f"error: no peak FLOP/s known for {device_name!r}; pass --peak-tflops")


def model_config(shape: str):
    from transformers import AutoConfig

    d = dict(SHAPES[shape])
    return AutoConfig.for_model(d.pop("model_type"), **d)


def make_examples(n: int, seq_len: int, vocab: int, seed: int = 0) -> list:
    import numpy as np

    from iceburg.training.encoding import Example

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = int(rng.integers(64, seq_len // 2))  # chat transcripts: many short, some long
        ids = rng.integers(0, vocab, size=k).tolist()
        out.append(Example(ids, [j >= k // 2 for j in range(k)], f"e{i}", 1.0))
    return out


def step_flops(rows_tokens: int, sup_tokens: int, mean_ctx: float, shape) -> float:
    per_tok = 4 * shape.linear_params + 3 * 4 * shape.num_layers * shape.hidden_size * mean_ctx
    return rows_tokens * per_tok + sup_tokens * 4 * shape.hidden_size * shape.vocab_size


def planner_gib(shape, micro_batch: int, seq_len: int, sup_frac: float) -> float:
    from iceburg.hardware.memory import estimate_training_memory

    est = estimate_training_memory(shape, micro_batch=micro_batch, seq_len=seq_len, precision="bf16",
                                   lora_r=LORA_R, targets=TARGETS, gradient_checkpointing=False,
                                   device_kind="cuda", supervised_fraction=sup_frac)
    return est.total / 2**30


def _lora_model(cfg, attn: str, device: str):
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation=attn).to(device)
    return get_peft_model(model, LoraConfig(r=LORA_R, lora_alpha=2 * LORA_R, lora_dropout=0.0,
                                            target_modules=TARGETS, task_type=TaskType.CAUSAL_LM))


class StepClock:
    """A trainer callback timing the steps after `warmup` (device synchronised)."""

    def __init__(self, warmup: int, device: str):
        self.warmup, self.device, self.t0, self.t1, self.sup0, self.sup1 = warmup, device, None, None, 0, 0

    def on_batch(self, ids):
        pass

    def on_eval(self, step, loss):
        pass

    def on_step(self, step, metrics):
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
        if step == self.warmup:
            self.t0, self.sup0 = time.perf_counter(), metrics["supervised_tokens"]
        self.t1, self.sup1 = time.perf_counter(), metrics["supervised_tokens"]


def run_iceburg(mode: str, cfg, examples: list, a, device: str = "cuda") -> dict:
    """One mode's timing (device "cpu" only for smoke tests of this script: main() refuses CPU)."""
    from iceburg.training.trainer import TrainArgs, plan_steps, train

    varlen = mode != "iceburg-sdpa"
    model = _lora_model(cfg, "flash_attention_2" if varlen else "sdpa", device)
    args = TrainArgs(max_steps=a.steps, micro_batch_size=a.micro_batch, max_length=a.seq_len, packing=True,
                     device=device, precision="bf16" if device == "cuda" else "fp32", warmup_ratio=0.0, learning_rate=1e-4, eval_steps=10**9,
                     show_progress=False, varlen=varlen, liger=mode.endswith("liger"))
    clock = StepClock(a.warmup, device)
    train(model, examples, lambda e: list(range(len(examples))), [], args, callbacks=[clock])
    steps, _ = plan_steps(examples, lambda e: list(range(len(examples))), args)
    timed = [r for s in steps[a.warmup:a.steps] for mb in s for r in mb]
    return {"seconds": clock.t1 - clock.t0, "supervised": clock.sup1 - clock.sup0,
            "tokens": sum(len(r) for r in timed),
            "mean_ctx": sum(len(x) ** 2 / 2 for r in timed for x in _segments(r)) / max(1, sum(len(r) for r in timed))}


def _segments(row) -> list[range]:
    starts = [i for i, p in enumerate(row.position_ids) if p == 0] + [len(row)]
    return [range(s, e) for s, e in zip(starts, starts[1:])]


def _id_tokenizer():
    """A stand-in tokenizer for already-tokenized data (TRL reads only its pad/eos ids)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<pad>": 0, "<unk>": 1},
                                                                               unk_token="<unk>")),
                                   pad_token="<pad>", eos_token="<pad>", unk_token="<unk>")


def run_trl(cfg, examples: list, a, device: str = "cuda") -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    attn = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
    model = _lora_model(cfg, attn, device)
    ds = Dataset.from_dict({"input_ids": [e.input_ids for e in examples],
                            "completion_mask": [[int(m) for m in e.mask] for e in examples]})
    clock = StepClock(a.warmup, device)

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            clock.on_step(state.global_step, {"supervised_tokens": 0})

    sft = SFTConfig(output_dir="/tmp/iceburg-bench-trl", max_steps=a.steps, per_device_train_batch_size=a.micro_batch,
                    max_length=a.seq_len, packing=True, packing_strategy="bfd", bf16=device == "cuda",
                    use_cpu=device == "cpu",
                    gradient_checkpointing=False, completion_only_loss=True, learning_rate=1e-4,
                    logging_steps=10**9, save_strategy="no", report_to=[], dataloader_num_workers=0)
    trainer = SFTTrainer(model=model, args=sft, train_dataset=ds, callbacks=[Clock()],
                         processing_class=_id_tokenizer())
    batches = []
    orig = trainer.compute_loss

    def counting(model, inputs, *args, **kw):  # count what TRL actually trains on
        batches.append(((inputs["labels"] != -100).sum().item(), inputs["input_ids"].numel(),
                        inputs.get("position_ids")))
        return orig(model, inputs, *args, **kw)

    trainer.compute_loss = counting
    trainer.train()
    timed = batches[a.warmup:a.steps]
    sup = sum(b[0] for b in timed)
    toks = sum(b[1] for b in timed)
    ctx = 0.0
    for _, _, pos in timed:
        if pos is not None:
            p = pos.flatten().tolist()
            starts = [i for i, v in enumerate(p) if v == 0] + [len(p)]
            ctx += sum((e - s) ** 2 / 2 for s, e in zip(starts, starts[1:]))
    return {"seconds": clock.t1 - clock.t0, "supervised": sup, "tokens": toks, "mean_ctx": ctx / max(1, toks),
            "attn": attn}


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    device = require_cuda()
    import torch

    from _common import machine_info, save
    from iceburg.hardware.model_shape import shape_from_config

    peak = peak_tflops(device, a.peak_tflops) * 1e12
    have = {"iceburg-varlen": importlib.util.find_spec("flash_attn") is not None}
    have["iceburg-varlen-liger"] = have["iceburg-varlen"] and importlib.util.find_spec("liger_kernel") is not None
    rows = []
    for name in a.shapes:
        cfg = model_config(name)
        shape = shape_from_config(cfg)
        examples = make_examples(a.examples, a.seq_len, cfg.vocab_size)
        sup_frac = sum(sum(e.mask) for e in examples) / sum(len(e.input_ids) for e in examples)
        # before any run: TRL edits the config it trains (its probe then fails on the meta device)
        planner = round(planner_gib(shape, a.micro_batch, a.seq_len, sup_frac), 2)
        for mode in a.modes:
            if not have.get(mode, True):
                rows.append({"shape": name, "mode": mode, "note": "skipped: flash-attn/liger-kernel not installed"})
                continue
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            fresh = model_config(name)
            r = run_trl(fresh, examples, a) if mode == "trl-bfd" else run_iceburg(mode, fresh, examples, a)
            flops = step_flops(r["tokens"], r["supervised"], r["mean_ctx"], shape)
            rows.append({"shape": name, "mode": mode, "sup_tok_s": round(r["supervised"] / r["seconds"]),
                         "mfu_pct": round(100 * flops / r["seconds"] / peak, 1),
                         "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                         "planner_gib": planner,
                         "note": r.get("attn", "")})
    meta = {**machine_info(), "device": device, "seq_len": a.seq_len, "micro_batch": a.micro_batch,
            "steps": a.steps, "warmup": a.warmup, "lora_r": LORA_R, "peak_tflops": peak / 1e12}
    print(save(a.name, rows, meta, ["shape", "mode", "sup_tok_s", "mfu_pct", "peak_gib", "planner_gib", "note"]))


if __name__ == "__main__":
    main()
