"""A bounded GRPO run on SmolLM2-135M (embedded, offline) over the bundled transcripts of every
model type, and the held-out rewards (greedy answers) before/after with paired bootstrap 95%
intervals (`iceburg.evaluation.bootstrap`). One run; writes bench/results/grpo_smollm2.{json,md}.

    cpurun --exclusive .venv/bin/python bench/grpo_smollm2.py [--steps 40]

SmolLM2's chat template writes no tool calls (tool_policy: "unsupported"), so its tool-calling
transcripts are dropped and there is no `tool_call` reward to measure on this base (docs/grpo.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, machine_info  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--completion", type=int, default=96)
    a = ap.parse_args()
    from iceburg.config import TrainingConfig
    from iceburg.data import SAMPLE_DIR
    from iceburg.evaluation.bootstrap import ItemValues, paired_bootstrap
    from iceburg.recipes.finetuner import ICEBURGFineTuner

    files = [str(SAMPLE_DIR / f"{t}.jsonl") for t in ("base", "surveyor", "dissident", "synthesist", "oracle")]
    out = Path(tempfile.mkdtemp(prefix="grpo_smollm2_"))
    cfg = TrainingConfig(base_model="smollm2-135m", model_type="base", objective="grpo", data_path=files,
                         eval_fraction=0.25, max_steps=a.steps, grpo_group=4, max_completion_length=a.completion,
                         batch_size=4, gradient_accumulation_steps=1, num_threads=a.threads,
                         output_dir=str(out), output_name="run", save_steps=10 ** 6)
    started = time.time()
    r = ICEBURGFineTuner(cfg).train()
    wall = time.time() - started
    per = r.preference["per_prompt"]
    intervals = {}
    for name in per["before"]:
        b, t = ItemValues(), ItemValues()
        for x, y in zip(per["before"][name], per["after"][name]):
            b.add(x)
            t.add(y)
        intervals[name] = paired_bootstrap(b, t)
    curve = [json.loads(x) for x in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    curve = [{k: v for k, v in m.items() if k.startswith(("step", "loss", "reward", "completions", "kl"))}
             for m in curve if m.get("type") == "train"]
    res = {"machine": machine_info(), "config": {"steps": a.steps, "group": 4, "max_completion_length": a.completion,
                                                 "threads": a.threads, "loss": cfg.grpo_loss,
                                                 "learning_rate": r.learning_rate},
           "held_out": intervals, "prompts": r.preference["data"], "wall_s": round(wall, 1),
           "training_s": round(r.training_seconds, 1), "curve": curve}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "grpo_smollm2.json").write_text(json.dumps(res, indent=1))
    lines = [f"# GRPO on SmolLM2-135M: held-out rewards before/after ({a.steps} steps, G=4)", "",
             f"machine: {res['machine']['cpu']}, {a.threads} torch threads; wall {res['wall_s']} s "
             f"(training {res['training_s']} s)", "", "| reward | before | after | delta | 95% CI | n |",
             "|---|---|---|---|---|---|"]
    for k, v in intervals.items():
        lines.append(f"| {k} | {v['base']} | {v['tuned']} | {v['delta']} | {v['ci95']} | {v['n']} |")
    lines += ["", "| step | loss | reward | format | truth | mean length |", "|---|---|---|---|---|---|"]
    for m in curve:
        lines.append(f"| {m['step']} | {m['loss']:.4f} | {m['reward']:.3f} | {m.get('rewards/format/mean', float('nan')):.3f} "
                     f"| {m.get('rewards/truth/mean', float('nan')):.3f} | {m['completions/mean_length']:.1f} |")
    (RESULTS / "grpo_smollm2.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:12]))


if __name__ == "__main__":
    main()
