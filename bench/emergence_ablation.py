"""Curriculum ablation: eval loss after the same number of optimizer steps, plain shuffled training
vs each emergence strategy, same seeds, on the bundled sample data and the embedded base model.

    python bench/emergence_ablation.py                    # seeds 0 1 2
    python bench/emergence_ablation.py --seeds 0 --steps 20

Pipeline pieces are the project's own: loader -> truth filter -> held-out split (the pipeline's
default split, the same for every run) -> EmergenceProcessor (scores the training part) -> curriculum ->
assistant-only encoding -> LoRA (finetuner.apply_lora) -> trainer.train for exactly `--steps`
steps -> eval loss (mean CE per supervised eval token, unweighted). Only the curriculum and the
training seed (LoRA init, shuffles) change between runs. Results:
bench/results/emergence_ablation.md.

    python bench/emergence_ablation.py --data mixed --thresholds quantile   # issue 13

`--data mixed` adds the clean transcripts of the real README corpus (bench/truth_real_corpus.py,
pinned packages) to the sample transcripts: the bundled samples alone score only TRANSITIONAL
and FAMILIAR. The samples keep the pipeline's split (the base never saw their held-out part);
the README transcripts get their own split_eval (the base never saw any README). Train and eval
records are scored by one EmergenceProcessor over both, so each held-out record has a category;
eval loss is reported per category and per source, before and after training. `--thresholds
quantile` sets the category bounds at the 80th/50th/20th percentile of the training scores
(default 0.8/0.5/0.2), so that every category is populated.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
STRATEGIES = ["plain", "weighted", "novel_first", "progressive"]
TYPES = ["base", "surveyor", "dissident", "synthesist", "oracle"]


def load_data():
    """The pipeline's own steps (iceburg.pipeline), with a read step over all five sample files."""
    from iceburg.config import TrainingConfig
    from iceburg.data import sample_data_path
    from iceburg.data.loader import read_records
    from iceburg.pipeline import emergence_step, run_steps, split_step, truth_step
    from iceburg.records import RejectWriter

    def read_all_types(state):
        for t in TYPES:
            for r in read_records([str(sample_data_path(t))], state.rejects):
                r.agent_type = r.agent_type or (None if t == "base" else t)
                state.records.append(r)
        state.stats["read"] = len(state.records)

    # The pipeline's own split (defaults: fraction 0.1, seed 42): iceburg-tiny is pre-trained
    # without exactly these held-out records, so eval loss is on text the base never saw.
    state = run_steps(TrainingConfig(), RejectWriter(None), (read_all_types, truth_step, split_step, emergence_step))
    return state.curriculum.records, state.eval_records, state.stats.get("emergence"), state.stats["read"]


def load_mixed(thresholds: str):
    """Sample + real README transcripts, truth-filtered, split, scored together (see module doc).
    Returns (train records scored, {eval group: records}, category counts, records read, bounds)."""
    from truth_real_corpus import PINNED, build

    from iceburg.config import TrainingConfig
    from iceburg.data import sample_data_path
    from iceburg.data.loader import coerce_record, read_records
    from iceburg.data.split import split_eval
    from iceburg.emergence import EmergenceProcessor
    from iceburg.pipeline import run_steps, split_step, truth_step
    from iceburg.records import RejectWriter

    cfg = TrainingConfig()

    def read_all_types(state):
        for t in TYPES:
            for r in read_records([str(sample_data_path(t))], state.rejects):
                r.agent_type = r.agent_type or (None if t == "base" else t)
                r.metadata["source_kind"] = "sample"
                state.records.append(r)

    samp = run_steps(cfg, RejectWriter(None), (read_all_types, truth_step, split_step))
    only = {ln.strip().lower() for ln in PINNED.read_text().split("\n") if ln.strip() and not ln.startswith("#")}
    groups, _src = build(13, only=only)

    def read_real(state):
        for i, (d, _lab, _p) in enumerate(groups["clean"]):
            rec, _why = coerce_record(d, i, source="readme")
            rec.metadata["source_kind"] = "readme"
            state.records.append(rec)

    real = run_steps(cfg, RejectWriter(None), (read_real, truth_step))
    real_train, real_eval = split_eval(real.records, cfg.eval_fraction, cfg.seed)
    train, ev = samp.records + real_train, samp.eval_records + real_eval
    proc = EmergenceProcessor()
    scored, estats = proc.process(train + ev)
    n_read = samp.stats.get("truth_filter", {}).get("total_input", 0) + len(groups["clean"])
    train_s, eval_s = scored[:len(train)], scored[len(train):]
    if len(scored) != len(train) + len(ev):
        raise SystemExit("emergence dropped records; the train/eval alignment would break")
    bounds = proc.thresholds
    if thresholds == "quantile":
        import numpy as np

        q = np.quantile([r.signals["emergence.score"] for r in train_s], [0.8, 0.5, 0.2])
        bounds = proc.thresholds = tuple(float(round(x, 4)) for x in q)
        for r in scored:  # re-categorise with the new bounds (the scores do not change)
            cat = proc.categorise(r.signals["emergence.score"])
            r.weight = r.signals["emergence.category_weight"] = proc.category_weights[cat]
            r.metadata["emergence.category"] = cat.value
    cats = {c: sum(r.metadata["emergence.category"] == c for r in train_s)
            for c in ("novel", "transitional", "familiar", "baseline")}
    eval_groups = {"all": eval_s}
    for c in ("novel", "transitional", "familiar", "baseline"):
        eval_groups[c] = [r for r in eval_s if r.metadata["emergence.category"] == c]
    for k in ("sample", "readme"):
        eval_groups[k] = [r for r in eval_s if r.metadata.get("source_kind") == k]
    return train_s, eval_groups, cats, n_read, bounds


