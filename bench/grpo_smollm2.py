"""A bounded GRPO run on SmolLM2-135M (embedded, offline) over the bundled surveyor and dissident
transcripts (the two types with tool-calling transcripts), the held-out rewards (greedy answers)
before/after with paired bootstrap 95% intervals (`iceburg.evaluation.bootstrap`), seconds per step,
peak RSS, and TRL 1.16's GRPOTrainer on the same model, prompts, G, lengths, LoRA and threads for a
few steps (a subprocess, so its peak RSS is its own). One run; writes bench/results/grpo_smollm2.{json,md}.

    cpurun --exclusive .venv/bin/python bench/grpo_smollm2.py [--steps 30] [--trl-steps 6]

SmolLM2's template gets the Hermes tool format when the data has tool calls (docs/tools.md), so the
tool transcripts give `tool_call` prompts (the held-out ones are few: their interval is wide).
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
from _common import RESULTS, machine_info, own_peak_rss_mib, peak_rss_mb, trl_subprocess  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--completion", type=int, default=96)
    ap.add_argument("--max-seq-length", type=int, default=512)
    ap.add_argument("--types", nargs="+", default=["surveyor", "dissident"])
    ap.add_argument("--base-model", default="smollm2-135m")
    ap.add_argument("--trl-steps", type=int, default=6, help="TRL GRPOTrainer steps timed (0: none)")
    ap.add_argument("--out", default=None, help="run folder parent (default: a temporary folder)")
    ap.add_argument("--trl-child", default=None, help=argparse.SUPPRESS)  # the TRL subprocess
    a = ap.parse_args()
    if a.trl_child:
        print(json.dumps(trl_child(json.loads(Path(a.trl_child).read_text()))))
        return
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="grpo_smollm2_"))
    machine = machine_info()
    res = iceburg_run(a, out)
    res["machine"] = machine
    res["trl"] = trl_run(a, out, res) if a.trl_steps else {"skipped": "--trl-steps 0"}
    res["machine"]["load_avg_1m_end"] = os.getloadavg()[0]
    write(a, res)


def iceburg_run(a, out: Path) -> dict:
    from iceburg.config import TrainingConfig
    from iceburg.data import SAMPLE_DIR
    from iceburg.recipes.finetuner import ICEBURGFineTuner

    files = [str(SAMPLE_DIR / f"{t}.jsonl") for t in a.types]
    cfg = TrainingConfig(base_model=a.base_model, model_type=a.types[0], objective="grpo", data_path=files,
                         eval_fraction=0.25, max_steps=a.steps, grpo_group=4, max_completion_length=a.completion,
                         max_seq_length=a.max_seq_length, batch_size=4, gradient_accumulation_steps=1,
                         num_threads=a.threads, output_dir=str(out), output_name="run", save_steps=10 ** 6,
                         export_formats=["huggingface"])
    started = time.time()
    r = ICEBURGFineTuner(cfg).train()
    wall = time.time() - started
    run = out / "run"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [m for m in lines if m.get("type") == "train"]
    elapsed = [m["elapsed_s"] for m in train]
    per_step = [b - e for e, b in zip([0.0, *elapsed], elapsed)]
    curve = [{k: v for k, v in m.items() if k.startswith(("step", "loss", "reward", "completions", "kl"))}
             for m in train]
    plan = json.loads((run / "plan.json").read_text())
    lora = json.loads((run / "adapter" / "adapter_config.json").read_text())
    return {"config": {"steps": a.steps, "group": 4, "prompts_per_step": 1, "max_completion_length": a.completion,
                       "max_seq_length": a.max_seq_length, "types": a.types, "threads": a.threads,
                       "loss": cfg.grpo_loss, "beta": cfg.grpo_beta, "learning_rate": r.learning_rate,
                       "gradient_checkpointing": plan.get("gradient_checkpointing"),
                       "lora": {k: lora.get(k) for k in ("r", "lora_alpha", "lora_dropout", "target_modules")}},
            "held_out": intervals(r.preference["per_prompt"]), "prompts": r.preference["data"],
            "wall_s": round(wall, 1), "training_s": round(r.training_seconds, 1),
            "s_per_step": {"median": round(statistics.median(per_step[1:] or per_step), 2),
                           "mean": round(sum(per_step) / len(per_step), 2), "first": round(per_step[0], 2)},
            "peak_rss_mib": round(peak_rss_mb()), "curve": curve, "run_dir": str(run),
            "base_path": r.base_model["path"]}


def intervals(per: dict) -> dict:
    """Paired bootstrap per reward over the held-out prompts it applies to (None = does not apply)."""
    from iceburg.evaluation.bootstrap import ItemValues, paired_bootstrap

    res = {}
    for name in per["before"]:
        b, t = ItemValues(), ItemValues()
        for x, y in zip(per["before"][name], per["after"][name]):
            b.add(x)
            t.add(y)
        res[name] = paired_bootstrap(b, t)
    return res


def trl_run(a, out: Path, res: dict) -> dict:
    """TRL's GRPOTrainer, same base weights, tokenizer + template (the run's merged/ tokenizer), the
    run's training prompts, G, completion length, LoRA, gradient checkpointing and threads."""
    spec = {"model": res["base_path"], "tokenizer": str(Path(res["run_dir"]) / "merged"),
            "prompts": train_prompt_texts(res, a), "steps": a.trl_steps, "group": 4,
            "completion": a.completion, "lr": res["config"]["learning_rate"], "threads": a.threads,
            "gc": bool(res["config"]["gradient_checkpointing"]), "lora": res["config"]["lora"],
            "out": str(out / "trl")}
    return trl_subprocess(__file__, out, spec)


