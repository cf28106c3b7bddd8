"""GRPO on MLX (`--backend mlx --objective grpo`; mlx[cpu] on Linux, Metal on a Mac): the step
function the step engine (`engine.run_plan`) runs, as `mlx_trainer.mlx_step` is for SFT.

What is shared with the torch GRPO (`training/grpo.py`), not rewritten: the prompts and the step
plan (`plan_preference_steps`), the sampling seed of step s / micro-batch k (`sample_seed`), the
answer mask and decoding (`decode_answers`), the rewards and the group-normalised advantages
(`score`: the reward functions are plain Python on text, the advantages a few tensor operations on
G floats per prompt), the metrics (`reward_metrics`) and the held-out rewards loop. What runs on mlx:

- **sampling**: G answers per prompt from the mlx-lm model with mlx-lm's KV cache
  (`make_prompt_cache`), temperature 1 and no top-k/top-p cut (TRL's defaults, as torch); each
  token drawn with `mx.random.categorical` under an explicit key split from
  `mx.random.key(sample_seed(seed, step, k))`, so a resumed run samples exactly what the
  uninterrupted run sampled. The G copies of one prompt need no padding; a micro-batch's groups are
  right-padded to one width afterwards (masked out, as torch's batch is);
- **log-probabilities** of the answer tokens, one forward per prompt group (causal, so the right
  padding changes nothing before it; torch's left-padded batch gives the same values, RoPE scores
  depending only on relative positions: measured in tests/training/test_mlx_grpo.py);
- **the loss** (`grpo_loss_mlx`): TRL's clipped policy loss, k3 KL times the ratio, and the three
  normalisations, term for term as `grpo.grpo_loss`; the reference is the base with every LoRA
  layer's scale set to 0 (the adapter disabled, as torch's `disable_adapter`);
- the optimizer step: mlx AdamW, the linear schedule and gradient clipping of the MLX SFT step, and
  its checkpoints (`MlxCheckpointer`); LoRA dropout masks re-seeded from (seed, step) every step.
"""

from __future__ import annotations

import logging
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from ..engine import Cadence, StepResult, TrainingCallback, make_plan, run_plan
from ..errors import IceburgError
from .grpo import (GrpoArgs, GrpoOutput, GrpoPrompt, RewardSet, Rollout, decode_answers, held_out_rewards,
                   held_out_sampled, left_pad, reward_metrics, sample_seed, score)
from .mlx_backend import _mlx, apply_lora_mlx, lora_layers, load_mlx_model, save_peft_adapter
from .mlx_trainer import HEAD_AT_KEPT, MlxCheckpointer, _lr, evaluate_mlx
from .preference import _History, plan_preference_steps
from .trainer import TrainArgs

logger = logging.getLogger(__name__)


# -- sampling ------------------------------------------------------------------------------------

def sample_answers(model, prompt_ids: list[int], n: int, gargs: GrpoArgs, eos: set[int], pad_id: int,
                   key) -> np.ndarray:
    """`n` answers to one prompt (n, width): sampled with `key`, greedy when it is None; a row that
    ended (end-of-turn token) is padded with `pad_id`, and sampling stops when every row has ended."""
    mx = _mlx()
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    logits = model(mx.array([prompt_ids] * n), cache=cache)[:, -1, :]
    stops, done, out = np.array(sorted(eos)), np.zeros(n, dtype=bool), []
    for _ in range(gargs.max_completion_length):
        if key is None:
            tok = mx.argmax(logits, axis=-1)
        else:
            key, sub = mx.random.split(key)
            tok = mx.random.categorical(logits.astype(mx.float32) / gargs.temperature, key=sub)
        row = np.where(done, pad_id, np.array(tok))
        out.append(row)
        done |= np.isin(row, stops)
        if done.all():
            break
        logits = model(mx.array(row[:, None]), cache=cache)[:, -1, :]
    return np.stack(out, axis=1).astype(np.int64)


