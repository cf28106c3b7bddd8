"""Training throughput: the original approach vs TRL SFTTrainer defaults vs iceburg, one run.

Same model (iceburg-tiny + LoRA r=16 on all linear projections), same length-varied data (the
bundled sample transcripts of every type), same held-out eval set, one epoch each, threads pinned.
Each approach runs in its own subprocess so peak RSS is its own.

  (1) original: HF Trainer, every example padded to max_seq_length, labels = the whole sequence
      including padding (what the seed implementation did)
  (2) trl:      TRL SFTTrainer with its defaults (no packing, loss on all tokens, gradient
      checkpointing on), conversational `messages` data
  (3) iceburg:  packed rows (no cross-attention), assistant-only loss, logits only where supervised

Reported: supervised tokens/s (assistant, non-padding tokens of the epoch / wall time), wall time
per epoch, peak RSS, eval loss after one epoch (iceburg's assistant-only metric, same for all),
achieved FLOP/s against a large matmul measured in the same run.

    python bench/training_throughput.py [--threads 2] [--max-seq-length 1024]
    python bench/training_throughput.py --model smollm2-135m --types surveyor --max-seq-length 512 \
        --batch 4 --max-steps 8 --approaches original trl trl-best iceburg   # real shape, step-bounded
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def load_data(max_len: int, seed: int = 42, model: str = "iceburg-tiny", types: list[str] | None = None):
    from transformers import AutoTokenizer

    from iceburg.base_models import resolve_base_model
    from iceburg.data import SAMPLE_DIR
    from iceburg.data.loader import read_records
    from iceburg.training.encoding import encode, eos_ids
    from iceburg.data.split import split_eval

    model_dir = resolve_base_model(model).path  # iceburg-tiny, smollm2-135m or any base spec
    tok = AutoTokenizer.from_pretrained(model_dir)
    files = sorted(SAMPLE_DIR.glob("*.jsonl"))
    if types:
        files = [f for f in files if f.stem in types]
    # transcripts with tool calls aside: TRL's path and iceburg-tiny's template cannot write them,
    # and the comparison needs the same text for every approach
    recs = [r for r in read_records(files)
            if not any(m.get("role") == "tool" or m.get("tool_calls") for m in r.messages)]
    train, ev = split_eval(recs, 0.1, seed)
    eos = eos_ids(tok)
    tr_ex = [e for e in (encode(tok, r, max_len, eos) for r in train) if e]
    ev_ex = [e for e in (encode(tok, r, max_len, eos) for r in ev) if e]
    return model_dir, tok, train, tr_ex, ev_ex


def lora_model(model_dir, seed: int = 0):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return get_peft_model(m, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                        task_type="CAUSAL_LM"))


def eval_loss(model, ev_ex, max_len):
    from iceburg.training.trainer import TrainArgs, evaluate

    return evaluate(model, ev_ex, TrainArgs(max_length=max_len, micro_batch_size=4))


def eval_loss_on_fp32_base(model, model_dir, ev_ex, max_len) -> float:
    """Eval loss of `model`'s trained adapters on the fp32 base (a bf16-loaded base evaluates in bf16,
    whose rounding adds to the loss; this isolates what bf16 training did to the adapters)."""
    import torch
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    fp32 = get_peft_model(base, model.peft_config["default"])
    set_peft_model_state_dict(fp32, get_peft_model_state_dict(model))
    return eval_loss(fp32, ev_ex, max_len)


def run_original(model_dir, tok, train_recs, tr_ex, ev_ex, a):
    import torch
    from torch.utils.data import Dataset
    from transformers import Trainer, TrainingArguments

    class Padded(Dataset):
        def __init__(self, exs):
            self.exs = exs

        def __len__(self):
            return len(self.exs)

        def __getitem__(self, i):
            ids = self.exs[i].input_ids[: a.max_seq_length]
            ids = ids + [tok.pad_token_id] * (a.max_seq_length - len(ids))
            t = torch.tensor(ids)
            return {"input_ids": t, "attention_mask": torch.ones_like(t), "labels": t.clone()}

    model = lora_model(model_dir)
    args = TrainingArguments(output_dir=a.tmp + "/orig", per_device_train_batch_size=a.batch, num_train_epochs=1,
                             max_steps=a.max_steps or -1,
                             learning_rate=2e-4, use_cpu=True, report_to=[], save_strategy="no",
                             logging_steps=1000, disable_tqdm=True, dataloader_num_workers=0, seed=0)
    tr = Trainer(model=model, args=args, train_dataset=Padded(tr_ex))
    t0 = time.time()
    tr.train()
    wall = time.time() - t0
    share = _step_share(a, len(tr_ex))
    return model, wall, len(tr_ex) * a.max_seq_length * share, share


def _step_share(a, rows: int) -> float:
    """Share of the epoch a step-bounded run covers (rows per step = batch); 1.0 when unbounded."""
    steps = max(1, -(-rows // a.batch))
    return min(1.0, a.max_steps / steps) if a.max_steps else 1.0


# SmolLM2's ChatML template with TRL's `{% generation %}` markers around each assistant turn (content
# + <|im_end|>), so `assistant_only_loss=True` can mask; it renders the same text as the original.
CHATML_GENERATION = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}{% generation %}"
    "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def run_trl(model_dir, tok, train_recs, tr_ex, ev_ex, a, best: bool = False, strategy: str = "wrapped"):
    """TRL SFTTrainer: its defaults, or (best) packing on, assistant-only loss, no gradient checkpointing,
    with TRL's `strategy`: "wrapped" (dense rows, conversations cut across rows, nothing truncated)
    or "bfd" (TRL's default: best-fit rows of whole conversations, each truncated to max_length as
    iceburg's are, so both train on the same tokens)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model = lora_model(model_dir, a.seed)
    ds = Dataset.from_list([{"messages": r.messages} for r in train_recs])
    extra = {}
    if best:
        extra = dict(packing=True, packing_strategy=strategy, assistant_only_loss=True, gradient_checkpointing=False)
        from trl.chat_template_utils import has_generation_markers

        if not has_generation_markers(tok.chat_template or ""):
            if "<|im_start|>" not in (tok.chat_template or ""):
                raise SystemExit("trl-best needs a ChatML template here (assistant_only_loss needs generation markers)")
            tok.chat_template = CHATML_GENERATION
    cfg = SFTConfig(output_dir=a.tmp + "/trl", per_device_train_batch_size=a.batch, num_train_epochs=1,
                    max_steps=a.max_steps or -1, learning_rate=2e-4, use_cpu=True, bf16=False, report_to=[],
                    save_strategy="no", logging_steps=1000, disable_tqdm=True, max_length=a.max_seq_length, seed=a.seed,
                    **extra)
    tr = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok)
    processed = sum(len(x["input_ids"]) for x in tr.train_dataset)
    share = _step_share(a, len(tr.train_dataset))
    # the assistant tokens TRL really supervises, from its labels (wrapped packing keeps the parts
    # of long conversations that a 512-token truncation drops); TRL defaults label every token, so
    # there the count comes from iceburg's assistant masks of the same (truncated) conversations
    sup = (sum(sum(t != -100 for t in x["labels"]) for x in tr.train_dataset) * share
           if best and "labels" in tr.train_dataset.column_names else None)
    t0 = time.time()
    tr.train()
    wall = time.time() - t0
    model.eval()
    return model, wall, processed * share, share, sup


