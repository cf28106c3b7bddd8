"""Seconds per GRPO step, iceburg's `train_grpo` vs TRL 1.16's GRPOTrainer, in one run: the same
SmolLM2-135M weights, tokenizer and chat template, the same training prompts in the same order, G,
answer length, LoRA (r, alpha, dropout, targets), no gradient checkpointing, loss `dapo`, beta 0,
the same reward function (a cheap one, so the trainers are timed, not the reward) and the same
torch threads. TRL runs in a subprocess, so its peak RSS (VmHWM) is its own.

Answer length is matched exactly: every answer is `--completion` tokens (iceburg: no end-of-turn id
stops the sampler; TRL: `min_new_tokens` = `max_completion_length`), so both trainers sample,
score and train on the same number of tokens per step. `--natural` lets answers end at
`<|im_end|>` instead (lengths then differ by sampler; per-token figures are reported).

    cpurun --exclusive .venv/bin/python bench/grpo_throughput.py [--steps 6] [--completion 96]

Writes bench/results/grpo_throughput.{md,json}. `--profile N` times one step's parts instead
(prefill, decode, reward, loss forward/backward, optimizer) over N steps and prints them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, machine_info, own_peak_rss_mib, trl_subprocess  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--completion", type=int, default=96)
    ap.add_argument("--max-seq-length", type=int, default=512)
    ap.add_argument("--types", nargs="+", default=["surveyor", "dissident"])
    ap.add_argument("--base-model", default="smollm2-135m")
    ap.add_argument("--natural", action="store_true", help="answers end at the end-of-turn token")
    ap.add_argument("--trl", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--sample-dtype", nargs="+", default=["float32"], choices=["float32", "bfloat16"],
                    help="iceburg runs once per value, each on a fresh LoRA model: float32 (the default sampler) "
                         "and/or bfloat16 (GrpoArgs.sample_dtype, opt-in); TRL runs once")
    ap.add_argument("--profile", type=int, default=0, help="time one step's parts over N steps and exit")
    ap.add_argument("--tag", default="", help="results file suffix (grpo_throughput<_tag>)")
    ap.add_argument("--trl-child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.trl_child:
        print(json.dumps(trl_child(json.loads(Path(a.trl_child).read_text()))))
        return
    import torch

    torch.set_num_threads(a.threads)
    out = Path(tempfile.mkdtemp(prefix="grpo_throughput_"))
    machine = machine_info()
    job = build(a, out)
    if a.profile:
        profile(job, a)
        return
    res = {"config": job["config"], "machine": machine}
    for i, dt in enumerate(a.sample_dtype):
        if i:
            job["model"] = job["make_model"]()
        job["gargs"].sample_dtype = None if dt == "float32" else dt
        res["iceburg" if dt == "float32" else f"iceburg_{dt}"] = iceburg_steps(job, a)
        del job["model"]
    res["trl"] = trl_run(a, out, job, res) if a.trl else {"skipped": "--no-trl"}
    res["machine"]["load_avg_1m_end"] = os.getloadavg()[0]
    write(a, res)


class Brevity:
    """The bench's reward, TRL's `brevity` below: shorter is better; its cost is negligible."""

    names = ["brevity"]
    weights = [1.0]

    def score(self, sources, completions):
        return {"brevity": [-len(c.text) / 1000 for c in completions]}


def build(a, out: Path) -> dict:
    """The GRPO recipe's own parts up to the model: run folder, pipeline, template, training prompts,
    plan, TrainArgs, the LoRA model (`recipes/grpo.py`)."""
    from iceburg.config import TrainingConfig
    from iceburg.data import SAMPLE_DIR
    from iceburg.recipes.grpo import grpo_prompts, planning_examples
    from iceburg.recipes.run import open_run
    from iceburg.recipes.sft import load_tokens, prepare_data
    from iceburg.records import RejectWriter
    from iceburg.training.grpo import GrpoArgs
    from iceburg.training.model import build_model
    from iceburg.training.run_parts import plan_run, train_args

    files = [str(SAMPLE_DIR / f"{t}.jsonl") for t in a.types]
    cfg = TrainingConfig(base_model=a.base_model, model_type=a.types[0], objective="grpo", data_path=files,
                         eval_fraction=0.25, max_steps=a.steps, grpo_group=4, max_completion_length=a.completion,
                         max_seq_length=a.max_seq_length, batch_size=4, gradient_accumulation_steps=1,
                         num_threads=a.threads, output_dir=str(out), output_name="run", save_steps=10 ** 6)
    run, base = open_run(cfg)
    with RejectWriter(run.rejects) as rejects:
        data = prepare_data(cfg, run, rejects)
        tokens, _, skip = load_tokens(cfg, base, data.curriculum.records)
    prompts, _ = grpo_prompts(cfg, tokens.tokenizer, data.curriculum.records, skip,
                              a.max_seq_length - a.completion, "train")
    plan = plan_run(base.path, cfg, planning_examples(prompts, cfg))
    args = train_args(cfg, plan, tokens.tokenizer, tokens.eos, run)
    args.micro_batch_size = max(1, plan.micro_batch_size // cfg.grpo_group)
    args.checkpoint_dir, args.show_progress = None, False
    gargs = GrpoArgs(group=4, loss_type=cfg.grpo_loss, beta=0.0, max_completion_length=a.completion)
    def make_model():
        return build_model(base.path, cfg, plan, tokens.tokenizer, tokens.added)

    model = make_model()
    tokens.tokenizer.save_pretrained(out / "tokenizer")
    # natural: the run's end-of-turn ids; matched: an id past the vocabulary, so no answer stops early
    eos = set(tokens.eos) if a.natural else {len(tokens.tokenizer) + 7}
    lora = model.peft_config["default"]
    config = {"steps": a.steps, "group": 4, "prompts_per_step": args.micro_batch_size * args.grad_accum,
              "max_completion_length": a.completion, "answer_length": "natural" if a.natural else "matched",
              "max_seq_length": a.max_seq_length, "threads": a.threads, "loss": gargs.loss_type, "beta": 0.0,
              "learning_rate": args.learning_rate, "gradient_checkpointing": plan.gradient_checkpointing,
              "lora": {"r": lora.r, "lora_alpha": lora.lora_alpha, "lora_dropout": lora.lora_dropout,
                       "target_modules": sorted(lora.target_modules)}, "train_prompts": len(prompts)}
    return dict(model=model, make_model=make_model, tok=tokens.tokenizer, prompts=prompts, args=args, gargs=gargs, eos=eos,
                base_path=str(base.path), out=out, config=config, run_eos=set(tokens.eos), cfg=cfg)


def iceburg_steps(job: dict, a) -> dict:
    """`a.steps` steps of `train_grpo` (no held-out prompts), seconds per step from the engine's clock."""
    from iceburg.training.grpo import train_grpo

    times, lengths, order = [], [], []

    class Clock:  # the engine's callback protocol; a step starts at its first micro-batch's on_batch
        t = None

        def on_batch(self, ids):
            self.t = self.t or time.perf_counter()
            order.extend(ids)

        def on_step(self, step, metrics):
            times.append(time.perf_counter() - self.t)
            self.t = None
            lengths.append(metrics["completions/mean_length"])

        def on_eval(self, step, loss):
            pass

    job["args"].max_steps = a.steps
    train_grpo(job["model"], job["tok"], job["prompts"], [], job["args"], job["gargs"], Brevity(), job["eos"],
               callbacks=[Clock()])
    job["order"] = order
    return summary(times, lengths, own_peak_rss_mib())