def generate_mlx(model, tokenizer, prompts: list[GrpoPrompt], n: int, gargs: GrpoArgs, eos: set[int], pad_id: int,
                 seed: int | None, device: str = "cpu") -> Rollout:
    """`grpo.generate` on mlx (same signature and Rollout): `n` answers per prompt, sampled from
    `seed` (greedy when None), LoRA dropout off while sampling."""
    mx = _mlx()
    key = None if seed is None else mx.random.key(seed)
    was = model.training
    model.eval()
    groups = []
    for p in prompts:
        sub = None
        if key is not None:
            key, sub = mx.random.split(key)
        groups.append(sample_answers(model, p.prompt_ids, n, gargs, eos, pad_id, sub))
    model.train(was)
    width = max(g.shape[1] for g in groups)
    comp = torch.from_numpy(np.concatenate([np.pad(g, ((0, 0), (0, width - g.shape[1])), constant_values=pad_id)
                                            for g in groups]))
    mask, completions = decode_answers(tokenizer, comp, eos)
    ids, attn = left_pad([p.prompt_ids for p in prompts for _ in range(n)], pad_id)
    return Rollout(ids, attn, comp, mask, completions, [p.source for p in prompts for _ in range(n)])


# -- log-probabilities and the loss --------------------------------------------------------------

def _head_logits(model, ids, first: int):
    """Logits at positions first.. of `ids` (the lm head only there on HEAD_AT_KEPT models)."""
    if getattr(model, "model_type", None) not in HEAD_AT_KEPT:
        return model(ids)[:, first:]
    h = model.model(ids, None)[:, first:]
    return model.model.embed_tokens.as_linear(h) if model.args.tie_word_embeddings else model.lm_head(h)


def completion_logps_mlx(model, prompts: list[list[int]], group: int, completion_ids, temperature: float = 1.0):
    """Per-token log-probabilities (N, C) of the answer tokens, rows ordered as the rollout's (each
    prompt `group` times); the logits divided by the sampling temperature, as torch and TRL."""
    mx = _mlx()
    out = []
    for i, p in enumerate(prompts):
        comp = completion_ids[i * group:(i + 1) * group]
        ids = mx.concatenate([mx.array([p] * group), comp], axis=1)[:, :-1]
        logits = _head_logits(model, ids, len(p) - 1).astype(mx.float32) / temperature
        picked = mx.take_along_axis(logits, comp[..., None], axis=-1).squeeze(-1)
        out.append(picked - mx.logsumexp(logits, axis=-1))
    return mx.concatenate(out, axis=0)


def grpo_loss_mlx(logps, old_logps, ref_logps, advantages, mask, gargs: GrpoArgs, num_items: float):
    """`grpo.grpo_loss` on mlx arrays: (loss, masked mean KL (0 when beta is 0), clip ratio)."""
    mx = _mlx()
    mask = mask.astype(mx.float32)
    adv = advantages[:, None]
    coef_1 = mx.exp(logps - old_logps)
    coef_2 = mx.clip(coef_1, 1 - gargs.epsilon_low, 1 + gargs.epsilon_high)
    per_token = -mx.minimum(coef_1 * adv, coef_2 * adv)
    n_tok = mx.maximum(mask.sum(), 1.0)
    kl_mean = mx.array(0.0)
    if gargs.beta != 0.0:
        if ref_logps is None:
            raise ValueError("grpo_loss_mlx: beta > 0 needs the reference log-probabilities")
        kl = mx.exp(ref_logps - logps) - (ref_logps - logps) - 1
        kl = kl * coef_1 if gargs.bias_correction_kl else kl
        per_token = per_token + gargs.beta * kl
        kl_mean = (kl * mask).sum() / n_tok
    if gargs.loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mx.maximum(mask.sum(-1), 1.0)).mean()
    elif gargs.loss_type == "dr_grpo":
        loss = (per_token * mask).sum() / (per_token.shape[0] * gargs.max_completion_length)
    elif gargs.loss_type == "dapo":
        loss = (per_token * mask).sum() / max(float(num_items), 1.0)
    else:
        raise ValueError(f"unknown GRPO loss {gargs.loss_type!r}; choose grpo, dr_grpo or dapo")
    clipped = ((coef_1 < 1 - gargs.epsilon_low) & (adv < 0)) | ((coef_1 > 1 + gargs.epsilon_high) & (adv > 0))
    return loss, kl_mean, (clipped.astype(mx.float32) * mask).sum() / n_tok