def run_trl_best(model_dir, tok, train_recs, tr_ex, ev_ex, a):
    return run_trl(model_dir, tok, train_recs, tr_ex, ev_ex, a, best=True)


def run_trl_bfd(model_dir, tok, train_recs, tr_ex, ev_ex, a):
    return run_trl(model_dir, tok, train_recs, tr_ex, ev_ex, a, best=True, strategy="bfd")


# The CLI's default path and its flags (run_parts.plan_run + training.model.build_model, as `iceburg-train`
# runs them): `iceburg` with nothing set, `iceburg:bN` as --batch-size N, `iceburg:fp32` as --precision
# fp32, `iceburg:precision-bf16` as --precision bf16 (a bf16-loaded base, fp32 LoRA, bf16 autocast);
# `iceburg:autocast-bf16` is the default plan and fp32 base with bf16 autocast only (isolates the
# weights' dtype from the autocast).
PRODUCT_PRECISION = {"iceburg": None, "iceburg:fp32": "fp32", "iceburg:precision-bf16": "bf16",
                     "iceburg:autocast-bf16": None}


def _product(v: str) -> bool:
    return v in PRODUCT_PRECISION or _rows_variant(v) is not None


def product_model(model_dir, tok, train_recs, v: str, a):
    """(model, plan, examples) as the CLI builds them: examples encoded with the config's overflow
    rule (split), the plan (micro-batch, accumulation, precision, allocator applied), the base in the
    plan's precision with the plan's LoRA rank and targets (peft keeps the adapters fp32)."""
    from iceburg.config import TrainingConfig
    from iceburg.training.encoding import encode_all, eos_ids
    from iceburg.training.model import build_model
    from iceburg.training.run_parts import plan_run

    cfg = TrainingConfig(max_seq_length=a.max_seq_length, batch_size=_rows_variant(v),
                         precision=PRODUCT_PRECISION.get(v), seed=42 + a.seed)
    tr_ex = encode_all(tok, train_recs, a.max_seq_length, eos_ids(tok), overflow=cfg.overflow).examples
    plan = plan_run(Path(model_dir), cfg, tr_ex)
    sys.stderr.write("plan: " + "; ".join(plan.notes) + "\n")
    return build_model(Path(model_dir), cfg, plan, tok, added_tokens=False), plan, tr_ex


