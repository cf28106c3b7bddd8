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
    # the hardware table's 1B/3B cells (docs/hardware.md; 3B only under `cpurun --exclusive`: ~18 GiB)
    .venv/bin/python bench/memory_planner.py --cells llama-3.2-1b:1x512:r32,llama-3.2-3b:1x1024:gc:qlora:r32 \
        --checkpoint-dtype bf16 --model-root /tmp/iceburg-hw-models --name hardware_measured --append

Writes bench/results/memory_planner.md and .json (with machine info and thread settings).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# torch threads of every run: OMP_NUM_THREADS when set (`cpurun` sets 1 per slot, 2 with --exclusive), else 2
THREADS = int(os.environ.get("OMP_NUM_THREADS") or 2)
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
# The hardware table's shapes (issue 26), from the family registry (iceburg/families/published.py).
from iceburg.families.published import published_shape  # noqa: E402

SHAPES |= {name: published_shape(repo) for name, repo in {
    "llama-3.2-1b": "meta-llama/Llama-3.2-1B-Instruct", "llama-3.2-3b": "meta-llama/Llama-3.2-3B-Instruct",
    "qwen2.5-7b": "Qwen/Qwen2.5-7B-Instruct", "qwen2.5-14b": "Qwen/Qwen2.5-14B-Instruct"}.items()}
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

    def rss(key: str = "VmHWM") -> int:
        # VmHWM is this process's own high-water mark; ru_maxrss would start from the parent's
        # peak at fork (Linux keeps it across execve), and the parent built the model.
        status = Path("/proc/self/status")
        if status.exists():
            for line in status.read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)

    def reset_peak() -> bool:
        # "5" resets VmHWM to the current RSS (proc(5), /proc/pid/clear_refs, Linux >= 4.0): the
        # training steps' own peak, apart from the load's (a bf16 checkpoint's mmapped file pages
        # are counted in RSS while from_pretrained converts them to fp32)
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    from iceburg.hardware.memory import configure_cpu_allocator

    if not args.default_allocator:
        configure_cpu_allocator()
    dev = torch.device(args.device)
    base_rss = rss()
    t_load = time.perf_counter()
    if args.qlora:
        # the product's QLoRA load (training/model.load_model): NF4 + double quantisation, fp32 compute
        # on CPU, then peft's prepare_model_for_kbit_training
        from peft import prepare_model_for_kbit_training

        from iceburg.training.model import qlora_load_kwargs

        model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32,
                                                     **qlora_load_kwargs(args.device, torch.float32))
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gc)
    else:
        model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).to(dev)
    load_s = time.perf_counter() - t_load
    load_rss = rss()
    after_load = {"rss_anon": rss("RssAnon"), "rss_file": rss("RssFile")}
    targets = args.targets.split(",")
    if args.gc:  # before peft, as training/model.apply_lora does
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=args.r, lora_alpha=2 * args.r, lora_dropout=0.05,
                                             target_modules=targets))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    g = torch.Generator().manual_seed(0)
    vocab = model.config.get_text_config().vocab_size
    peak_reset = reset_peak()
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
    steps_peak = rss()
    # peak_rss: the whole process (load included); steps_peak_rss: the training steps alone
    out = {"peak_rss": max(load_rss, steps_peak), "steps_peak_rss": steps_peak if peak_reset else None,
           "import_rss": base_rss, "load_rss": load_rss, "load_s": round(load_s, 1), **after_load,
           "threads": torch.get_num_threads(),
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


def save_random_model(name: str, folder: Path, dtype: str) -> None:
    """Random weights at `name`'s published shape, saved as safetensors by a child process (so this
    process never holds a multi-GB model while the measured children run)."""
    code = ("import json, sys, torch; from transformers import AutoConfig, AutoModelForCausalLM; "
            "torch.manual_seed(0); cfg = AutoConfig.for_model(**json.loads(sys.argv[1])); "
            "AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, sys.argv[3])).save_pretrained(sys.argv[2])")
    subprocess.run([sys.executable, "-c", code, json.dumps(SHAPES[name]), str(folder),
                    {"fp32": "float32", "bf16": "bfloat16"}[dtype]], check=True)


def model_folder(name: str, model_dirs: dict, root: Path | None, dtype: str) -> Path:
    """The random-weight checkpoint of `name`: reused from `root` (--model-root) when saved there
    before, else written once per invocation (a temporary folder, deleted at the end)."""
    if name not in model_dirs:
        d = root / f"{name}-{dtype}" if root else Path(tempfile.mkdtemp(prefix=f"iceburg-bench-{name}-"))
        if not (d / "config.json").is_file():
            t0 = time.perf_counter()
            save_random_model(name, d, dtype)
            print(f"saved random {name} ({dtype}) to {d} in {time.perf_counter() - t0:.0f} s", flush=True)
        model_dirs[name] = d
    return model_dirs[name]


def estimated_step_seconds(param_count: int, batch: int, seq: int, gc: bool, allocator: str) -> dict | None:
    """What `iceburg-train --detect-hardware` estimates for one optimizer step of this cell
    (hardware/timing.estimate_cpu_time with a matmul probe at THREADS threads, taken now)."""
    from iceburg.hardware.timing import estimate_cpu_time, matmul_gflops

    plan = {"device": "cpu", "cpu_allocator": allocator, "model": {"param_count": param_count},
            "gradient_checkpointing": gc, "micro_batch_size": batch, "gradient_accumulation_steps": 1}
    return estimate_cpu_time(plan, seq, matmul_gflops(THREADS))


def run_case(name: str, batch: int, seq: int, gc: bool, model_dirs: dict, device: str,
             default_allocator: bool = False, loop: str = "hf", steps: int = STEPS, qlora: bool = False,
             r: int = 16, root: Path | None = None, dtype: str = "fp32") -> dict:
    from iceburg.hardware.memory import estimate_training_memory
    from iceburg.hardware.model_shape import read_model_shape

    folder = model_folder(name, model_dirs, root, dtype)
    shape = read_model_shape(folder)
    targets = shape.linear_names
    est = estimate_training_memory(shape, micro_batch=batch, seq_len=seq, precision="fp32", lora_r=r,
                                   targets=targets, gradient_checkpointing=gc, qlora=qlora,
                                   device_kind="cpu" if device == "cpu" else "cuda",
                                   supervised_fraction=SUPERVISED_FRACTION if loop == "iceburg" else None)
    allocator = "glibc default" if default_allocator else "fixed mmap threshold"
    timing = estimated_step_seconds(shape.param_count, batch, seq, gc, allocator) \
        if device == "cpu" and not qlora else None
    cmd = [sys.executable, __file__, "--child", "--model-dir", str(folder), "--batch", str(batch),
           "--seq", str(seq), "--r", str(r), "--targets", ",".join(targets), "--device", device,
           "--loop", loop, "--fraction", str(SUPERVISED_FRACTION), "--steps", str(steps)]
    cmd += ["--gc"] * gc + ["--default-allocator"] * default_allocator + ["--qlora"] * qlora
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{name}: measured run failed:\n{proc.stderr[-3000:]}")
    meas = json.loads(proc.stdout.strip().splitlines()[-1])
    # the estimate models the training steps; the load's peak is reported beside it (load_rss)
    measured = meas["cuda_peak_allocated"] if device == "cuda" else meas.get("steps_peak_rss") or meas["peak_rss"]
    # under glibc's default allocator the planner's model of the peak is `glibc_total`
    predicted = est.glibc_total if default_allocator and device == "cpu" else est.total
    row = {"shape": name, "params_m": round(shape.param_count / 1e6, 1), "micro_batch": batch,
           "seq_len": seq, "grad_ckpt": gc, "qlora": qlora, "lora_r": r, "checkpoint_dtype": dtype,
           "estimate": est.to_dict(), "allocator": allocator,
           "estimated_gib": predicted / 2**30, "measured_gib": measured / 2**30,
           "error_pct": 100 * (predicted - measured) / measured, **meas}
    if timing:
        row["time_estimate"] = timing
        row["step_s_error_pct"] = 100 * (timing["seconds_per_step"] - meas["step_times"][-1]) / meas["step_times"][-1]
    return row


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


def _cases(args: argparse.Namespace, wanted: set[str]) -> list[tuple[tuple, dict]]:
    """((shape, micro_batch, seq_len, gc), options) for each run."""
    if not args.cells:
        return [(c, {"default_allocator": args.default_allocator, "qlora": False, "r": 16})
                for c in CASES if c[0] in wanted]
    out = []
    for cell in args.cells.split(","):
        name, bt, *flags = cell.split(":")
        b, t = (int(x) for x in bt.split("x"))
        r = next((int(f[1:]) for f in flags if f.startswith("r") and f[1:].isdigit()), 16)
        out.append(((name, b, t, "gc" in flags), {"default_allocator": args.default_allocator or "malloc" in flags,
                                                  "qlora": "qlora" in flags, "r": r}))
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
    ap.add_argument("--qlora", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--default-allocator", action="store_true",
                    help="leave glibc's malloc as it is (measures what configure_cpu_allocator saves)")
    ap.add_argument("--loop", default="iceburg", choices=["iceburg", "hf"],
                    help="iceburg: our trainer's loss (logits at supervised positions, the default); "
                    "hf: Hugging Face's full-sequence loss (labels=)")
    ap.add_argument("--fraction", type=float, default=SUPERVISED_FRACTION, help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="only the two smallest shapes")
    ap.add_argument("--cells", help="instead of the fixed cases: comma-separated SHAPE:BxT[:gc][:malloc][:qlora][:rN] "
                    "(malloc = glibc's default allocator, qlora = NF4 base as training/model.py loads it, "
                    "rN = LoRA rank, 16 by default), e.g. smollm2-135m:8x512,llama-3.2-1b:1x512:qlora:r32")
    ap.add_argument("--append", action="store_true", help="add the rows to bench/results/memory_planner_NAME.json "
                    "of an earlier invocation (with --name) instead of replacing it")
    ap.add_argument("--model-root", type=Path, help="keep the random-weight checkpoints in this folder and reuse "
                    "them across invocations (default: temporary folders, deleted at the end)")
    ap.add_argument("--checkpoint-dtype", default="fp32", choices=["fp32", "bf16"],
                    help="dtype of the saved random checkpoints (bf16: as Llama/Qwen publish them, half the disk); "
                    "training always loads fp32 (or NF4 with qlora)")
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

    import torch

    torch.set_num_threads(THREADS)
    wanted = set(args.only.split(",")) if args.only else (QUICK if args.quick else DEFAULT)
    rows, dirs = [], {}
    previous = Path(__file__).parent / "results" / f"memory_planner_{args.name}.json"
    if args.append and previous.is_file():  # earlier invocations' rows stay first, each with its own load/threads
        rows = json.loads(previous.read_text())["rows"]
    try:
        for case, opts in _cases(args, wanted):
            if case[0] in wanted or args.cells:
                row = run_case(*case, dirs, args.device, opts["default_allocator"], args.loop, args.steps,
                               opts["qlora"], opts["r"], args.model_root, args.checkpoint_dtype)
                rows.append(row)
                _write(rows, args)  # after every cell: a long grid keeps what it measured
                t_est = row.get("time_estimate", {}).get("seconds_per_step")
                print(f"{row['shape']:>15} b={row['micro_batch']} T={row['seq_len']} gc={row['grad_ckpt']!s:5} "
                      f"qlora={row['qlora']!s:5} r{row['lora_r']} {row['allocator']:>20} est {row['estimated_gib']:.2f} GiB  "
                      f"measured {row['measured_gib']:.2f} GiB ({row['error_pct']:+.1f}%)  steps {row['step_times']} s "
                      f"(estimated {t_est} s)  {row['tok_s_last']:.0f} tok/s  threads {row['threads']}  "
                      f"load {row['loadavg'][0]:.2f}", flush=True)
    finally:
        if not args.model_root:
            for d in dirs.values():
                shutil.rmtree(d, ignore_errors=True)
    print(_write(rows, args))


def _write(rows: list[dict], args: argparse.Namespace) -> str:
    """bench/results/memory_planner[_NAME].md and .json; returns the markdown."""
    import psutil
    import torch

    machine = {"platform": platform.platform(), "python": platform.python_version(),
               "torch": torch.__version__, "cpu_count": os.cpu_count(),
               "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
               "torch_threads": THREADS, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
               "device": args.device, "steps": args.steps, "loop": args.loop,
               "checkpoint_dtype": args.checkpoint_dtype,
               "supervised_fraction": SUPERVISED_FRACTION if args.loop == "iceburg" else "all (labels=)",
               "allocator": "per row" if args.cells else
               "glibc default" if args.default_allocator else "configure_cpu_allocator()",
               "load_average_end": os.getloadavg()}
    measure = "CUDA max_memory_allocated" if args.device == "cuda" else "peak RSS"
    lines = [f"# Memory planner vs measured {measure} ({args.device})", "",
             "| shape | params (M) | micro-batch | seq len | grad ckpt | weights | allocator | LoRA r | estimate (GiB) "
             "| measured (GiB) | error | load peak (GiB) | s/step (last) | s/step estimated | tok/s (last) | threads | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t_est = r.get("time_estimate")
        t_text = f"{t_est['seconds_per_step']:.1f} ({r['step_s_error_pct']:+.0f}%)" if t_est else "-"
        lines.append(f"| {r['shape']} | {r['params_m']} | {r['micro_batch']} | {r['seq_len']} | "
                     f"{'yes' if r['grad_ckpt'] else 'no'} | {'NF4 (QLoRA)' if r.get('qlora') else 'fp32'} | "
                     f"{r['allocator']} | {r['lora_r']} | {r['estimated_gib']:.2f} | "
                     f"{r['measured_gib']:.2f} | {r['error_pct']:+.1f}% | {r['load_rss'] / 2**30:.2f} | "
                     f"{r['step_times'][-1]:.1f} | {t_text} | "
                     f"{r['tok_s_last']:.0f} | {r.get('threads', THREADS)} | {r['loadavg'][0]:.2f} |")
    lines += ["", "Machine: " + ", ".join(f"{k}={v}" for k, v in machine.items())]
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    # one current table (earlier runs are in git history); the variant goes into the table's machine line
    machine["variant"] = args.name or ("" if args.device == "cpu" else args.device) + \
        ("_default_malloc" if args.default_allocator else "") + ("_hf_loss" if args.loop == "hf" else "_iceburg_loop")
    stem = "memory_planner" + (f"_{args.name}" if args.name else "")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    (out / f"{stem}.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
