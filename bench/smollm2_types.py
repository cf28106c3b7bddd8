"""What a short fine-tune changes on real weights, per model type (SmolLM2-135M-Instruct).

For each of the five model types: train the embedded `smollm2-135m` base on that type's bundled
transcripts with the demo's settings (`--max-seq-length 512`, `--max-steps N`, the planner's
batch, weighted curriculum), then run `iceburg eval`'s code (`evaluation.evaluate_run`) on the
run's held-out records: held-out loss before -> after (the trainer's own eval losses), stop rate
(share of greedy answers to the first P held-out prompts that end with the end-of-turn token
within B new tokens) base vs tuned, and answers side by side.

    python bench/smollm2_types.py --threads 1 --max-steps 6 --prompts 8 --max-new-tokens 384

Writes bench/results/smollm2_types.{md,json} after every type (a partial table survives a stop)
and bench/results/smollm2_types_answers.md (the first answers side by side).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

TYPES = ["surveyor", "dissident", "synthesist", "oracle", "base"]


def clip(text: str, n: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=6)
    p.add_argument("--max-seq-length", type=int, default=512)
    p.add_argument("--prompts", type=int, default=8, help="held-out prompts answered greedily per model")
    p.add_argument("--max-new-tokens", type=int, default=384, help="stop-rate budget")
    p.add_argument("--answers", type=int, default=2, help="answers per type shown side by side")
    p.add_argument("--types", nargs="+", default=TYPES)
    p.add_argument("--out", default="/tmp/iceburg-bench/smollm2-types")
    p.add_argument("--keep", action="store_true",
                   help="keep the rows and answers already in bench/results for types not run now "
                        "(a partial table completed type by type; each row keeps its own load figure)")
    a = p.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(a.threads)
    from _common import machine_info, save

    from iceburg.config import TrainingConfig
    from iceburg.evaluation import evaluate_run
    from iceburg.training.finetuner import ICEBURGFineTuner

    rows, answers = [], []
    results = Path(__file__).resolve().parent / "results"
    if a.keep and (results / "smollm2_types.json").exists():
        rows = [r for r in json.loads((results / "smollm2_types.json").read_text())["rows"] if r["type"] not in a.types]
        kept = {r["type"] for r in rows}
        old = (results / "smollm2_types_answers.md").read_text().split("\n### ")[1:]
        answers = ["### " + blk.rstrip("\n") + "\n" for blk in old if blk.split(":", 1)[0] in kept]
    load_start = os.getloadavg()
    for t in a.types:
        started = time.time()
        cfg = TrainingConfig(model_type=t, base_model="smollm2-135m", max_seq_length=a.max_seq_length,
                             max_steps=a.max_steps, output_dir=a.out, output_name=f"smollm2-{t}",
                             export_formats=[], num_threads=a.threads)
        result = ICEBURGFineTuner(cfg).train()
        trained = time.time() - started
        rep = evaluate_run(result.run_dir, n_prompts=a.prompts, max_new_tokens=a.max_new_tokens,
                           reuse_run_losses=True)
        rows.append({"type": t, "train_examples": result.train_examples, "heldout": rep["heldout_records"],
                     "steps": result.steps, "loss_before": result.eval_loss_before,
                     "loss_after": result.eval_loss_after,
                     "stop_base": rep["base"]["stop_rate"], "stop_tuned": rep["tuned"]["stop_rate"],
                     "prompts": rep["prompts"], "train_s": round(trained, 1),
                     "eval_s": round(rep["base"]["seconds"] + rep["tuned"]["seconds"], 1),
                     "load_avg_1m": os.getloadavg()[0]})
        for s in rep["side_by_side"][: a.answers]:
            answers.append(f"### {t}: {clip(s['question'], 200)}\n\n"
                           f"- **base** ({'stopped' if s['base_stopped'] else 'no stop'}): {clip(s['base'])}\n"
                           f"- **tuned** ({'stopped' if s['tuned_stopped'] else 'no stop'}): {clip(s['tuned'])}\n"
                           f"- reference: {clip(s['reference'], 200)}\n")
        print(json.dumps(rows[-1]), flush=True)
        meta = {**machine_info(), "base": "smollm2-135m (SmolLM2-135M-Instruct, Q4_1 GGUF dequantized)",
                "max_seq_length": a.max_seq_length, "max_steps": a.max_steps, "prompts": a.prompts,
                "max_new_tokens": a.max_new_tokens, "decoding": "greedy", "load_average_start": load_start,
                "load_average_now": os.getloadavg()}
        table = save("smollm2_types", rows, meta, list(rows[0]))
        (Path(__file__).resolve().parent / "results" / "smollm2_types_answers.md").write_text(
            "# SmolLM2-135M per type: answers side by side (greedy, first held-out prompts)\n\n" + "\n".join(answers))
    print(table)


if __name__ == "__main__":
    main()
