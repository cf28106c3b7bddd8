"""Continual training with and without replay (docs/loop.md, "Replay: the measurement").

v1: the base trained on the surveyor sample transcripts (the demo's data). v2, from v1: the oracle
sample transcripts as the new data (another agent's answers: a shift in what is asked and how it is
answered), with `--replay-fraction` 0 (no replay) and the others given. Per v2: the new held-out
loss (v1 -> v2, learning) and v1's held-out loss (v1 -> v2, forgetting), with paired bootstrap 95%
intervals, from lineage.json (`recipes/continual.py: forgetting_check`).

    cpurun --exclusive .venv/bin/python bench/continual_replay.py [--model iceburg-tiny] [--steps 40]
    # SmolLM2-135M as the demo trains it (one epoch per version, 512 tokens), in stages that share
    # one folder so each stage holds a CPU slot only for itself; the table covers every v2 so far:
    cpurun .venv/bin/python bench/continual_replay.py --base-model smollm2-135m --epochs 1 --threads 1 \
        --batch-size 2 --grad-accum 4 --out /tmp/cr --part smollm2 --fractions 0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_info, peak_rss_mb, save  # noqa: E402

TINY_LR = 2e-3  # iceburg-tiny barely moves at the width-scaled default in 40 steps (the first table used it)


def train(**kw) -> float:
    from iceburg.config import TrainingConfig
    from iceburg.recipes.finetuner import ICEBURGFineTuner

    started = time.time()
    cfg = TrainingConfig(max_seq_length=512, export_formats=["huggingface"], **kw)
    ICEBURGFineTuner(cfg).train()
    return time.time() - started


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", "--base-model", dest="model", default="iceburg-tiny")
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps per version (ignored with --epochs)")
    ap.add_argument("--epochs", type=int, default=None, help="passes per version instead of --steps (the demo: 1)")
    ap.add_argument("--learning-rate", type=float, default=None,
                    help=f"default: {TINY_LR} for iceburg-tiny, else iceburg's width-scaled default (the demo's)")
    ap.add_argument("--batch-size", type=int, default=None, help="micro-batch (default: the planner's)")
    ap.add_argument("--grad-accum", type=int, default=None, help="micro-batches per step (default: the planner's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.3, 0.5])
    ap.add_argument("--out", default=None, help="the line's folder, kept: v1 and finished v2 runs in it are reused")
    ap.add_argument("--part", default=None, help="results file bench/results/continual_replay_<part>.{md,json}")
    return ap.parse_args()


def settings(args: argparse.Namespace) -> dict:
    lr = args.learning_rate if args.learning_rate is not None else TINY_LR if args.model == "iceburg-tiny" else None
    s = dict(base_model=args.model, num_threads=args.threads, learning_rate=lr, batch_size=args.batch_size,
             gradient_accumulation_steps=args.grad_accum)
    return {**s, **({"epochs": args.epochs} if args.epochs else {"max_steps": args.steps})}


def run_stages(args: argparse.Namespace, out: Path, common: dict) -> dict:
    """Train what the folder lacks; each stage's seconds, load, peak RSS and the iceburg source it
    ran (a snapshot when the shared tree is mid-edit) go to stages.json."""
    import iceburg
    from iceburg.config import ModelType
    from iceburg.data import sample_data_path

    log = out / "stages.json"
    stages = json.loads(log.read_text()) if log.is_file() else {}
    todo = [("v1", dict(model_type="surveyor", output_name="v1", output_dir=str(out), **common))]
    new = str(sample_data_path(ModelType.ORACLE))
    for f in args.fractions:
        todo.append((f"v2-replay{f:g}", dict(continue_from=str(out / "v1"), data_path=[new], replay_fraction=f,
                                             output_name=f"v2-replay{f:g}", **common)))
    for name, kw in todo:
        if name in stages:
            continue
        load = os.getloadavg()[0]
        seconds = round(train(**kw), 1)
        stages[name] = {"seconds": seconds, "code": str(Path(iceburg.__file__).parent), "load_avg_1m_start": load,
                        "load_avg_1m_end": os.getloadavg()[0], "peak_rss_mb_process": round(peak_rss_mb())}
        out.mkdir(parents=True, exist_ok=True)
        log.write_text(json.dumps(stages, indent=2))
    return stages


def main() -> None:
    args = parse()
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="continual-")) / "surveyor"
    common = settings(args)
    stages = run_stages(args, out, common)
    lineage = json.loads((out / "lineage.json").read_text())
    rows = []
    for v in lineage["versions"][1:]:
        m, d = v["metrics"], v["data"]
        prev, new_ = m["previous_heldout_loss"], m["new_heldout_loss"]
        rows.append({"run": v["run"], "replay_fraction": d["replay_fraction"], "replayed": d["replay"],
                     "new_records": d["new_records"], "v1_heldout_v1": prev["base"], "v1_heldout_v2": prev["tuned"],
                     "forgetting": prev["delta"], "forgetting_ci95": prev["ci95"], "new_heldout_v1": new_["base"],
                     "new_heldout_v2": new_["tuned"], "learning": new_["delta"], "learning_ci95": new_["ci95"],
                     "gate_passed": v["passed"], "seconds": stages.get(v["run"], {}).get("seconds")})
    size = f"{args.epochs} epoch(s)" if args.epochs else f"{args.steps} steps"
    meta = {**machine_info(), "model": args.model, "per_version": size, "threads": args.threads,
            **{k: v for k, v in common.items() if k not in ("base_model", "num_threads")},
            "stages": stages, "folder": str(out)}
    print(save(f"continual replay, {args.model}, {size} per version", rows, meta, list(rows[0]), part=args.part))


if __name__ == "__main__":
    main()
