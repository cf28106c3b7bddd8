"""Check the memory planner against reality: estimated vs measured peak memory of LoRA steps.

For each case a random-weight model with a real architecture's shape is saved as safetensors,
then a fresh Python process loads it with `from_pretrained`, adds LoRA adapters (r=16, dropout
0.05, every projection), and runs a few AdamW steps on random tokens through iceburg's own loss
(`training/trainer._forward_loss`: logits only at supervised positions; half the tokens
supervised in 32-token turns) while its peak RSS is recorded
(`VmHWM` of /proc/self/status). On a CUDA machine the same runs report
`torch.cuda.max_memory_allocated()` against the estimate without the CPU runtime term.

    .venv/bin/python bench/memory_planner.py            # three shapes, five cases (10-25 minutes on 2 busy cores)
    .venv/bin/python bench/memory_planner.py --loop hf  # HF's full-sequence loss instead of iceburg's loop
    .venv/bin/python bench/memory_planner.py --quick    # the two smallest shapes
    .venv/bin/python bench/memory_planner.py --only tinyllama-1.1b --name 1b  # slow
    .venv/bin/python bench/memory_planner.py --device cuda

Writes bench/results/memory_planner.md and .json (with machine info and thread settings).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

THREADS = 2
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Published configs of real models (config.json of each Hugging Face repo), random weights here.
SHAPES = {
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864,
                         num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=32768),
    "smollm2-135m": dict(model_type="llama", hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         vocab_size=49152, tie_word_embeddings=True, max_position_embeddings=8192),
    "gpt2-124m": dict(model_type="gpt2", n_embd=768, n_layer=12, n_head=12, vocab_size=50257,
                      n_positions=1024),
    "tinyllama-1.1b": dict(model_type="llama", hidden_size=2048, intermediate_size=5632,
                           num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                           vocab_size=32000, tie_word_embeddings=False, max_position_embeddings=2048),
}
# Shapes of the "Hardware Recommendations" table (published config.json values).
RECOMMENDATION_SHAPES = {
    "1B (Llama-3.2-1B)": dict(model_type="llama", hidden_size=2048, intermediate_size=8192,
                              num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                              head_dim=64, vocab_size=128256, tie_word_embeddings=True),
    "3B (Llama-3.2-3B)": dict(model_type="llama", hidden_size=3072, intermediate_size=8192,
                              num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8,
                              head_dim=128, vocab_size=128256, tie_word_embeddings=True),
    "7B (Mistral-7B-v0.3)": dict(model_type="mistral", hidden_size=4096, intermediate_size=14336,
                                 num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                 vocab_size=32768, tie_word_embeddings=False),
    "14B (Qwen2.5-14B)": dict(model_type="qwen2", hidden_size=5120, intermediate_size=13824,
                              num_hidden_layers=48, num_attention_heads=40, num_key_value_heads=8,
                              vocab_size=152064, tie_word_embeddings=False),
}
# (shape, micro_batch, seq_len, gradient_checkpointing)
CASES = [
    ("smollm2-135m", 2, 256, False),
    ("smollm2-135m", 2, 256, True),
    ("gpt2-124m", 2, 256, False),
    ("qwen2.5-0.5b", 1, 256, False),
    ("qwen2.5-0.5b", 2, 256, True),
    ("tinyllama-1.1b", 1, 128, False),
]
QUICK = {"smollm2-135m", "gpt2-124m"}
DEFAULT = QUICK | {"qwen2.5-0.5b"}  # tinyllama-1.1b only with --only (minutes per step on 2 cores)
STEPS = 2  # the peak is in step 2: AdamW's moments exist from the end of step 1


def child(args: argparse.Namespace) -> None:
    """One measured run in a fresh process; prints a JSON line."""
    import torch

    torch.set_num_threads(THREADS)
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    def rss() -> int:
        # VmHWM is this process's own high-water mark; ru_maxrss would start from the parent's
        # peak at fork (Linux keeps it across execve), and the parent built the model.
        status = Path("/proc/self/status")
        if status.exists():
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)

    from iceburg.hardware.memory import configure_cpu_allocator

    if not args.default_allocator:
        configure_cpu_allocator()
    dev = torch.device(args.device)
    base_rss = rss()
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).to(dev)
    load_rss = rss()
    targets = args.targets.split(",")
    model = get_peft_model(model, LoraConfig(r=args.r, lora_alpha=2 * args.r, lora_dropout=0.05,
                                             target_modules=targets))
    if args.gc:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    g = torch.Generator().manual_seed(0)
    vocab = model.config.get_text_config().vocab_size
    from iceburg.training.lora_dropout import lora_dropout_on_cpu

    times = []
    # the trainer's CPU loop swaps in its boolean-mask LoRA dropout (training/trainer.py)
    with lora_dropout_on_cpu(model, args.loop == "iceburg" and dev.type == "cpu"):
        for _ in range(args.steps):
            t0 = time.perf_counter()
            if args.loop == "iceburg":
                loss = _iceburg_loss(model, vocab, args, g)
            else:
                ids = torch.randint(0, vocab, (args.batch, args.seq), generator=g).to(dev)
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            del loss
            times.append(time.perf_counter() - t0)
    out = {"peak_rss": rss(), "import_rss": base_rss, "load_rss": load_rss,
           "step_s": sum(times) / len(times), "step_times": [round(t, 2) for t in times],
           # steady-state speed: the last step (AdamW states exist, allocator warmed up)
           "tok_s_last": args.batch * args.seq / times[-1], "loadavg": os.getloadavg()}
    if dev.type == "cuda":
        out["cuda_peak_allocated"] = torch.cuda.max_memory_allocated()
    print(json.dumps(out))


# Supervised share for --loop iceburg: assistant tokens were 0.4-0.7 of the bundled transcripts
# (data_stats of the sample runs); 0.5 is the middle. Blocks of 32 tokens mimic turns.
SUPERVISED_FRACTION = 0.5
MASK_BLOCK = 32


def _iceburg_loss(model, vocab: int, args: argparse.Namespace, g):
    """One micro-batch through iceburg's own loss (training/trainer.py): packed rows with a
    turn-like assistant mask, logits only at supervised positions, weighted fp32 cross-entropy."""
    import torch

    from iceburg.training.encoding import Example
    from iceburg.training.packing import collate, pack
    from iceburg.training.trainer import TrainArgs, _forward_loss, weighted_token_loss

    examples = []
    for i in range(args.batch):
        ids = torch.randint(0, vocab, (args.seq,), generator=g).tolist()
        blocks = (torch.rand(args.seq // MASK_BLOCK + 1, generator=g) < args.fraction).tolist()
        examples.append(Example(ids, [blocks[t // MASK_BLOCK] for t in range(args.seq)], f"x{i}"))
    rows = pack(examples, args.seq, packing=False)
    targs = TrainArgs(device=args.device, max_length=args.seq, micro_batch_size=args.batch)
    loss, n = _forward_loss(model, collate(rows, 0), targs, weighted_token_loss)
    return loss / max(1, n)


def run_case(name: str, batch: int, seq: int, gc: bool, model_dirs: dict, device: str,
             default_allocator: bool = False, loop: str = "hf", steps: int = STEPS) -> dict:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from iceburg.hardware.memory import estimate_training_memory
    from iceburg.hardware.model_shape import read_model_shape

    if name not in model_dirs:
        d = Path(tempfile.mkdtemp(prefix=f"iceburg-bench-{name}-"))
        cfg = AutoConfig.for_model(**SHAPES[name])
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(cfg).save_pretrained(d)  # random weights, safetensors
        model_dirs[name] = d
    shape = read_model_shape(model_dirs[name])
    r, targets = 16, shape.linear_names
    est = estimate_training_memory(shape, micro_batch=batch, seq_len=seq, precision="fp32", lora_r=r,
                                   targets=targets, gradient_checkpointing=gc,
                                   device_kind="cpu" if device == "cpu" else "cuda",
                                   supervised_fraction=SUPERVISED_FRACTION if loop == "iceburg" else None)
    cmd = [sys.executable, __file__, "--child", "--model-dir", str(model_dirs[name]), "--batch", str(batch),
           "--seq", str(seq), "--r", str(r), "--targets", ",".join(targets), "--device", device,
           "--loop", loop, "--fraction", str(SUPERVISED_FRACTION), "--steps", str(steps)]
    if gc:
        cmd.append("--gc")
    if default_allocator:
        cmd.append("--default-allocator")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{name}: measured run failed:\n{proc.stderr[-3000:]}")
    meas = json.loads(proc.stdout.strip().splitlines()[-1])
    measured = meas["cuda_peak_allocated"] if device == "cuda" else meas["peak_rss"]
    # under glibc's default allocator the planner's model of the peak is `glibc_total`
    predicted = est.glibc_total if default_allocator and device == "cpu" else est.total
    return {"shape": name, "params_m": round(shape.param_count / 1e6, 1), "micro_batch": batch,
            "seq_len": seq, "grad_ckpt": gc, "lora_r": r, "estimate": est.to_dict(),
            "allocator": "glibc default" if default_allocator else "fixed mmap threshold",
            "estimated_gib": predicted / 2**30, "measured_gib": measured / 2**30,
            "error_pct": 100 * (predicted - measured) / measured, **meas}


def recommendations(seq_len: int = 1024, lora_r: int = 32) -> None:
    """The docs' minimum-memory table: micro-batch 1, gradient checkpointing, all projections."""
    from transformers import AutoConfig

    from iceburg.hardware.memory import estimate_training_memory
    from iceburg.hardware.model_shape import shape_from_config
    from iceburg.hardware.planner import MEMORY_HEADROOM

    rows = []
    for label, values in RECOMMENDATION_SHAPES.items():
        shape = shape_from_config(AutoConfig.for_model(**values))
        row = {"model": label, "params_b": round(shape.param_count / 1e9, 2)}
        for key, precision, qlora, kind in (("lora_bf16", "bf16", False, "cuda"),
                                            ("qlora_nf4", "bf16", True, "cuda"),
                                            ("cpu_fp32", "fp32", False, "cpu")):
            est = estimate_training_memory(shape, micro_batch=1, seq_len=seq_len, precision=precision,
                                           lora_r=lora_r, targets=shape.linear_names,
                                           gradient_checkpointing=True, qlora=qlora, device_kind=kind)
            row[key] = est.total / 2**30
            row[key + "_device"] = est.total / MEMORY_HEADROOM / 2**30
        rows.append(row)
    lines = [f"# Minimum memory for LoRA training (micro-batch 1, gradient checkpointing, {seq_len} tokens, "
             f"LoRA r={lora_r} on every projection)", "",
             "| model | params (B) | LoRA bf16: peak / GPU memory to have | QLoRA 4-bit: peak / GPU memory "
             "to have | CPU fp32: peak RSS / RAM to have |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['params_b']} | {r['lora_bf16']:.1f} / {r['lora_bf16_device']:.0f} GiB | "
                     f"{r['qlora_nf4']:.1f} / {r['qlora_nf4_device']:.0f} GiB | "
                     f"{r['cpu_fp32']:.1f} / {r['cpu_fp32_device']:.0f} GiB |")
    lines += ["", f"'to have' = peak / {MEMORY_HEADROOM} (the planner's headroom). Apple Macs: compare "
              "the bf16 column with Metal's working set, which `--detect-hardware` shows as memory available."]
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "memory_planner_recommendations.md").write_text("\n".join(lines) + "\n")
    (out / "memory_planner_recommendations.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))


def _cases(args: argparse.Namespace, wanted: set[str]) -> list[tuple[tuple, bool]]:
    """((shape, micro_batch, seq_len, gc), default allocator) for each run."""
    if not args.cells:
        return [(c, args.default_allocator) for c in CASES if c[0] in wanted]
    out = []
    for cell in args.cells.split(","):
        name, bt, *flags = cell.split(":")
        b, t = (int(x) for x in bt.split("x"))
        out.append(((name, b, t, "gc" in flags), args.default_allocator or "malloc" in flags))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--seq", type=int)
    ap.add_argument("--r", type=int)
    ap.add_argument("--targets")
    ap.add_argument("--gc", action="store_true")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--default-allocator", action="store_true",
                    help="leave glibc's malloc as it is (measures what configure_cpu_allocator saves)")
    ap.add_argument("--loop", default="iceburg", choices=["iceburg", "hf"],
                    help="iceburg: our trainer's loss (logits at supervised positions, the default); "
                    "hf: Hugging Face's full-sequence loss (labels=)")
    ap.add_argument("--fraction", type=float, default=SUPERVISED_FRACTION, help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="only the two smallest shapes")
    ap.add_argument("--cells", help="instead of the fixed cases: comma-separated SHAPE:BxT[:gc][:malloc] "
                    "(malloc = glibc's default allocator), e.g. smollm2-135m:8x512,smollm2-135m:4x512:malloc")
    ap.add_argument("--steps", type=int, default=STEPS, help="steps per measured run (>= 2: the peak is in step 2)")
    ap.add_argument("--only", help="comma-separated shape names")
    ap.add_argument("--name", help="variant label written into the table (default: device, allocator and loss loop)")
    ap.add_argument("--recommendations", action="store_true",
                    help="only write the minimum-memory table for 1B/3B/7B/14B (no training)")
    args = ap.parse_args()
    if args.child:
        return child(args)
    if args.recommendations:
        return recommendations()

    import psutil
    import torch

    torch.set_num_threads(THREADS)
    wanted = set(args.only.split(",")) if args.only else (QUICK if args.quick else DEFAULT)
    rows, dirs = [], {}
    for case, malloc in _cases(args, wanted):
        if case[0] in wanted or args.cells:
            row = run_case(*case, dirs, args.device, malloc, args.loop, args.steps)
            rows.append(row)
            print(f"{row['shape']:>15} b={row['micro_batch']} T={row['seq_len']} gc={row['grad_ckpt']!s:5} "
                  f"{row['allocator']:>20} est {row['estimated_gib']:.2f} GiB  measured {row['measured_gib']:.2f} GiB  "
                  f"({row['error_pct']:+.1f}%)  steps {row['step_times']} s  {row['tok_s_last']:.0f} tok/s  "
                  f"load {row['loadavg'][0]:.2f}", flush=True)
    machine = {"platform": platform.platform(), "python": platform.python_version(),
               "torch": torch.__version__, "cpu_count": os.cpu_count(),
               "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
               "torch_threads": THREADS, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
               "device": args.device, "steps": args.steps, "loop": args.loop,
               "supervised_fraction": SUPERVISED_FRACTION if args.loop == "iceburg" else "all (labels=)",
               "allocator": "per row" if args.cells else
               "glibc default" if args.default_allocator else "configure_cpu_allocator()",
               "load_average_end": os.getloadavg()}
    measure = "CUDA max_memory_allocated" if args.device == "cuda" else "peak RSS"
    lines = [f"# Memory planner vs measured {measure} ({args.device})", "",
             "| shape | params (M) | micro-batch | seq len | grad ckpt | allocator | LoRA r | estimate (GiB) "
             f"| measured (GiB) | error | s/step (last) | tok/s (last) | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['shape']} | {r['params_m']} | {r['micro_batch']} | {r['seq_len']} | "
                     f"{'yes' if r['grad_ckpt'] else 'no'} | {r['allocator']} | {r['lora_r']} | {r['estimated_gib']:.2f} | "
                     f"{r['measured_gib']:.2f} | {r['error_pct']:+.1f}% | {r['step_times'][-1]:.1f} | "
                     f"{r['tok_s_last']:.0f} | {r['loadavg'][0]:.2f} |")
    lines += ["", "Machine: " + ", ".join(f"{k}={v}" for k, v in machine.items())]
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    # one current table (earlier runs are in git history); the variant goes into the table's machine line
    machine["variant"] = args.name or ("" if args.device == "cpu" else args.device) + \
        ("_default_malloc" if args.default_allocator else "") + ("_hf_loss" if args.loop == "hf" else "_iceburg_loop")
    stem = "memory_planner" + (f"_{args.name}" if args.name else "")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    (out / f"{stem}.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