def summary(times: list[float], lengths: list[float], rss: float) -> dict:
    tail = times[1:] or times  # the first step carries one-off costs (allocator warm-up, lazy inits)
    return {"s_per_step": {"median": round(statistics.median(tail), 3), "mean": round(statistics.mean(times), 3),
                           "first": round(times[0], 3), "all": [round(t, 3) for t in times]},
            "completion_mean_length": lengths, "steps": len(times), "peak_rss_mib": round(rss)}


def trl_run(a, out: Path, job: dict, res: dict) -> dict:
    """TRL's GRPOTrainer in a subprocess on the prompts iceburg trained on, in iceburg's order."""
    by_id = {p.id: p for p in job["prompts"]}
    texts = [job["tok"].decode(by_id[i].prompt_ids, skip_special_tokens=False) for i in job["order"]]
    c = res["config"]
    spec = {"model": job["base_path"], "tokenizer": str(out / "tokenizer"), "prompts": texts, "steps": a.steps,
            "group": 4, "completion": a.completion, "matched": not a.natural, "lr": c["learning_rate"],
            "threads": a.threads, "gc": bool(c["gradient_checkpointing"]), "lora": c["lora"], "out": str(out / "trl")}
    return trl_subprocess(__file__, out, spec)


def trl_child(spec: dict) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(spec["threads"])
    tok = AutoTokenizer.from_pretrained(spec["tokenizer"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    if len(tok) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tok))
    lora = spec["lora"]
    peft = LoraConfig(r=lora["r"], lora_alpha=lora["lora_alpha"], lora_dropout=lora["lora_dropout"] or 0.0,
                      target_modules=lora["target_modules"], task_type="CAUSAL_LM")
    g, c = spec["group"], spec["completion"]
    args = GRPOConfig(output_dir=spec["out"], per_device_train_batch_size=g, num_generations=g,
                      max_completion_length=c, max_steps=spec["steps"], learning_rate=spec["lr"],
                      use_cpu=True, bf16=False, report_to=[], logging_steps=1, save_strategy="no",
                      gradient_checkpointing=spec["gc"], beta=0.0, loss_type="dapo", seed=42, shuffle_dataset=False,
                      generation_kwargs={"min_new_tokens": c} if spec["matched"] else None)
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *_, **__):
            self.t = time.perf_counter()

        def on_step_end(self, *_, **__):
            times.append(time.perf_counter() - self.t)

    def brevity(completions, **_):  # iceburg's Brevity: shorter is better; its cost is negligible
        return [-len(x) / 1000 for x in completions]

    data = Dataset.from_list([{"prompt": p} for p in spec["prompts"]])
    trainer = GRPOTrainer(model=model, reward_funcs=[brevity], args=args, train_dataset=data, processing_class=tok,
                          peft_config=peft, callbacks=[Clock()])
    trainer.train()
    lengths = [m["completions/mean_length"] for m in trainer.state.log_history if "completions/mean_length" in m]
    return {**summary(times, lengths, own_peak_rss_mib()), "trl": __import__("trl").__version__,
            "gradient_checkpointing": spec["gc"], "prompts": [t[:60] for t in spec["prompts"][:spec["steps"]]]}




