"""`iceburg eval RUN [--against BASE]`: what fine-tuning changed, on the run's held-out records.

For the tuned model (the run's `merged/`) and its base (the run's resolved base, or `--against`):
- held-out loss: mean cross-entropy per supervised (assistant) token, computed exactly as training
  computes eval loss (`trainer.evaluate` over `encoding.encode`);
- stop rate: the share of greedy answers to the first N held-out prompts (the conversation up to
  its first assistant turn) that end with the end-of-turn token within `max_new_tokens`;
- the answers side by side, with the reference answer.
Written to `RUN/eval.json` (RunFolder.eval) and shown in `report.html`. The held-out records are the ones the
run set aside (`heldout.jsonl`, written by the fine-tuner), never seen in training.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import IceburgError
from .run_folder import RunFolder

logger = logging.getLogger(__name__)

# Budget for the stop rate: the bundled sample answers are 300-900 tokens long in SmolLM2's
# tokenizer, so 384 tokens lets a concise answer finish while a model that never emits the
# end-of-turn token (the failure this measures) is caught; chosen, not measured as optimal.
DEFAULT_MAX_NEW_TOKENS = 384
DEFAULT_PROMPTS = 8


@dataclass
class ModelEval:
    name: str
    path: str
    heldout_loss: float
    stop_rate: float
    answers: list[dict[str, Any]] = field(default_factory=list)  # text, stopped, new_tokens
    seconds: float = 0.0


def read_heldout(run_dir: Path) -> list:
    from .data.loader import normalise

    path = RunFolder(run_dir).heldout
    if not path.is_file():
        raise IceburgError(f"{path} is missing: the run kept no held-out records (trained with "
                           "--eval-fraction 0, or by an iceburg older than `iceburg eval`); retrain with "
                           "--eval-fraction > 0")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [normalise(row["record"], row["source"], row["line"]) for row in rows]


def prompt_of(messages: list[dict[str, str]]) -> tuple[list[dict[str, str]], str]:
    """The conversation up to its first assistant turn, and that turn (the reference answer)."""
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            return messages[:i], m["content"]
    raise IceburgError("a held-out record has no assistant turn")


def heldout_loss(folder: Path, records: list, max_length: int) -> float:
    """Held-out loss of the model in `folder`, computed like the trainer's eval loss."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from .training.encoding import encode, ensure_chat_template, eos_ids
    from .training.trainer import TrainArgs, evaluate

    from .training.tool_render import tool_policy

    tok = AutoTokenizer.from_pretrained(folder)
    ensure_chat_template(tok)
    _, skip = tool_policy(tok, records)  # as training does: a template that writes tool calls
    records = [r for r in records if skip is None or not skip(r)]
    try:
        gen = GenerationConfig.from_pretrained(folder)
    except OSError:
        gen = None
    eos = eos_ids(tok, gen)
    examples = [e for e in (encode(tok, r, max_length, eos) for r in records) if e is not None]
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, use_safetensors=True)
    pad = tok.pad_token_id if tok.pad_token_id is not None else min(eos)
    return evaluate(model, examples, TrainArgs(max_length=max_length, micro_batch_size=1, pad_id=pad))


def evaluate_model(name: str, folder: Path, records: list, max_length: int, n_prompts: int,
                   max_new_tokens: int, known_loss: float | None = None) -> ModelEval:
    from .chat import HfChatModel

    started = time.perf_counter()
    loss = heldout_loss(folder, records, max_length) if known_loss is None else known_loss
    chat = HfChatModel(folder)
    prompts = [prompt_of(r.messages)[0] for r in records[:n_prompts]]
    answers = chat.answer_batch(prompts, max_new_tokens) if prompts else []
    stop_rate = sum(a.stopped for a in answers) / len(answers) if answers else float("nan")
    logger.info("%s: held-out loss %.4f, stop rate %.2f (%d prompts, budget %d tokens)", name, loss,
                stop_rate, len(answers), max_new_tokens)
    return ModelEval(name=name, path=str(folder), heldout_loss=loss, stop_rate=stop_rate,
                     answers=[asdict(a) for a in answers], seconds=time.perf_counter() - started)


def run_base_folder(run_dir: Path) -> tuple[str, Path]:
    info = json.loads(RunFolder(run_dir).base_model.read_text(encoding="utf-8"))
    return info.get("spec", "base"), Path(info["path"])


def evaluate_run(run_dir: Path, against: str | None = None, n_prompts: int = DEFAULT_PROMPTS,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, reuse_run_losses: bool = False) -> dict[str, Any]:
    """Evaluate the run's merged model against its base (or `against`); writes RUN/eval.json.

    reuse_run_losses: take the held-out losses from result.json (the trainer's eval loss before
    and after, on the same records) instead of recomputing them; what the fine-tuner does right
    after training, where they were just measured."""
    run = RunFolder(run_dir)
    run_dir = run.root
    if not run.is_run():
        raise IceburgError(f"{run_dir}: not a finished run folder (no merged/config.json); pass the folder "
                           "iceburg-train printed as 'run folder'")
    cfg = run.read_json(run.config) or {}
    records = read_heldout(run_dir)
    max_length = int(cfg.get("max_seq_length", 1024))
    if against:
        from .base_models import resolve_base_model

        base_name, base_dir = against, resolve_base_model(against).path
    else:
        base_name, base_dir = run_base_folder(run_dir)
    known: dict[str, float | None] = {"tuned": None, "base": None}
    if reuse_run_losses and not against:
        result = run.read_json(run.result)
        known = {"tuned": result["eval_loss_after"], "base": result["eval_loss_before"]}
    tuned = evaluate_model("tuned", run.merged, records, max_length, n_prompts, max_new_tokens,
                           known["tuned"])
    base = evaluate_model(base_name, base_dir, records, max_length, n_prompts, max_new_tokens, known["base"])
    side_by_side = []
    for r, b, t in zip(records, base.answers, tuned.answers):
        prompt, reference = prompt_of(r.messages)
        side_by_side.append({"id": r.id, "question": prompt[-1]["content"], "reference": reference,
                             "base": b["text"], "base_stopped": b["stopped"],
                             "tuned": t["text"], "tuned_stopped": t["stopped"]})
    report = {"run": str(run_dir), "model_type": cfg.get("model_type"), "heldout_records": len(records),
              "prompts": min(n_prompts, len(records)), "max_new_tokens": max_new_tokens,
              "decoding": "greedy", "tuned": _summary(tuned), "base": _summary(base),
              "side_by_side": side_by_side}
    run.write_json(run.eval, report)
    return report


def _summary(m: ModelEval) -> dict[str, Any]:
    return {"name": m.name, "path": m.path, "heldout_loss": m.heldout_loss, "stop_rate": m.stop_rate,
            "seconds": round(m.seconds, 1)}


def format_eval(report: dict[str, Any], width: int = 400) -> str:
    b, t = report["base"], report["tuned"]
    lines = [f"held-out loss:  base {b['heldout_loss']:.4f} -> tuned {t['heldout_loss']:.4f}",
             f"stop rate:      base {b['stop_rate']:.2f} -> tuned {t['stop_rate']:.2f} "
             f"({report['prompts']} greedy answers, budget {report['max_new_tokens']} tokens)"]
    for i, s in enumerate(report["side_by_side"], 1):
        lines += ["", f"[{i}] Q: {_clip(s['question'], width)}",
                  f"    base{'' if s['base_stopped'] else ' (no stop)'}:  {_clip(s['base'], width)}",
                  f"    tuned{'' if s['tuned_stopped'] else ' (no stop)'}: {_clip(s['tuned'], width)}"]
    return "\n".join(lines)


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
