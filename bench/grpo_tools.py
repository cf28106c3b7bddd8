"""GRPO on SmolLM2-135M over the bundled tool-calling sample only (`iceburg/data/sample/tools/
research_tools.jsonl`, scripts/make_tool_samples.py): every prompt is a tool turn (a turn that calls
tools, or the final answer, where the right call is none), so `tool_call` applies to every step.
Held-out rewards (greedy answers to the first 64 held-out prompts, the recipe's cap) before and
after with paired bootstrap 95% intervals (bench/grpo_smollm2.py's `intervals`), `tool_call` split
into call turns and final-answer turns, and the per-step curve from metrics.jsonl. One run; writes
bench/results/grpo_tools.{json,md}.

    cpurun .venv/bin/python bench/grpo_tools.py [--steps 40] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, machine_info, peak_rss_mb  # noqa: E402
from grpo_smollm2 import intervals  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "iceburg" / "data" / "sample" / "tools" / "research_tools.jsonl"
SPLIT_SEED = 42  # TrainingConfig's default seed: the split every earlier run and the SFT warm start used


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--completion", type=int, default=96)
    ap.add_argument("--max-seq-length", type=int, default=512)
    ap.add_argument("--eval-fraction", type=float, default=0.2)
    ap.add_argument("--learning-rate", type=float, default=None, help="default: the planner's")
    ap.add_argument("--base-model", default="smollm2-135m")
    ap.add_argument("--sft-epochs", type=int, default=0,
                    help="first SFT the base on the same training split (same --eval-fraction and seed, so the "
                         "held-out records stay held out) for this many epochs, then GRPO from the merged model")
    ap.add_argument("--sft-accum", type=int, default=8,
                    help="SFT gradient accumulation (micro-batch 2): 8 gives 11 optimizer steps an epoch, 2 gives 44")
    ap.add_argument("--sft-only", action="store_true",
                    help="run only the SFT warm start; write OUT/sft.json for a later --sft-from OUT")
    ap.add_argument("--sft-from", default=None,
                    help="GRPO from the SFT model an earlier --sft-only run left in this folder (its sft.json)")
    ap.add_argument("--group", type=int, default=4, help="--grpo-group")
    ap.add_argument("--prompts-per-step", type=int, default=1)
    ap.add_argument("--accum", type=int, default=1,
                    help="micro-batches per step (--prompts-per-step must divide by it): the same step in less "
                         "memory (dapo's normaliser spans the step, iceburg/training/grpo.py)")
    ap.add_argument("--temperature", type=float, default=1.0, help="--grpo-temperature (sampling)")
    ap.add_argument("--beta", type=float, default=0.0, help="--grpo-beta (KL to the SFT model / base)")
    ap.add_argument("--reward-weights", nargs="+", default=[], help="--reward-weights NAME=WEIGHT ...")
    ap.add_argument("--seed", type=int, default=SPLIT_SEED,
                    help="the run's seed (LoRA init, prompt order, sampling); the held-out split stays at seed "
                         f"{SPLIT_SEED}, the SFT warm start's, so its held-out records stay held out")
    ap.add_argument("--eval-samples", type=int, default=0,
                    help="--grpo-eval-samples: also score K answers per held-out prompt sampled at --temperature "
                         "(common seeds before and after) and report their per-prompt means beside the greedy ones")
    ap.add_argument("--tag", default="grpo_tools", help="results file name")
    ap.add_argument("--out", default=None, help="run folder parent (default: a temporary folder)")
    a = ap.parse_args()
    if a.prompts_per_step % a.accum:
        ap.error(f"--prompts-per-step {a.prompts_per_step} does not divide into --accum {a.accum} micro-batches")
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="grpo_tools_"))
    res = {"machine": machine_info()}
    if a.sft_only:
        out.mkdir(parents=True, exist_ok=True)
        sft = dict(sft_warm_start(a, out), machine=res["machine"], load_avg_1m_end=os.getloadavg()[0])
        (out / "sft.json").write_text(json.dumps(sft, indent=1))
        print(json.dumps(sft, indent=1))
        return
    res.update(run(a, out))
    res["machine"]["load_avg_1m_end"] = os.getloadavg()[0]
    write(a, res)


def run(a, out: Path) -> dict:
    from iceburg.config import TrainingConfig
    from iceburg.recipes.finetuner import ICEBURGFineTuner

    kw = {"learning_rate": a.learning_rate} if a.learning_rate else {}
    if a.sft_from:
        sft = json.loads((Path(a.sft_from) / "sft.json").read_text())
    else:
        sft = sft_warm_start(a, out) if a.sft_epochs else None
    cfg = TrainingConfig(base_model=sft["merged"] if sft else a.base_model, model_type="surveyor", objective="grpo", data_path=[str(DATA)],
                         eval_fraction=a.eval_fraction, max_steps=a.steps, grpo_group=a.group,
                         grpo_temperature=a.temperature, reward_weights=a.reward_weights, grpo_beta=a.beta,
                         grpo_eval_samples=a.eval_samples,
                         max_completion_length=a.completion, max_seq_length=a.max_seq_length,
                         batch_size=a.group * a.prompts_per_step // a.accum,
                         gradient_accumulation_steps=a.accum, num_threads=a.threads, output_dir=str(out),
                         output_name="run", save_steps=10 ** 6, export_formats=["huggingface"], seed=a.seed, **kw)
    started = time.time()
    with pinned_split(SPLIT_SEED):
        r = ICEBURGFineTuner(cfg).train()
    wall = time.time() - started
    rd = out / "run"
    if a.sft_from:
        same_held_out(Path(a.sft_from) / "sft" / "heldout.jsonl", rd / "heldout.jsonl")
    train = [m for m in map(json.loads, (rd / "metrics.jsonl").read_text().splitlines()) if m.get("type") == "train"]
    elapsed = [m["elapsed_s"] for m in train]
    per_step = [b - e for e, b in zip([0.0, *elapsed], elapsed)]
    curve = [{k: v for k, v in m.items() if k.startswith(("step", "loss", "reward", "completions"))} for m in train]
    per = r.preference["per_prompt"]
    kinds = held_out_kinds(rd, a)
    lora = json.loads((rd / "adapter" / "adapter_config.json").read_text())
    sampled = r.preference.get("sampled")
    if sampled:
        sp = sampled["per_prompt"]
        sampled = {"samples": sampled["samples"], "temperature": sampled["temperature"], "held_out": intervals(sp),
                   "tool_call_by_turn": split_tool_call(sp, kinds)}
    return {"sft_warm_start": sft, "held_out_sampled": sampled, "config": {"seed": a.seed, "eval_samples": a.eval_samples, "split_seed": SPLIT_SEED, "steps": a.steps, "group": a.group, "prompts_per_step": a.prompts_per_step, "accum": a.accum,
                       "temperature": a.temperature, "max_completion_length": a.completion,
                       "max_seq_length": a.max_seq_length, "eval_fraction": a.eval_fraction, "threads": a.threads,
                       "data": str(DATA.relative_to(DATA.parents[4])), "loss": cfg.grpo_loss, "beta": cfg.grpo_beta,
                       "learning_rate": r.learning_rate, "rewards": r.preference["rewards"],
                       "lora": {k: lora.get(k) for k in ("r", "lora_alpha", "lora_dropout", "target_modules")}},
            "prompts": r.preference["data"], "held_out": intervals(per),
            "held_out_tool_call_by_turn": split_tool_call(per, kinds),
            "held_out_answers": answers(r.preference.get("answers"), per, kinds),
            "wall_s": round(wall, 1), "training_s": round(r.training_seconds, 1),
            "s_per_step": {"median": round(statistics.median(per_step), 2),
                           "mean": round(sum(per_step) / len(per_step), 2)},
            "peak_rss_mib": round(peak_rss_mb()), "curve": curve, "blocks": blocks(curve, 5), "run_dir": str(rd)}


@contextlib.contextmanager
def pinned_split(seed: int):
    """The pipeline's held-out split (`iceburg.data.split.split_eval`, looked up at call time by
    `pipeline.split_step`) made with `seed` whatever the run's --seed, so that another seed varies the
    LoRA init, prompt order and sampling but not which records are held out (bench only: iceburg has
    one seed for both)."""
    from iceburg.data import split

    plain = split.split_eval
    split.split_eval = lambda records, fraction, _seed, content=None: plain(records, fraction, seed, content)
    try:
        yield
    finally:
        split.split_eval = plain


def same_held_out(sft_file: Path, run_file: Path) -> None:
    """Fail unless the GRPO run held out exactly the records the SFT warm start held out."""
    def records(p: Path) -> set[tuple]:  # (file, line): the record's JSON also carries this run's truth scores
        return {(r["source"], r["line"]) for r in map(json.loads, p.read_text().splitlines()) if r}

    if records(sft_file) != records(run_file):
        raise SystemExit(f"{run_file}: held-out records differ from the SFT warm start's ({sft_file}); the split "
                         "seed must be the warm start's")


def sft_warm_start(a, out: Path) -> dict:
    """SFT on the training split (the GRPO run splits the same records the same way: same data,
    --eval-fraction and seed), one process; the merged model is the GRPO run's base."""
    from iceburg.config import TrainingConfig
    from iceburg.recipes.finetuner import ICEBURGFineTuner

    cfg = TrainingConfig(base_model=a.base_model, model_type="surveyor", objective="sft", data_path=[str(DATA)],
                         eval_fraction=a.eval_fraction, epochs=a.sft_epochs, max_seq_length=a.max_seq_length,
                         # micro-batch 2 x 8: the planner's micro-batch 8 at 640 tokens reached 23.9 GB RSS here
                         # (its glibc estimate: 17.0 GB), the whole machine
                         batch_size=2, gradient_accumulation_steps=a.sft_accum, num_threads=a.threads, output_dir=str(out), output_name="sft", save_steps=10 ** 6,
                         export_formats=["huggingface"])
    started = time.time()
    r = ICEBURGFineTuner(cfg).train()
    return {"merged": str(r.merged_dir), "epochs": a.sft_epochs, "steps": r.steps, "learning_rate": r.learning_rate,
            "micro_batch": 2, "grad_accum": a.sft_accum,
            "eval_loss_before": r.eval_loss_before, "eval_loss_after": r.eval_loss_after,
            "wall_s": round(time.time() - started, 1)}