def run_iceburg(model_dir, tok, train_recs, tr_ex, ev_ex, a):
    import random

    from iceburg.training.trainer import TrainArgs, train

    v = a.variant  # iceburg, or iceburg:<variant>
    if v == "iceburg:split":  # conversations longer than a row trained as further windows (--overflow split)
        from iceburg.training.encoding import encode_all, eos_ids

        tr_ex = encode_all(tok, train_recs, a.max_seq_length, eos_ids(tok), overflow="split").examples
    plan = None
    if _product(v):
        model, plan, tr_ex = product_model(model_dir, tok, train_recs, v, a)
    else:
        if v not in ("iceburg:glibc",):  # hand-tuned variants: the fixed mmap threshold unless iceburg:glibc
            from iceburg.hardware import configure_cpu_allocator

            configure_cpu_allocator()
        model = lora_model(model_dir, a.seed)
    order = list(range(len(tr_ex)))
    random.Random(a.seed).shuffle(order)
    rows = plan.micro_batch_size if plan else (a.iceburg_rows or max(1, a.batch // 2))
    precision = plan.precision if plan else ("bf16" if v == "iceburg:bf16" else "fp32")
    # a shuffled order, so the trainer packs best-fit (what the weighted/plain curricula get)
    args = TrainArgs(epochs=1, max_steps=a.max_steps, learning_rate=2e-4, best_fit=v != "iceburg:greedy",
                     micro_batch_size=rows, grad_accum=plan.gradient_accumulation_steps if plan else 1,
                     max_length=a.max_seq_length, pad_id=tok.pad_token_id, eval_steps=10**9,
                     precision="bf16" if v == "iceburg:autocast-bf16" else precision,
                     show_progress=False, segment_attention=False if v == "iceburg:mask" else None, seed=42 + a.seed,
                     **({"warmup_ratio": 0.0} if v == "iceburg:nowarmup" else {}))
    losses = _StepLosses()
    t0 = time.time()
    out = train(model, tr_ex, lambda e: order, [], args, callbacks=[losses])
    wall = time.time() - t0
    a.extra = {"micro_batch": rows, "grad_accum": args.grad_accum, "precision": args.precision,
               "base_dtype": str(next(p for p in model.parameters() if not p.requires_grad).dtype),
               "lora_dtype": str(next(p for p in model.parameters() if p.requires_grad).dtype),
               "step_losses": losses.values, "step_seconds": losses.seconds, **_plan_extra(plan)}
    if a.profile is not None and (not a.profile or v in a.profile):
        a.extra["profile"] = profile_step(model, tr_ex, order, args, a)
    return (model, wall, out.total_tokens, out.supervised_tokens / max(1, sum(e.supervised for e in tr_ex)),
            out.supervised_tokens)


def _plan_extra(plan) -> dict:
    """What the plan chose and expected (plan.json's figures), for the estimate-vs-measured column."""
    if plan is None:
        return {}
    return {"plan_notes": plan.notes, "cpu_allocator": plan.cpu_allocator, "lora_r": plan.lora_r,
            "effective_batch": plan.effective_batch_size,
            "planned_peak_mb": plan.expected_peak_bytes / 2**20, "estimated_peak_mb": plan.estimated_peak_bytes / 2**20}


def _rows_variant(v: str) -> int | None:
    """N for `iceburg:bN` (the CLI's --batch-size N), else None."""
    tail = v.partition(":")[2]
    return int(tail[1:]) if tail[:1] == "b" and tail[1:].isdigit() else None


class _StepLosses:
    """Training loss and seconds of every optimizer step (engine's on_step metrics), for per-step
    comparisons (the first step carries the allocator's and oneDNN's warm-up)."""

    def __init__(self):
        self.values: list[float] = []
        self.seconds: list[float] = []
        self._last = time.perf_counter()

    def on_batch(self, example_ids: list[str]) -> None:
        pass

    def on_step(self, step: int, metrics: dict) -> None:
        now = time.perf_counter()
        self.seconds.append(round(now - self._last, 2))
        self._last = now
        if "loss" in metrics:
            self.values.append(round(float(metrics["loss"]), 5))

    def on_eval(self, step: int, eval_loss: float) -> None:
        pass


# Where a step's time goes, by torch op (self CPU time): the dense matmuls (the base and LoRA
# projections, the head; oneDNN runs them in bf16 under autocast), the attention kernel, dtype
# casts/copies (autocast's re-cast of fp32 weights and activations lands in copy_/_to_copy), rest.
MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear",
              "aten::_addmm_activation"}
CAST_OPS = {"aten::copy_", "aten::_to_copy", "aten::to", "aten::clone"}


def op_category(name: str) -> str:
    if name in MATMUL_OPS or name.startswith("mkldnn::"):
        return "matmul"
    if "scaled_dot_product" in name or "flash_attention" in name:
        return "attention"
    return "cast" if name in CAST_OPS else "other"


def profile_step(model, tr_ex, order, args, a) -> dict:
    """One more optimizer-free forward+backward of the first micro-batch (the trainer's loss, its CPU
    LoRA dropout, its precision) under torch.profiler: seconds per op category and the top ops."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from iceburg.training.lora_dropout import lora_dropout_on_cpu
    from iceburg.training.packing import collate, pack
    from iceburg.training.trainer import _forward_loss, weighted_token_loss

    rows = pack([tr_ex[i] for i in order], args.max_length, True, args.best_fit)[: args.micro_batch_size]
    batch = collate(rows, args.pad_id)
    model.train()
    with lora_dropout_on_cpu(model, True), profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        loss, n = _forward_loss(model, batch, args, weighted_token_loss)
        (loss / max(n, 1)).backward()
        wall = time.perf_counter() - t0
    model.zero_grad(set_to_none=True)
    cats: dict[str, float] = {}
    for ev in prof.key_averages():
        cat = op_category(ev.key)
        cats[cat] = cats.get(cat, 0.0) + ev.self_cpu_time_total / 1e6
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=48)
    sys.stderr.write(table + "\n")
    return {"rows": len(rows), "wall_s": round(wall, 3), "seconds": {k: round(v, 3) for k, v in cats.items()},
            "table": f"# {a.variant}: one micro-batch ({len(rows)} x {args.max_length}), precision {args.precision}, "
                     f"threads {a.threads}, load average {os.getloadavg()}\n{table}\n"}


def child(a) -> None:
    import torch

    torch.set_num_threads(a.threads)
    from _common import peak_rss_mb

    model_dir, tok, train_recs, tr_ex, ev_ex = load_data(a.max_seq_length, model=a.model, types=a.types)
    fn = {"original": run_original, "trl": run_trl, "trl-best": run_trl_best, "trl-bfd": run_trl_bfd,
          "iceburg": run_iceburg}[a.child]
    a.extra = {}
    model, wall, processed, share, *counted = fn(model_dir, tok, train_recs, tr_ex, ev_ex, a)
    # supervised tokens the run covered: counted by the run where it can (iceburg; TRL's labels),
    # else the whole epoch's (iceburg's truncated examples), times the share a step bound allowed
    # (exact for iceburg; for HF/TRL the share of steps, as their rows hold similar token counts)
    sup = counted[0] if counted and counted[0] is not None else sum(e.supervised for e in tr_ex) * share
    n_params = sum(p.numel() for p in model.parameters())
    res = {"approach": a.child, "wall_s": wall, "supervised_tokens": sup, "processed_tokens": processed,
           "supervised_tok_per_s": sup / wall, "eval_loss": eval_loss(model, ev_ex, a.max_seq_length),
           "peak_rss_mb": peak_rss_mb(),
           # LoRA training ~ forward 2N + backward input-grads 2N FLOPs per processed token
           "achieved_gflops": 4 * n_params * processed / wall / 1e9, "threads": torch.get_num_threads(),
           "loadavg_end": os.getloadavg(), **a.extra}
    if res.get("base_dtype") == "torch.bfloat16":
        res["eval_loss_fp32_base"] = eval_loss_on_fp32_base(model, model_dir, ev_ex, a.max_seq_length)
    print("RESULT " + json.dumps(res))


# The product's default must stay within 10% of the best hand-tuned iceburg variant measured in the
# same round (issue 26: "default within 10% of the best --batch-size"); a shared machine's drift
# between two runs of a round is a few percent (docs/training.md, repeated rounds).
DEFAULT_GATE = 0.90


def default_gate(rows: list[dict]) -> dict:
    """Per round: the `iceburg` row (the CLI's default path) against the fastest `--batch-size` row
    (`iceburg:bN`; every `iceburg:*` variant when the round has none); REGRESSION when the default
    is more than 10% behind."""
    lines, verdicts = [], []
    for rnd in sorted({r["round"] for r in rows}):
        mine = [r for r in rows if r["round"] == rnd]
        default = next((r for r in mine if r["approach"] == "iceburg"), None)
        variants = ([r for r in mine if _rows_variant(r["approach"]) is not None]
                    or [r for r in mine if r["approach"].startswith("iceburg:")])
        if default is None or not variants:
            continue
        best = max(variants, key=lambda r: r["supervised_tok_per_s"])
        ratio = default["supervised_tok_per_s"] / best["supervised_tok_per_s"]
        ok = ratio >= DEFAULT_GATE
        verdicts.append({"round": rnd, "best_variant": best["approach"], "default_over_best": round(ratio, 3),
                         "ok": ok})
        lines.append(f"{'ok' if ok else 'REGRESSION'}: round {rnd}: default (iceburg) {default['supervised_tok_per_s']:.1f} "
                     f"tok/s = {ratio:.2f}x the best variant {best['approach']} ({best['supervised_tok_per_s']:.1f}); "
                     f"gate {DEFAULT_GATE:.2f}x")
    return {"lines": lines, "verdicts": verdicts}


# issue 26's bar for the product path against TRL's best packed configuration in the same run
TRL_GATE = 1.25
# issue 26's bar for bf16 on CPUs with AMX / AVX512-BF16, at an eval loss within BF16_LOSS_TOL of fp32
BF16_GATE, BF16_LOSS_TOL = 1.5, 0.01


def same_round(rows: list[dict], rnd: int, name: str) -> dict | None:
    return next((r for r in rows if r["round"] == rnd and r["approach"] == name), None)


def comparisons(rows: list[dict]) -> dict:
    """Per round: the default against trl-best (TRL_GATE), every bf16 row against the fp32 default
    (speed, eval loss, largest per-step training-loss gap; BF16_GATE), and the planner's expected
    peak against the measured one for every row the CLI planned."""
    out: dict = {"trl": [], "bf16": [], "planner": [], "lines": []}
    for r in rows:
        if "planned_peak_mb" in r:
            err = r["planned_peak_mb"] / r["peak_rss_mb"] - 1
            r["plan_error"] = round(err, 3)
            out["planner"].append({"round": r["round"], "approach": r["approach"], "planned_mb": round(r["planned_peak_mb"]),
                                   "measured_mb": round(r["peak_rss_mb"]), "error": round(err, 3)})
    for rnd in sorted({r["round"] for r in rows}):
        ice, trl = same_round(rows, rnd, "iceburg"), same_round(rows, rnd, "trl-best")
        if ice and trl:
            x = ice["supervised_tok_per_s"] / trl["supervised_tok_per_s"]
            out["trl"].append({"round": rnd, "default_over_trl_best": round(x, 3), "ok": x >= TRL_GATE})
            out["lines"].append(f"{'ok' if x >= TRL_GATE else 'BELOW'}: round {rnd}: default = {x:.2f}x trl-best "
                                f"(gate {TRL_GATE:.2f}x)")
        for r in rows:
            if not (ice and r["round"] == rnd and r.get("precision") == "bf16" and ice.get("precision") == "fp32"):
                continue
            x = r["supervised_tok_per_s"] / ice["supervised_tok_per_s"]
            dl = r["eval_loss"] - ice["eval_loss"]
            dl32 = r.get("eval_loss_fp32_base", r["eval_loss"]) - ice["eval_loss"]
            steps = list(zip(r.get("step_losses", []), ice.get("step_losses", [])))
            ok = x >= BF16_GATE and abs(dl) <= BF16_LOSS_TOL
            out["bf16"].append({"round": rnd, "approach": r["approach"], "speedup_vs_fp32_default": round(x, 3),
                                "eval_loss_diff": round(dl, 4), "eval_loss_diff_fp32_base": round(dl32, 4),
                                "max_step_loss_diff":
                                round(max((abs(p - q) for p, q in steps), default=float("nan")), 4), "ok": ok})
            out["lines"].append(f"{'ok' if ok else 'BELOW'}: round {rnd}: {r['approach']} = {x:.2f}x the fp32 default, "
                                f"eval loss {dl:+.4f} ({dl32:+.4f} with its adapters on the fp32 base; "
                                f"gate {BF16_GATE:.1f}x at |diff| <= {BF16_LOSS_TOL})")
    out["amdahl"] = amdahl(rows)
    return out


def amdahl(rows: list[dict]) -> list[dict]:
    """From the profiled micro-batches: the fp32 default's matmul share f, the matmul speed-up s of a
    bf16 row, the step speed-up Amdahl's law allows if only the matmuls changed (1 / (1 - f + f / s)),
    the one measured on the same micro-batch, and the ceiling with free matmuls (1 / (1 - f))."""
    res = []
    for rnd in sorted({r["round"] for r in rows}):
        ice = same_round(rows, rnd, "iceburg")
        if not ice or "profile" not in ice:
            continue
        s32 = ice["profile"]["seconds"]
        t32, m32 = sum(s32.values()), s32.get("matmul", 0.0)
        for r in rows:
            if r["round"] != rnd or r.get("precision") != "bf16" or "profile" not in r:
                continue
            s16 = r["profile"]["seconds"]
            t16, m16 = sum(s16.values()), s16.get("matmul", 0.0)
            f, sp = m32 / t32, m32 / max(m16, 1e-9)
            res.append({"round": rnd, "approach": r["approach"], "fp32_seconds": s32, "bf16_seconds": s16,
                        "matmul_share_fp32": round(f, 3), "matmul_speedup": round(sp, 3),
                        "amdahl_if_only_matmuls_changed": round(1 / (1 - f + f / sp), 3),
                        "measured_microbatch_speedup": round(t32 / t16, 3), "ceiling_free_matmuls": round(1 / (1 - f), 3)})
    return res


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-seq-length", type=int, default=1024)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--approaches", nargs="+", default=["original", "trl", "iceburg"],
                   help="original, trl (TRL defaults), trl-best (packing 'wrapped', assistant-only loss, no grad ckpt), "
                        "trl-bfd (the same with TRL's default 'bfd' packing: whole, truncated conversations), iceburg, "
                        "iceburg:greedy (in-order packing), iceburg:glibc / iceburg:fixed (glibc's "
                        "allocator / configure_cpu_allocator(), instead of the pipeline's choice), "
                        "iceburg:mask (sdpa's block-diagonal mask instead of "
                        "segment attention), iceburg:nowarmup (no warm-up step, as TRL's default schedule), "
                        "iceburg:split (--overflow split: long conversations as further windows); "
                        "iceburg is the CLI's default path (its encoding with --overflow split, plan, allocator, "
                        "precision, LoRA rank and targets); iceburg:bN is the CLI with --batch-size N, iceburg:fp32 "
                        "with --precision fp32, iceburg:precision-bf16 with --precision bf16 (bf16-loaded base, fp32 "
                        "LoRA, autocast), iceburg:autocast-bf16 the default plan and fp32 base under bf16 autocast; "
                        "iceburg:tuned / iceburg:bf16: "
                        "--iceburg-rows rows, fixed allocator, fp32 / bf16 autocast; "
                        "any name@sN runs with seeds + N (LoRA init, data order, dropout)")
    p.add_argument("--model", default="iceburg-tiny", help="base: iceburg-tiny, smollm2-135m (real weights) or any spec")
    p.add_argument("--max-steps", type=int, default=None, help="bound each approach to this many optimizer steps")
    p.add_argument("--types", nargs="+", default=None, help="sample data types to use (default: all five)")
    p.add_argument("--iceburg-rows", type=int, default=None,
                   help="iceburg rows per micro-batch (default batch // 2; the planner's 4 for SmolLM2 at 512)")
    p.add_argument("--profile", nargs="*", default=None,
                   help="profile one micro-batch of these iceburg approaches (all iceburg ones when none is "
                        "named) with torch.profiler: seconds per op category (matmul / attention / cast / other)")
    p.add_argument("--tag", default="", help="names the run: its heading, and the file "
                   "(bench/results/training_throughput_TAG.md/.json instead of training_throughput.md)")
    p.add_argument("--rounds", type=int, default=1,
                   help="run the approaches this many times, the order reversed every other round; each "
                        "round's speedups are against that round's iceburg run (on a shared machine whose "
                        "speed drifts, only ratios measured close together mean something)")
    p.add_argument("--variant", default="", help=argparse.SUPPRESS)  # (child) the approach name, e.g. iceburg:split
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)  # (child) an approach's @sN suffix
    p.add_argument("--child")
    p.add_argument("--tmp", default="/tmp/iceburg-bench")
    a = p.parse_args()
    if a.child:
        return child(a)
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    from _common import machine_info, save

    import torch

    torch.set_num_threads(a.threads)
    load_start = os.getloadavg()
    from iceburg.hardware.timing import matmul_gflops  # the probe --detect-hardware's time estimate uses

    peak = matmul_gflops(a.threads)
    rows = []
    order = [(rnd, name) for rnd in range(a.rounds)
             for name in (a.approaches if rnd % 2 == 0 else list(reversed(a.approaches)))]
    for rnd, name in order:
        variant, _, seed = name.partition("@s")  # e.g. iceburg@s1: LoRA init, data order and dropout seeds + 1
        cmd = [sys.executable, __file__, "--child", variant.split(":")[0], "--variant", variant, "--seed", seed or "0",
               "--threads", str(a.threads), "--max-seq-length",
               str(a.max_seq_length), "--batch", str(a.batch), "--tmp", a.tmp, "--model", a.model,
               *(["--max-steps", str(a.max_steps)] if a.max_steps else []), *(["--types", *a.types] if a.types else []),
               *(["--iceburg-rows", str(a.iceburg_rows)] if a.iceburg_rows else []),
               *(["--profile", *a.profile] if a.profile is not None else [])]
        load_before = os.getloadavg()[0]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if out.returncode != 0 or not line:
            err = "\n".join(x for x in out.stderr.splitlines() if "Loading weights" not in x)
            sys.stderr.write(err[-3000:])
            raise SystemExit(f"{name} failed (exit {out.returncode}; -9 is a kill, e.g. out of memory)")
        r = json.loads(line[0][7:])
        r["approach"], r["round"], r["load_before"] = name, rnd + 1, load_before
        r["pct_of_matmul_peak"] = 100 * r["achieved_gflops"] / peak
        rows.append(r)
        print(json.dumps(r))
    base = {(r["round"], r["approach"]): r for r in rows}
    speedups: dict[str, list[float]] = {}
    for r in rows:
        ice = base.get((r["round"], "iceburg"))
        if ice:
            r["speedup_vs_this"] = ice["supervised_tok_per_s"] / r["supervised_tok_per_s"]
            speedups.setdefault(r["approach"], []).append(r["speedup_vs_this"])
    if a.rounds > 1:
        for name, v in speedups.items():
            if name == "iceburg":
                continue
            print(f"iceburg vs {name}: per round {', '.join(f'{x:.2f}x' for x in v)}; "
                  f"median {statistics.median(v):.2f}x, min {min(v):.2f}x")
    gate, comp = default_gate(rows), comparisons(rows)
    for line in gate["lines"] + comp.pop("lines"):
        print(line)
    for x in comp["amdahl"]:
        print(f"amdahl: {x['approach']}: fp32 matmul share {x['matmul_share_fp32']:.2f}, matmuls {x['matmul_speedup']:.2f}x "
              f"faster -> {x['amdahl_if_only_matmuls_changed']:.2f}x if nothing else changed; measured on the "
              f"micro-batch {x['measured_microbatch_speedup']:.2f}x; ceiling with free matmuls {x['ceiling_free_matmuls']:.2f}x")
    tables = [r.pop("profile")["table"] for r in rows if "profile" in r and "table" in r["profile"]]
    if tables:
        (Path(__file__).resolve().parent / "results" / "training_throughput_profile.txt").write_text("\n".join(tables))
    meta = {**machine_info(), "matmul_2048_gflops": round(peak, 1), "default_gate": gate["verdicts"], **comp,
            "max_seq_length": a.max_seq_length,
            "batch": a.batch, "lora": "r16 all-linear (rows the CLI planned: the plan's rank and targets)", "model": a.model,
            "max_steps": a.max_steps,
            "types": a.types, "iceburg_rows": a.iceburg_rows or max(1, a.batch // 2),
            "load_average_start": load_start, "load_average_end": os.getloadavg(), "rounds": a.rounds,
            **({f"median_speedup_vs_{k}": round(statistics.median(v), 3)
                for k, v in speedups.items() if k != "iceburg"} if a.rounds > 1 else {})}
    tag = ("" if a.model == "iceburg-tiny" else f"_{a.model}") + (f"_{a.tag}" if a.tag else "")
    print(save(f"training_throughput{tag}_L{a.max_seq_length}", rows, meta,
               ["round", "approach", "micro_batch", "grad_accum", "precision", "cpu_allocator", "supervised_tok_per_s",
                "wall_s", "peak_rss_mb", "planned_peak_mb", "plan_error", "eval_loss", "eval_loss_fp32_base", "processed_tokens",
                "supervised_tokens", "pct_of_matmul_peak", "speedup_vs_this", "load_before"],
               part=a.tag or None))


if __name__ == "__main__":
    main()
