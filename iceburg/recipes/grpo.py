"""The GRPO recipe, `--objective grpo` (docs/grpo.md), one process:

    open_run -> pipeline (read, truth, split, emergence: the SFT recipe's `prepare_data`, so the
    held-out split stays held out and heldout.jsonl is written) -> prompts cut from the training
    records (`evaluation.suites.build_suite`: answer prompts and tool prompts) -> plan, LoRA ->
    rewards (`evaluation.rewards.build_rewards`) -> `train_grpo` (checkpoints in the run folder;
    `--resume` continues them; `--backend mlx`: `training.mlx_grpo`) -> finish_run (the same save,
    merge, exports, gates and report as SFT)

The mechanics (sampling, advantages, loss, step) are `iceburg.training.grpo` (torch) and
`iceburg.training.mlx_grpo` (MLX); this module only composes them.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable

from ..config import TrainingConfig
from ..errors import DataError
from ..records import RejectWriter
from ..training.result import TrainingResult, as_dict
from ..training.run_parts import plan_run, train_args
from .run import finish_run, make_result, open_run, run_metrics
from .sft import load_tokens, prepare_data

logger = logging.getLogger(__name__)

# Held-out prompts answered (greedy) before and after training: each is a generation, so a large
# held-out split is capped; 64 is `iceburg eval`'s cap on tool turns (evaluation/suites.py), chosen
# there to keep CPU evaluation to minutes, not measured as optimal.
HELD_OUT_PROMPTS = 64


def train_grpo_run(cfg: TrainingConfig, callbacks: Iterable[Any] = (), started: float | None = None) -> TrainingResult:
    """The whole GRPO recipe for a validated config; returns the `TrainingResult`."""
    from ..evaluation.rewards import build_rewards
    from ..training.grpo import GrpoArgs
    from ..training.encoding import encode_all

    started = time.time() if started is None else started
    run, base = open_run(cfg)
    with RejectWriter(run.rejects) as rejects:
        data = prepare_data(cfg, run, rejects)
        tokens, template, skip = load_tokens(cfg, base, [*data.curriculum.records, *data.eval_records])
        # the SFT held-out set (loss before/after); records the template refuses go to rejects.jsonl
        held_out = encode_all(tokens.tokenizer, data.eval_records, cfg.max_seq_length, tokens.eos, rejects,
                              skip=skip).examples
        records_rejected = rejects.total
    budget = cfg.max_seq_length - cfg.max_completion_length
    train_prompts, dropped = grpo_prompts(cfg, tokens.tokenizer, data.curriculum.records, skip, budget, "train")
    eval_prompts, dropped_eval = grpo_prompts(cfg, tokens.tokenizer, data.eval_records, skip, budget, "heldout")
    eval_prompts = eval_prompts[:HELD_OUT_PROMPTS]
    if not train_prompts:
        raise DataError(f"no GRPO prompt fits --max-seq-length {cfg.max_seq_length} minus --max-completion-length "
                        f"{cfg.max_completion_length} ({dropped} too long or not renderable); raise --max-seq-length")
    stats = dict(data.stats, records_rejected=records_rejected, tool_template=template,
                 grpo={"train_prompts": len(train_prompts), "eval_prompts": len(eval_prompts),
                       "prompts_dropped": dropped + dropped_eval})
    run.write_json(run.data_stats, stats)
    plan = plan_run(base.path, cfg, planning_examples(train_prompts, cfg))
    run.write_json(run.plan, dict(as_dict(plan), backend=cfg.resolved_backend()))
    args = train_args(cfg, plan, tokens.tokenizer, tokens.eos, run)
    args.micro_batch_size = max(1, plan.micro_batch_size // cfg.grpo_group)  # the planner's rows hold G answers
    gargs = GrpoArgs(group=cfg.grpo_group, loss_type=cfg.grpo_loss, epsilon_low=cfg.grpo_epsilon,
                     epsilon_high=cfg.grpo_epsilon, beta=cfg.grpo_beta, max_completion_length=cfg.max_completion_length,
                     temperature=cfg.grpo_temperature,
                     sample_dtype={"bf16": "bfloat16"}.get(cfg.grpo_sample_dtype or "", None),
                     eval_samples=cfg.grpo_eval_samples)
    rewards = build_rewards(cfg)
    with run_metrics(cfg, run) as logs:
        model, loss_before, loss_after, out = train_on_backend(cfg, run, base, plan, tokens, args, gargs, rewards,
                                                               (train_prompts, eval_prompts), held_out,
                                                               [*logs, *callbacks])
    result = make_result(
        cfg, run, base, plan, train_loss=out.train_loss, eval_loss_before=loss_before, eval_loss_after=loss_after,
        eval_history=[(out.steps, loss_after)], steps=out.steps, supervised_tokens=out.supervised_tokens,
        total_tokens=out.total_tokens, records_read=data.records_read,
        records_rejected=records_rejected, train_examples=len(train_prompts), eval_examples=len(eval_prompts),
        truncated_examples=0, training_seconds=out.wall_seconds, resumed_from_step=out.resumed_from,
        learning_rate=args.learning_rate, objective="grpo",
        preference=held_out_report(cfg, out, rewards, stats["grpo"], eval_prompts))
    return finish_run(cfg, run, base, model, tokens, result, stats, started)


def held_out_report(cfg: TrainingConfig, out, rewards, data: dict, eval_prompts: list) -> dict[str, Any]:
    """result.json's `preference` for a GRPO run: the held-out rewards (greedy; with
    --grpo-eval-samples K also the per-prompt means of K sampled answers) before and after, per prompt,
    and the greedy answers themselves (torch; empty on MLX), to read what was scored."""
    from ..training.grpo import mean_rewards

    before, after = mean_rewards(out.before), mean_rewards(out.after)
    logger.info("grpo held-out rewards (greedy) before: %s; after: %s", before, after)
    report = {"before": before, "after": after, "prompts_seen": out.prompts_seen,
              "rewards": dict(zip(rewards.names, rewards.weights)),
              "per_prompt": {"before": out.before, "after": out.after}, "data": data,
              "answers": {"prompts": [p.id for p in eval_prompts], "before": out.answers_before,
                          "after": out.answers_after}}
    if cfg.grpo_eval_samples:
        report["sampled"] = {"samples": cfg.grpo_eval_samples, "temperature": cfg.grpo_temperature,
                             "before": mean_rewards(out.sampled_before), "after": mean_rewards(out.sampled_after),
                             "per_prompt": {"before": out.sampled_before, "after": out.sampled_after}}
        logger.info("grpo held-out rewards (mean of %d sampled) before: %s; after: %s", cfg.grpo_eval_samples,
                    report["sampled"]["before"], report["sampled"]["after"])
    return report


def train_on_backend(cfg: TrainingConfig, run, base, plan, tokens, args, gargs, rewards, prompts: tuple[list, list],
                     held_out: list, callbacks: list) -> tuple[Any, float, float, Any]:
    """(torch PEFT model, SFT held-out loss before, after, GrpoOutput) on torch or on MLX
    (`training/mlx_grpo.py`: same prompts, plan, rewards and run folder; its adapter comes back as
    a torch PEFT model, so the exports are torch's). The SFT held-out loss before and after shows
    what GRPO did to the logged answers' likelihood."""
    if cfg.resolved_backend() == "mlx":
        from ..training.mlx_grpo import grpo_on_mlx

        return grpo_on_mlx(base.path, cfg, plan, run.mlx_work, args, gargs, rewards, tokens, prompts, held_out,
                           callbacks)
    from ..training.grpo import train_grpo
    from ..training.model import build_model
    from ..training.trainer import evaluate

    model = build_model(base.path, cfg, plan, tokens.tokenizer, tokens.added)
    loss_before = evaluate(model, held_out, args)
    out = train_grpo(model, tokens.tokenizer, *prompts, args, gargs, rewards, tokens.eos, callbacks=callbacks)
    return model, loss_before, evaluate(model, held_out, args), out

def grpo_prompts(cfg: TrainingConfig, tokenizer, records: list, skip, budget: int, suite: str) -> tuple[list, int]:
    """The prompts of `records`: each answer turn and each tool-calling turn (`build_suite`), rendered
    with the chat template (tools included, generation prompt added). Prompts the template cannot
    render, or longer than `budget` tokens, are dropped and counted."""
    from ..evaluation.rewards import RewardSource
    from ..evaluation.suites import build_suite
    from ..training.grpo import GrpoPrompt

    usable = [r for r in records if skip is None or skip(r) is None]
    dropped = len(records) - len(usable)
    agent = cfg.model_type.agent
    built = build_suite(usable, [suite] * len(usable), len(usable), agent, max_tool_prompts=10 ** 9)
    out = []
    for p in built.prompts:
        record = usable[p.record]
        p.agent = record.agent_type or agent
        kw = {"tools": p.tools} if p.tools else {}
        ids = tokenizer.apply_chat_template(p.messages, add_generation_prompt=True, tokenize=True,
                                            return_dict=False, **kw)
        if len(ids) > budget:
            dropped += 1
            continue
        out.append(GrpoPrompt(id=p.key, prompt_ids=list(ids), source=RewardSource(p, record)))
    return out, dropped


def planning_examples(prompts: list, cfg: TrainingConfig) -> list:
    """What the memory planner sizes: each prompt with a full answer, `grpo_group` times."""
    from ..training.encoding import Example

    n = cfg.max_completion_length
    return [Example(input_ids=p.prompt_ids + [0] * n, mask=[False] * len(p.prompt_ids) + [True] * n, id=p.id)
            for p in prompts for _ in range(cfg.grpo_group)]