def held_out_kinds(rd: Path, a) -> list[str]:
    """Per held-out prompt the run scored ("call": the transcript called tools there; "answer": it
    answered in words), rebuilt as the recipe builds them (heldout.jsonl, the run's tokenizer)."""
    from transformers import AutoTokenizer

    from iceburg.config import TrainingConfig
    from iceburg.data.loader import normalise
    from iceburg.recipes.grpo import HELD_OUT_PROMPTS, grpo_prompts

    tok = AutoTokenizer.from_pretrained(rd / "merged")
    cfg = TrainingConfig(model_type="surveyor", max_seq_length=a.max_seq_length, max_completion_length=a.completion)
    records = [normalise(json.loads(x)["record"]) for x in (rd / "heldout.jsonl").read_text().splitlines() if x.strip()]
    prompts, _ = grpo_prompts(cfg, tok, records, None, a.max_seq_length - a.completion, "heldout")
    return ["call" if p.source.prompt.expected else "answer" for p in prompts[:HELD_OUT_PROMPTS]]


def split_tool_call(per: dict, kinds: list[str]) -> dict:
    """tool_call's paired interval on the call turns and on the final-answer turns separately."""
    out = {}
    for kind in ("call", "answer"):
        keep = [i for i, k in enumerate(kinds) if k == kind]
        sub = {side: {"tool_call": [per[side]["tool_call"][i] for i in keep]} for side in ("before", "after")}
        out[kind] = intervals(sub)["tool_call"] if keep else None
    return out