@contextmanager
def adapter_disabled(model):
    """The base model: every LoRA layer's scale 0 for the block (torch: PEFT's `disable_adapter`)."""
    layers = list(lora_layers(model).values())
    scales = [layer.scale for layer in layers]
    for layer in layers:
        layer.scale = 0.0
    try:
        yield model
    finally:
        for layer, s in zip(layers, scales):
            layer.scale = s


def reference_logps_mlx(model, prompts: list[list[int]], group: int, completion_ids, gargs: GrpoArgs):
    mx = _mlx()
    was = model.training
    model.eval()
    with adapter_disabled(model):
        ref = mx.stop_gradient(completion_logps_mlx(model, prompts, group, completion_ids, gargs.temperature))
        mx.eval(ref)
    model.train(was)
    return ref


def _policy_loss(model, prompts, group, comp, mask, adv, ref, gargs, num_items, share):
    """One pass (TRL's num_iterations=1): the "old" log-probabilities are the current ones, detached."""
    mx = _mlx()
    logps = completion_logps_mlx(model, prompts, group, comp, gargs.temperature)
    loss, kl, clip = grpo_loss_mlx(logps, mx.stop_gradient(logps), ref, adv, mask, gargs, num_items)
    return loss * share, kl, clip


# -- the step and the loop -----------------------------------------------------------------------

def grpo_step_mlx(model, tokenizer, opt, args: TrainArgs, gargs: GrpoArgs, rewards: RewardSet, eos: set[int],
                  total: int) -> Callable:
    """The engine's step function on mlx, as `grpo.grpo_step`: sample and score every micro-batch,
    then one forward/backward per micro-batch (weighted as TRL's accumulation weights it), the
    gradients summed, clipped, one AdamW update at the schedule's learning rate."""
    mx = _mlx()
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx.utils import tree_map

    grad_fn = nn.value_and_grad(model, _policy_loss)

    def rollout(index: int, k: int, mb: list[GrpoPrompt]):
        r = generate_mlx(model, tokenizer, mb, gargs.group, gargs, eos, args.pad_id, sample_seed(args.seed, index, k))
        score(r, rewards, gargs.group)
        prompts, comp = [p.prompt_ids for p in mb], mx.array(r.completion_ids.numpy().astype(np.int32))
        ref = reference_logps_mlx(model, prompts, gargs.group, comp, gargs) if gargs.beta != 0.0 else None
        return r, prompts, comp, ref

    def step(index: int, micro_batches: list[list[GrpoPrompt]], on_batch: Callable) -> StepResult:
        rolls = []
        for k, mb in enumerate(micro_batches):
            on_batch([p.id for p in mb])
            rolls.append(rollout(index, k, mb))
        mx.random.seed(args.seed * 1_000_003 + index)  # LoRA dropout masks depend on (seed, step) only
        num_items = float(sum(r.completion_mask.sum() for r, *_ in rolls))
        n_seq = sum(len(r.completions) for r, *_ in rolls)
        grads, loss_sum, agg = None, 0.0, {}
        for r, prompts, comp, ref in rolls:
            share = 1.0 if gargs.loss_type == "dapo" else len(r.completions) / n_seq  # as grpo_step
            (loss, kl, clip), g = grad_fn(model, prompts, gargs.group, comp, mx.array(r.completion_mask.numpy()),
                                          mx.array(r.advantages.numpy()), ref, gargs, num_items, share)
            grads = g if grads is None else tree_map(lambda a, b: a + b, grads, g)
            loss_sum += float(loss)
            w = len(r.completions) / n_seq
            if gargs.beta != 0.0:
                agg["kl"] = agg.get("kl", 0.0) + float(kl) * w
            agg["clip_ratio/region_mean"] = agg.get("clip_ratio/region_mean", 0.0) + float(clip) * w
        grads, _ = optim.clip_grad_norm(grads, args.max_grad_norm)
        opt.learning_rate = _lr(index, total, args)
        opt.update(model, grads)
        mx.eval(model.parameters(), opt.state)
        tokens = int(num_items) + sum(int(r.prompt_mask.sum()) for r, *_ in rolls)
        # "lr": the rate the next step will use, as torch's OptimizerStep reports it
        metrics = {**reward_metrics([r for r, *_ in rolls], rewards), **agg, "lr": _lr(index + 1, total, args)}
        return StepResult(loss_sum, metrics, int(num_items), tokens)

    return step


