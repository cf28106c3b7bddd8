"""Continual training with and without replay (docs/loop.md, "Replay: the measurement").

v1: the base trained on the surveyor sample transcripts. v2, from v1: the oracle sample transcripts
as the new data (another agent's answers: a shift in what is asked and how it is answered), with
`--replay-fraction` 0 (no replay) and the others given. Per v2: the new held-out loss (v1 -> v2,
learning) and v1's held-out loss (v1 -> v2, forgetting), with paired bootstrap 95% intervals, from
lineage.json (`recipes/continual.py: forgetting_check`).

    cpurun --exclusive .venv/bin/python bench/continual_replay.py [--model iceburg-tiny] [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_info, save  # noqa: E402


def train(**kw) -> float:
    from iceburg.config import TrainingConfig
    from iceburg.recipes.finetuner import ICEBURGFineTuner

    started = time.time()
    cfg = TrainingConfig(max_seq_length=512, export_formats=["huggingface"], learning_rate=2e-3, **kw)
    ICEBURGFineTuner(cfg).train()
    return time.time() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="iceburg-tiny")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.3, 0.5])
    args = ap.parse_args()
    import torch

    from iceburg.data import sample_data_path
    from iceburg.config import ModelType

    torch.set_num_threads(args.threads)
    out = Path(tempfile.mkdtemp(prefix="continual-")) / "surveyor"
    common = dict(base_model=args.model, max_steps=args.steps, num_threads=args.threads, output_dir=str(out))
    secs = {"v1": train(model_type="surveyor", output_name="v1", **common)}
    new = str(sample_data_path(ModelType.ORACLE))
    for f in args.fractions:
        name = f"v2-replay{f:g}"
        secs[name] = train(continue_from=str(out / "v1"), data_path=[new], replay_fraction=f, output_name=name,
                           **{k: v for k, v in common.items() if k != "output_dir"})
    lineage = json.loads((out / "lineage.json").read_text())
    rows = []
    for v in lineage["versions"][1:]:
        m, d = v["metrics"], v["data"]
        prev, new_ = m["previous_heldout_loss"], m["new_heldout_loss"]
        rows.append({"run": v["run"], "replay_fraction": d["replay_fraction"], "replayed": d["replay"],
                     "new_records": d["new_records"], "v1_heldout_v1": prev["base"], "v1_heldout_v2": prev["tuned"],
                     "forgetting": prev["delta"], "forgetting_ci95": prev["ci95"], "new_heldout_v1": new_["base"],
                     "new_heldout_v2": new_["tuned"], "learning": new_["delta"], "learning_ci95": new_["ci95"],
                     "gate_passed": v["passed"], "seconds": round(secs[v["run"]], 1)})
    meta = {**machine_info(), "model": args.model, "steps": args.steps, "threads": args.threads,
            "v1_seconds": round(secs["v1"], 1), "folder": str(out)}
    print(save(f"continual replay, {args.model}, {args.steps} steps per version", rows, meta, list(rows[0])))


if __name__ == "__main__":
    main()