def answers(got: dict | None, per: dict, kinds: list[str]) -> list[dict]:
    """Each held-out prompt's greedy answer before and after, with its kind and tool_call scores."""
    if not got or not got.get("before"):
        return []
    return [{"prompt": pid, "kind": kind, "before": b, "after": a, "tool_call": [tb, ta]}
            for pid, kind, b, a, tb, ta in zip(got["prompts"], kinds, got["before"], got["after"],
                                               per["before"]["tool_call"], per["after"]["tool_call"])]


def interval_rows(held_out: dict, by_turn: dict) -> list[str]:
    """Table rows of the paired intervals per reward, then tool_call on call and final-answer turns."""
    row = "| {} | {base} | {tuned} | {delta} | {ci95} | {n} |"
    return ([row.format(k, **v) for k, v in held_out.items()]
            + [row.format(f"tool_call, {kind} turns", **v) for kind, v in by_turn.items() if v])

def blocks(curve: list[dict], width: int) -> list[dict]:
    """Means of the per-step rewards over consecutive blocks of `width` steps."""
    keys = ["reward", "rewards/tool_call/mean", "rewards/format/mean", "rewards/truth/mean", "completions/mean_length"]
    out = []
    for i in range(0, len(curve), width):
        chunk = curve[i:i + width]
        row = {"steps": f"{chunk[0]['step']}-{chunk[-1]['step']}"}
        for k in keys:
            vals = [c[k] for c in chunk if k in c]
            row[k] = round(sum(vals) / len(vals), 3) if vals else None
        out.append(row)
    return out