def plain_steps(scored, args) -> int:
    """Optimizer steps of `args.epochs` epochs of plain training (same packing and batch)."""
    from transformers import AutoTokenizer

    from iceburg.models.tiny import ensure_tiny_model
    from iceburg.training.encoding import encode, ensure_chat_template, eos_ids
    from iceburg.training.trainer import TrainArgs, plan_steps

    tok = AutoTokenizer.from_pretrained(ensure_tiny_model())
    ensure_chat_template(tok)
    eos = eos_ids(tok)
    exs = [e for e in (encode(tok, r, args.max_length, eos) for r in scored) if e]
    targs = TrainArgs(epochs=args.epochs, micro_batch_size=args.micro_batch, grad_accum=1,
                      max_length=args.max_length, packing=True)
    return len(plan_steps(exs, lambda e: list(range(len(exs))), targs))


def one_run(strategy: str, seed: int, scored, eval_recs, args, groups=None) -> dict:
    import torch

    from iceburg.config import TrainingConfig
    from iceburg.emergence import create_curriculum, plain_curriculum
    from iceburg.models.tiny import ensure_tiny_model
    from iceburg.training.encoding import encode_all, ensure_chat_template, eos_ids
    from iceburg.training.model import apply_lora, load_model, load_tokenizer
    from iceburg.training.trainer import TrainArgs, evaluate, train

    cfg = TrainingConfig(seed=seed, lora_r=args.lora_r, lora_alpha=2 * args.lora_r)
    tok = load_tokenizer(ensure_tiny_model(), cfg)
    ensure_chat_template(tok)
    model = load_model(ensure_tiny_model(), cfg)
    eos = eos_ids(tok, model.generation_config)
    records = copy.deepcopy(scored)
    cur = plain_curriculum(records) if strategy == "plain" else create_curriculum(records, strategy)
    # the trainer's own tool policy (the samples hold tool-calling records since issue 17)
    from iceburg.training.tool_render import tool_policy

    _kind, skip = tool_policy(tok, [*cur.records, *eval_recs])
    enc = encode_all(tok, cur.records, args.max_length, eos, weights=cur.weights, skip=skip)
    exs, pos = enc.examples, {o: n for n, o in enumerate(enc.kept)}
    ev = encode_all(tok, eval_recs, args.max_length, eos, skip=skip).examples
    plan = SimpleNamespace(lora_r=args.lora_r, lora_alpha=2 * args.lora_r, lora_target_modules=[],
                           gradient_checkpointing=False)
    model = apply_lora(model, plan, cfg)
    targs = TrainArgs(epochs=1, max_steps=args.steps, learning_rate=args.lr, warmup_ratio=0.05,
                      micro_batch_size=args.micro_batch, grad_accum=1, max_length=args.max_length,
                      packing=True, eval_steps=args.steps, seed=seed, show_progress=False,
                      pad_id=tok.pad_token_id if tok.pad_token_id is not None else min(eos))
    group_ex = {g: encode_all(tok, recs, args.max_length, eos, skip=skip).examples
                for g, recs in (groups or {}).items() if g != "all" and recs}
    before = evaluate(model, ev, targs)
    group_before = {g: evaluate(model, e, targs) for g, e in group_ex.items()}
    t = time.perf_counter()
    out = train(model, exs, lambda e: [pos[i] for i in cur.epoch_order(e, seed) if i in pos], ev, targs)
    row = {"strategy": strategy, "seed": seed, "steps": out.steps, "eval_before": round(before, 4),
           "eval_after": round(out.eval_history[-1][1], 4), "train_loss": round(out.train_loss, 4),
           "supervised_tokens": out.supervised_tokens, "seconds": round(time.perf_counter() - t, 1),
           "train_examples": len(exs), "eval_examples": len(ev)}
    for g, e in group_ex.items():  # change of eval loss per held-out group (after - before)
        row[f"d_{g}"] = round(evaluate(model, e, targs) - group_before[g], 4)
        row[f"before_{g}"] = round(group_before[g], 4)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=60, help="optimizer steps per run (same for all)")
    ap.add_argument("--epochs", type=int, default=None,
                    help="instead of --steps: as many steps as plain training takes for this many epochs")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--micro-batch", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--strategies", nargs="+", default=STRATEGIES)
    ap.add_argument("--name", default=None, help="results file name (bench/results/<name>.md)")
    ap.add_argument("--data", choices=["sample", "mixed"], default="sample",
                    help="mixed: sample + real README transcripts (see the module doc)")
    ap.add_argument("--thresholds", choices=["default", "quantile"], default="default",
                    help="category bounds: 0.8/0.5/0.2, or the training scores' 80/50/20th percentiles")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from _common import machine_info, save

    args.name = args.name or ("emergence_ablation" + ("" if args.data == "sample" else f"_{args.data}_{args.thresholds}"))
    groups, bounds = None, None
    if args.data == "mixed":
        scored, groups, cats, n_read, bounds = load_mixed(args.thresholds)
        eval_recs = groups["all"]
    else:
        scored, eval_recs, estats, n_read = load_data()
        cats = {"novel": estats.novel_count, "transitional": estats.transitional_count,
                "familiar": estats.familiar_count, "baseline": estats.baseline_count}
    print(f"{n_read} records read, {len(scored)} train / {len(eval_recs)} eval; categories: "
          + ", ".join(f"{k} {v}" for k, v in cats.items())
          + (f"; eval groups: " + ", ".join(f"{g} {len(r)}" for g, r in groups.items()) if groups else ""),
          flush=True)
    if args.epochs:
        args.steps = plain_steps(scored, args)
        print(f"{args.epochs} plain epoch(s) = {args.steps} steps", flush=True)
    rows = []
    for seed in args.seeds:
        for s in args.strategies:
            r = one_run(s, seed, scored, eval_recs, args, groups)
            rows.append(r)
            print(r, flush=True)
    summary = []
    for s in args.strategies:
        vals = [r["eval_after"] for r in rows if r["strategy"] == s]
        summary.append({"strategy": s, "seed": "mean", "eval_after": round(statistics.mean(vals), 4),
                        "eval_sd": round(statistics.stdev(vals), 4) if len(vals) > 1 else None,
                        "eval_before": rows[0]["eval_before"], "steps": args.steps,
                        **{k: round(statistics.mean(r[k] for r in rows if r["strategy"] == s), 4)
                           for k in rows[0] if k.startswith("d_")}})
    meta = machine_info()
    from iceburg.models.tiny import ensure_tiny_model

    tiny = json.loads((ensure_tiny_model() / "iceburg_tiny.json").read_text())
    meta.update(base=f"iceburg-tiny v{tiny.get('builder_version')}")
    meta.update(steps=args.steps, plain_epochs=args.epochs, lr=args.lr, lora_r=args.lora_r, micro_batch=args.micro_batch,
                max_length=args.max_length, train_records=len(scored), eval_records=len(eval_recs),
                categories="/".join(f"{k} {v}" for k, v in cats.items()), data=args.data,
                thresholds=f"{args.thresholds} {bounds}" if bounds else args.thresholds)
    if groups:
        meta["eval_groups"] = ", ".join(f"{g} {len(r)}" for g, r in groups.items())
    cols = ["strategy", "seed", "steps", "eval_before", "eval_after", "eval_sd", "train_loss",
            "supervised_tokens", "seconds"] + [k for k in rows[0] if k.startswith("d_")]
    print(save(args.name, rows + summary, meta, cols))


if __name__ == "__main__":
    main()
