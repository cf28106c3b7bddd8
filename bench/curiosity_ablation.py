"""Does curiosity help? The same budget of generated records chosen by curiosity (iceburg generate's
ranked seeds) vs at random vs none, same teacher, 3 seeds (docs/emergence.md, "Does it help").

Per seed: two `iceburg generate` jobs (--seed-strategy curiosity / random, budget B) against one
teacher (`iceburg serve` over the embedded SmolLM2-135M-Instruct GGUF on a loopback port); then the
student (iceburg-tiny) is trained for a fixed number of steps on the curated training records alone
(none), or plus each job's records. Every condition is scored on the same held-out records (the
split generate itself keeps out of the data): loss per supervised token on all of them and on the
NOVEL ones (emergence category against the training records; when fewer than 3 are NOVEL, the most
novel third, and the table says so), plus the greedy answers' stop rate (iceburg/evaluation's
definition). Differences are paired over (seed, held-out record) with the paired bootstrap of
iceburg/evaluation.

    cpurun --exclusive .venv/bin/python bench/curiosity_ablation.py [--budget 6] [--steps 40]
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

CONDITIONS = ("none", "random", "curiosity")


def generate_job(url: str, folder: Path, strategy: str, seed: int, args) -> dict:
    from iceburg.generation import GenerateSettings, generate

    s = GenerateSettings(model_type="surveyor", teacher=url, budget=args.budget, job_dir=str(folder / f"{strategy}-{seed}"),
                         strategy=strategy, seed=seed, eval_fraction=args.eval_fraction, max_items=8 * args.budget,
                         ask_max_tokens=64, answer_max_tokens=args.answer_tokens, threads=args.threads)
    started = time.time()
    summary = generate(s)
    summary["seconds"] = round(time.time() - started, 1)
    return summary


def train(train_file: Path, extra: list[str], folder: Path, seed: int, args) -> Path:
    from iceburg.config import ModelType, TrainingConfig
    from iceburg.recipes.finetuner import ICEBURGFineTuner

    cfg = TrainingConfig(model_type=ModelType.SURVEYOR, base_model="iceburg-tiny", data_path=[str(train_file), *extra],
                         eval_fraction=0.0, max_steps=args.steps, learning_rate=2e-3, max_seq_length=512, seed=seed,
                         num_threads=args.threads, export_formats=["huggingface"], output_dir=str(folder),
                         output_name=f"{train_file.stem}-{len(extra)}-{seed}-{time.time_ns()}")
    return Path(ICEBURGFineTuner(cfg).train().run_dir) / "merged"


def score(model_dir: Path, heldout: list, max_new_tokens: int, threads: int) -> dict:
    """Per held-out record: (summed token loss, tokens) and whether the greedy answer stopped."""
    from iceburg.evaluation.heldout import prompt_of
    from iceburg.evaluation.models import HfModel
    from iceburg.evaluation.suites import Prompt

    model = HfModel(model_dir, heldout, threads=threads)
    losses = model.record_losses(heldout, 512)
    prompts = [Prompt(key=str(i), suite="heldout", record=i, messages=prompt_of(r.messages)[0], tools=r.tools,
                      reference=prompt_of(r.messages)[1], answer=True) for i, r in enumerate(heldout)]
    stops = [a.stopped for a in model.answer(prompts, max_new_tokens)]
    return {"losses": losses, "stops": stops}


def split_for(seed: int, folder: Path, args) -> tuple[list, list, Path]:
    """The seed's curated training records (written as the 'none' data file) and held-out records:
    exactly the split `iceburg generate --seed S --eval-fraction F` keeps out of its data."""
    from iceburg.generation import GenerateSettings
    from iceburg.generation.job import JobFolder
    from iceburg.generation.run import read_existing

    job = JobFolder(folder / f"split-{seed}")
    job.root.mkdir(parents=True, exist_ok=True)
    data = read_existing(GenerateSettings(model_type="surveyor", teacher="http://unused", budget=1, job_dir=str(job.root),
                                          seed=seed, eval_fraction=args.eval_fraction), job)
    path = folder / f"train-{seed}.jsonl"
    job.write_jsonl(path, (r.to_json() for r in data.train))
    return data.train, data.heldout, path


def novel_mask(train: list, heldout: list) -> tuple[list[bool], str]:
    from iceburg.emergence import EmbeddingNoveltyDetector, EmergenceProcessor
    from iceburg.records import Record

    copies = [Record(messages=r.messages, source=r.source, line=r.line, tools=r.tools) for r in heldout]
    k = max(1, min(10, len(copies) - 1))
    scored, _ = EmergenceProcessor(detector=EmbeddingNoveltyDetector(k=k, reference=train)).process(copies)
    novel = [r.metadata["emergence.category"] == "novel" for r in scored]
    if sum(novel) >= 3:
        return novel, "NOVEL"
    cut = sorted((r.signals["emergence.score"] for r in scored), reverse=True)[max(0, len(scored) // 3 - 1)]
    return [r.signals["emergence.score"] >= cut for r in scored], "most novel third (fewer than 3 NOVEL)"


def compare(results: dict, a: str, b: str, subset: str) -> dict:
    """Paired bootstrap of b - a over (seed, held-out record): loss per token, and stop rate."""
    from iceburg.evaluation.bootstrap import ItemValues, paired_bootstrap

    out = {}
    for metric in ("loss", "stop_rate"):
        va, vb = ItemValues(), ItemValues()
        for seed, r in results.items():
            for i, use in enumerate(r["masks"][subset]):
                for cond, vals in ((a, va), (b, vb)):
                    if not use:
                        vals.add(None)
                    elif metric == "loss":
                        ce, n = r[cond]["losses"][i] or (0.0, 0)
                        vals.add(ce / n if n else None, n)
                    else:
                        vals.add(float(r[cond]["stops"][i]))
        out[metric] = paired_bootstrap(va, vb)
    return out


def run_seed(seed: int, url: str, folder: Path, args, jobs: list) -> dict:
    train_recs, heldout, train_file = split_for(seed, folder, args)
    novel, novel_label = novel_mask(train_recs, heldout)
    r: dict = {"masks": {"all": [True] * len(heldout), "novel": novel}, "novel_label": novel_label}
    for cond in CONDITIONS:
        extra = []
        if cond != "none":
            summary = generate_job(url, folder, cond, seed, args)
            jobs.append({"seed": seed, "strategy": cond, **{k: summary[k] for k in ("kept", "items", "seconds")},
                         "teacher_calls": summary["teacher_calls_logged"], "rejects": summary["rejects"]})
            extra = [summary["generated"]] if summary["kept"] else []
        r[cond] = score(train(train_file, extra, folder, seed, args), heldout, args.answer_budget, args.threads)
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=int, default=6, help="generated records per job")
    ap.add_argument("--steps", type=int, default=40, help="training steps per condition")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--eval-fraction", type=float, default=0.3, help="held-out share (0.3: ~20 records)")
    ap.add_argument("--answer-tokens", type=int, default=256, help="teacher answer budget")
    ap.add_argument("--answer-budget", type=int, default=64, help="student answer budget for the stop rate")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    from iceburg.base_models.embedded import embedded_gguf_path
    from iceburg.serve.launch import start_serve

    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="curiosity-"))
    started = time.time()
    served = start_serve(embedded_gguf_path("smollm2-135m"), folder / "serve.log", threads=args.threads)
    jobs: list = []
    try:
        results = {seed: run_seed(seed, served.url + "/v1", folder, args, jobs) for seed in args.seeds}
    finally:
        served.stop()
    rows = []
    for subset in ("all", "novel"):
        for a, b in (("none", "random"), ("none", "curiosity"), ("random", "curiosity")):
            c = compare(results, a, b, subset)
            rows.append({"held-out": subset, "comparison": f"{b} - {a}", "n": c["loss"]["n"],
                         "loss A": c["loss"]["base"], "loss B": c["loss"]["tuned"], "loss delta": c["loss"]["delta"],
                         "loss ci95": c["loss"]["ci95"], "stop A": c["stop_rate"]["base"],
                         "stop B": c["stop_rate"]["tuned"], "stop ci95": c["stop_rate"]["ci95"]})
    columns = ["held-out", "comparison", "n", "loss A", "loss B", "loss delta", "loss ci95", "stop A", "stop B",
               "stop ci95"]
    meta = {**machine_info(), "student": "iceburg-tiny", "teacher": "smollm2-135m Q4_1 via iceburg serve",
            "budget": args.budget, "steps": args.steps, "seeds": args.seeds, "eval_fraction": args.eval_fraction,
            "novel_subset": sorted({r["novel_label"] for r in results.values()}), "seconds": round(time.time() - started),
            "jobs": jobs, "folder": str(folder)}
    print(save(f"curiosity ablation, budget {args.budget}, iceburg-tiny {args.steps} steps, {len(args.seeds)} seeds",
               rows, meta, columns))
    print(json.dumps(jobs, indent=1))


if __name__ == "__main__":
    main()