def write(a, res: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{a.tag}.json").write_text(json.dumps(res, indent=1))
    m, c = res["machine"], res["config"]
    warm = res.get("sft_warm_start")
    title = (f"# GRPO on SmolLM2-135M, tool-calling sample only ({a.steps} steps, G={a.group}, {a.prompts_per_step} "
             f"prompt(s)/step" + (f" in {a.accum} micro-batches" if a.accum > 1 else "")
             + f", sampling temperature {a.temperature}"
             + (f", seed {a.seed} (split seed {SPLIT_SEED})" if a.seed != SPLIT_SEED else "")
             + (f", rewards {' '.join(a.reward_weights)}" if a.reward_weights else "")
             + (f", KL beta {a.beta}" if a.beta else "")
             + (f", lr {a.learning_rate}" if a.learning_rate else "") + ")")
    if warm:
        title += (f", after SFT on the training split ({warm['epochs']} epoch(s), {warm['steps']} steps of "
                  f"{warm.get('micro_batch', 2)} x {warm.get('grad_accum', 8)}, "
                  + (f"its own run at {warm['machine']['torch_threads']} thread(s), load "
                     f"{warm['machine']['load_avg_1m']:.2f}, {warm['machine']['date_utc']} UTC, " if "machine" in warm else "")
                  + f"lr {warm['learning_rate']}, {warm['wall_s']} s; held-out SFT loss {warm['eval_loss_before']:.3f}"
                  f" -> {warm['eval_loss_after']:.3f}): before = the SFT model")
    lines = [title, "",
             f"machine: {m['cpu']} ({m['cores']} cores), {a.threads} torch threads, OMP_NUM_THREADS="
             f"{m['OMP_NUM_THREADS']}, load {m['load_avg_1m']:.2f} at start / {m['load_avg_1m_end']:.2f} at end, "
             f"{m['date_utc']} UTC; data: {c['data']} (eval_fraction {a.eval_fraction}); prompts "
             f"{res['prompts']}; max completion {a.completion} tokens, --max-seq-length {a.max_seq_length}; "
             f"lr {c['learning_rate']}; wall {res['wall_s']} s (training {res['training_s']} s, "
             f"{res['s_per_step']['median']} s/step median), peak RSS {res['peak_rss_mib']} MiB", "",
             "| reward (greedy, held-out) | before | after | delta | 95% CI | n |", "|---|---|---|---|---|---|"]
    lines += interval_rows(res["held_out"], res["held_out_tool_call_by_turn"])
    sampled = res.get("held_out_sampled")
    if sampled:
        lines += ["", f"| reward (held-out, mean of {sampled['samples']} answers sampled at T {sampled['temperature']}, "
                  "same seeds before and after) | before | after | delta | 95% CI | n |", "|---|---|---|---|---|---|"]
        lines += interval_rows(sampled["held_out"], sampled["tool_call_by_turn"])
    head = len(lines)  # printed: the run's line and the held-out tables
    lines += ["", "| steps | reward | tool_call | format | truth | mean length |", "|---|---|---|---|---|---|"]
    for b in res["blocks"]:
        lines.append(f"| {b['steps']} | {b['reward']} | {b['rewards/tool_call/mean']} | "
                     f"{b['rewards/format/mean']} | {b['rewards/truth/mean']} | {b['completions/mean_length']} |")
    lines += ["", "| step | loss | reward | tool_call | format | truth | mean length |", "|---|---|---|---|---|---|---|"]
    nan = float("nan")
    for s in res["curve"]:
        lines.append(f"| {s['step']} | {s['loss']:.4f} | {s['reward']:.3f} | {s.get('rewards/tool_call/mean', nan):.3f}"
                     f" | {s.get('rewards/format/mean', nan):.3f} | {s.get('rewards/truth/mean', nan):.3f} "
                     f"| {s['completions/mean_length']:.1f} |")
    (RESULTS / f"{a.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:head]))


if __name__ == "__main__":
    main()