def train_grpo_mlx(model, tokenizer, train_prompts: list[GrpoPrompt], eval_prompts: list[GrpoPrompt], args: TrainArgs,
                   gargs: GrpoArgs, rewards: RewardSet, eos: set[int], *,
                   callbacks: Iterable[TrainingCallback] = ()) -> GrpoOutput:
    """`grpo.train_grpo` on an mlx-lm model with LoRA layers: the same plan, held-out rewards
    (greedy, and sampled with `gargs.eval_samples`) before and after, cadence and resume; MLX checkpoints."""
    _mlx()
    import mlx.optimizers as optim

    if not train_prompts:
        raise IceburgError("no GRPO prompts to train on")
    plan = make_plan(*plan_preference_steps(train_prompts, args), key=lambda p: p.id)
    opt = optim.AdamW(learning_rate=args.learning_rate, weight_decay=args.weight_decay, bias_correction=True)
    held_out = lambda: held_out_rewards(model, tokenizer, eval_prompts, gargs, rewards, eos, args.pad_id,  # noqa: E731
                                        sample=generate_mlx)
    before = held_out()
    sampled_before = held_out_sampled(model, tokenizer, eval_prompts, gargs, rewards, eos, args, sample=generate_mlx)
    history = _History()
    ckpt = None if args.checkpoint_dir is None else MlxCheckpointer(model, opt, Path(args.checkpoint_dir))
    model.train()
    run = run_plan(plan, grpo_step_mlx(model, tokenizer, opt, args, gargs, rewards, eos, len(plan)),
                   lambda step: None, cadence=Cadence(args.eval_steps, args.save_steps), checkpointer=ckpt,
                   resume=args.resume, callbacks=[history, *callbacks], show_progress=args.show_progress,
                   desc="training (grpo, mlx)")
    after = held_out()
    sampled_after = held_out_sampled(model, tokenizer, eval_prompts, gargs, rewards, eos, args, sample=generate_mlx)
    return GrpoOutput(steps=run.steps, train_loss=run.train_loss, last_loss=run.last_loss, before=before,
                      after=after, history=history.lines,
                      prompts_seen=sum(len(mb) for st in plan.steps for mb in st),
                      supervised_tokens=run.supervised_tokens, total_tokens=run.total_tokens,
                      wall_seconds=run.wall_seconds, resumed_from=run.resumed_from,
                      sampled_before=sampled_before, sampled_after=sampled_after)


def grpo_on_mlx(base_path: Path, cfg, plan, work: Path, args: TrainArgs, gargs: GrpoArgs, rewards: RewardSet, tokens,
                prompts: tuple[list, list], held_out: list, callbacks) -> tuple[object, float, float, GrpoOutput]:
    """The GRPO recipe's training phase on mlx: (torch PEFT model holding the trained adapter, SFT
    held-out loss before and after, GrpoOutput). `work` is a scratch folder, removed at the end."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    mx = _mlx()  # first: binds OpenBLAS on Linux before mlx loads (mlx_backend.preload_openblas)
    if tokens.added:
        raise IceburgError(f"--backend mlx: the base {base_path} has no chat template, so iceburg adds template "
                           "tokens and grows the embeddings, which the MLX backend does not do; use --backend torch")
    targets = list(plan.lora_target_modules)
    try:
        mx.random.seed(cfg.seed)
        model = apply_lora_mlx(load_mlx_model(base_path, work, plan.precision), plan.lora_r, plan.lora_alpha, targets,
                               cfg.lora_dropout, cfg.use_rslora)
        before = evaluate_mlx(model, held_out, args)
        logger.info("SFT held-out loss before GRPO (mlx): %.4f", before)
        out = train_grpo_mlx(model, tokens.tokenizer, *prompts, args, gargs, rewards, tokens.eos,
                             callbacks=callbacks)
        after = evaluate_mlx(model, held_out, args)
        adapter = save_peft_adapter(model, work / "adapter", plan.lora_r, plan.lora_alpha, targets, cfg.use_rslora,
                                    base_path)
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32, use_safetensors=True,
                                                    trust_remote_code=cfg.trust_remote_code)
        peft_model = PeftModel.from_pretrained(base, adapter)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return peft_model, before, after, out