def profile(job: dict, a) -> None:
    """One step's parts, timed separately on `a.profile` prompts of the plan (printed, not saved)."""
    from iceburg.evaluation.rewards import build_rewards
    from iceburg.training.grpo import cpu_step_context

    rewards = build_rewards(job["cfg"])
    with cpu_step_context(job["model"], job["args"].device):  # what train_grpo runs its steps under
        for k, p in enumerate(job["prompts"][:a.profile]):
            _profile_step(job, rewards, k, p)


def _profile_step(job: dict, rewards, k: int, p) -> None:
    """One prompt's step, its parts timed and printed."""
    from iceburg.training.grpo import generate, grpo_loss, prefill_once, sample_seed, score, shared_prefix_logps

    model, tok, args, gargs = job["model"], job["tok"], job["args"], job["gargs"]
    t = [time.perf_counter()]
    model.eval()
    prefill_once(model, [p], 4, args.pad_id, args.device)
    t.append(time.perf_counter())
    r = generate(model, tok, [p], 4, gargs, job["eos"], args.pad_id, sample_seed(args.seed, k, 0), args.device)
    t.append(time.perf_counter())
    score(r, rewards, 4)
    t.append(time.perf_counter())
    model.train()
    lp = shared_prefix_logps(model, r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask)
    loss, _ = grpo_loss(lp, lp.detach(), None, r.advantages, r.completion_mask, gargs, r.completion_mask.sum())
    t.append(time.perf_counter())
    loss.backward()
    t.append(time.perf_counter())
    model.zero_grad()
    d = [round(y - x, 2) for x, y in zip(t, t[1:])]
    print(f"prompt {len(p.prompt_ids)} tok, answers {r.completion_mask.sum(1).tolist()}: prefill {d[0]} s, "
          f"generate (prefill included) {d[1]} s, rewards (truth, tool_call, format) {d[2]} s, "
          f"loss forward {d[3]} s, backward {d[4]} s", flush=True)