def train_prompt_texts(res: dict, a) -> list[str]:
    """The run's GRPO training prompts as the chat template renders them (special tokens kept)."""
    from transformers import AutoTokenizer

    from iceburg.config import TrainingConfig
    from iceburg.data.loader import normalise
    from iceburg.recipes.grpo import grpo_prompts

    run = Path(res["run_dir"])
    tok = AutoTokenizer.from_pretrained(run / "merged")
    cfg = TrainingConfig(model_type=a.types[0], max_seq_length=a.max_seq_length, max_completion_length=a.completion)
    records = [normalise(json.loads(x)["record"]) for x in (run / "train.jsonl").read_text().splitlines() if x.strip()]
    prompts, _ = grpo_prompts(cfg, tok, records, None, a.max_seq_length - a.completion, "train")
    return [tok.decode(p.prompt_ids, skip_special_tokens=False) for p in prompts]


def trl_child(spec: dict) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(spec["threads"])
    tok = AutoTokenizer.from_pretrained(spec["tokenizer"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    lora = spec["lora"]
    peft = LoraConfig(r=lora["r"], lora_alpha=lora["lora_alpha"], lora_dropout=lora["lora_dropout"] or 0.0,
                      target_modules=lora["target_modules"], task_type="CAUSAL_LM")
    g = spec["group"]
    args = GRPOConfig(output_dir=spec["out"], per_device_train_batch_size=g, num_generations=g,
                      max_completion_length=spec["completion"], max_steps=spec["steps"], learning_rate=spec["lr"],
                      use_cpu=True, bf16=False, report_to=[], logging_steps=1, save_strategy="no",
                      gradient_checkpointing=spec["gc"], beta=0.0, loss_type="dapo", seed=42)
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *_, **__):
            self.t = time.time()

        def on_step_end(self, *_, **__):
            times.append(time.time() - self.t)

    def brevity(completions, **_):  # a cheap verifiable reward (shorter is better); its cost is negligible
        return [-len(c) / 1000 for c in completions]

    data = Dataset.from_list([{"prompt": p} for p in spec["prompts"]])
    trainer = GRPOTrainer(model=model, reward_funcs=[brevity], args=args, train_dataset=data, processing_class=tok,
                          peft_config=peft, callbacks=[Clock()])
    trainer.train()
    lengths = [m["completions/mean_length"] for m in trainer.state.log_history if "completions/mean_length" in m]
    return {"s_per_step": {"median": round(statistics.median(times[1:] or times), 2),
                           "mean": round(sum(times) / len(times), 2), "first": round(times[0], 2)},
            "steps": len(times), "completion_mean_length": lengths, "peak_rss_mib": round(own_peak_rss_mib()),
            "trl": __import__("trl").__version__, "gradient_checkpointing": spec["gc"]}




def write(a, res: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "grpo_smollm2.json").write_text(json.dumps(res, indent=1))
    m, t = res["machine"], res["trl"]
    lines = [f"# GRPO on SmolLM2-135M: held-out rewards before/after ({a.steps} steps, G=4, 1 prompt/step)", "",
             f"machine: {m['cpu']} ({m['cores']} cores), {a.threads} torch threads, OMP_NUM_THREADS="
             f"{m['OMP_NUM_THREADS']}, load {m['load_avg_1m']:.2f} at start / {m['load_avg_1m_end']:.2f} at end, "
             f"{m['date_utc']} UTC; data: {', '.join(a.types)} (eval_fraction 0.25), max completion "
             f"{a.completion} tokens, --max-seq-length {a.max_seq_length}; wall {res['wall_s']} s "
             f"(training {res['training_s']} s), peak RSS {res['peak_rss_mib']} MiB", "",
             "| reward (greedy, held-out) | before | after | delta | 95% CI | n |", "|---|---|---|---|---|---|"]
    for k, v in res["held_out"].items():
        lines.append(f"| {k} | {v['base']} | {v['tuned']} | {v['delta']} | {v['ci95']} | {v['n']} |")
    s = res["s_per_step"]
    lines += ["", "| trainer | s/step median | mean | first | peak RSS MiB |", "|---|---|---|---|---|",
              f"| iceburg | {s['median']} | {s['mean']} | {s['first']} | {res['peak_rss_mib']} |"]
    if "s_per_step" in t:
        ts = t["s_per_step"]
        lines.append(f"| TRL {t['trl']} GRPOTrainer ({t['steps']} steps) | {ts['median']} | {ts['mean']} | "
                     f"{ts['first']} | {t['peak_rss_mib']} |")
    else:
        lines.append(f"| TRL | not measured: {str(t)[:300]} | | | |")
    lines += ["", "| step | loss | reward | format | truth | tool_call | mean length |",
              "|---|---|---|---|---|---|---|"]
    nan = float("nan")
    for c in res["curve"]:
        lines.append(f"| {c['step']} | {c['loss']:.4f} | {c['reward']:.3f} | {c.get('rewards/format/mean', nan):.3f} "
                     f"| {c.get('rewards/truth/mean', nan):.3f} | {c.get('rewards/tool_call/mean', nan):.3f} "
                     f"| {c['completions/mean_length']:.1f} |")
    (RESULTS / "grpo_smollm2.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:16]))


if __name__ == "__main__":
    main()