def write(a, res: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    stem = "grpo_throughput" + (f"_{a.tag}" if a.tag else "")
    (RESULTS / f"{stem}.json").write_text(json.dumps(res, indent=1))
    m, c, trl = res["machine"], res["config"], res["trl"]
    variants = [(k, v) for k, v in res.items() if k.startswith("iceburg")]
    lines = [f"# GRPO seconds per step: iceburg vs TRL GRPOTrainer (SmolLM2-135M, G={c['group']}, "
             f"{c['answer_length']} answers of <= {c['max_completion_length']} tokens)", "",
             f"machine: {m['cpu']} ({m['cores']} cores), {c['threads']} torch threads, OMP_NUM_THREADS="
             f"{m['OMP_NUM_THREADS']}, load {m['load_avg_1m']:.2f} at start / {m['load_avg_1m_end']:.2f} at end, "
             f"{m['date_utc']} UTC, torch {m['torch']}; {c['steps']} steps of 1 prompt x {c['group']} answers, "
             f"the same prompts in the same order; LoRA r{c['lora']['r']}/a{c['lora']['lora_alpha']} dropout "
             f"{c['lora']['lora_dropout']} on {len(c['lora']['target_modules'])} projections; loss {c['loss']}, "
             f"beta {c['beta']}, gradient checkpointing {c['gradient_checkpointing']}", "",
             "| trainer | s/step median (steps 2-) | mean | first | mean answer tokens | ms per answer token "
             "(median step / (G x mean length)) | peak RSS MiB (VmHWM) |", "|---|---|---|---|---|---|---|"]
    names = {"iceburg": "iceburg", "iceburg_bfloat16": "iceburg, bf16 sampling (opt-in)"}
    for name, r in [(names[k], v) for k, v in variants] + [(f"TRL {trl.get('trl', '')} GRPOTrainer", trl)]:
        if "s_per_step" not in r:
            lines.append(f"| {name} | not measured: {str(r)[:300]} | | | | | |")
            continue
        s, n = r["s_per_step"], statistics.mean(r["completion_mean_length"])
        lines.append(f"| {name} | {s['median']} | {s['mean']} | {s['first']} | {n:.1f} | "
                     f"{1000 * s['median'] / (c['group'] * n):.1f} | {r['peak_rss_mib']} |")
    if "s_per_step" in trl:
        lines.append("")
        for k, v in variants:
            ratio = trl["s_per_step"]["median"] / v["s_per_step"]["median"]
            res["speedup_median" + k[len("iceburg"):]] = round(ratio, 2)
            lines.append(f"TRL median / {names[k]} median: **{ratio:.2f}x**")
        (RESULTS / f"{stem}.json").write_text(json.dumps(res, indent=1))
    lines += ["", "per step (s): " + "; ".join(f"{names[k]} " + ", ".join(map(str, v["s_per_step"]["all"]))
                                              for k, v in variants)
              + ("; TRL " + ", ".join(map(str, trl["s_per_step"]["all"])) if "s_per_step" in trl else "")]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
