"""GRPO (online RL with verifiable rewards) on a LoRA model: sampling, group-normalised advantages,
the clipped policy loss, and a step function (`grpo_step`) on the step engine SFT and DPO run on
(`engine.run_plan`: resume, cadence, metrics, checkpoints).

Each optimizer step takes its prompts from the plan (micro-batches of prompts), samples
`group` answers per prompt with `generate` (KV cache, temperature 1, no top-k/top-p cut, TRL's
defaults), scores them with the injected rewards (`RewardSet`: the recipe builds it from
`iceburg.evaluation.rewards`, a layer above), and trains on them once (TRL's `num_iterations=1`:
the "old" log-probabilities are the detached current ones, so the ratio is 1 in value and carries
the gradient). The formulas are TRL 1.16 `GRPOTrainer`'s, term for term:

- rewards: weighted sum over the reward functions, a reward that does not apply (None -> NaN) left
  out (`nansum`), an answer no reward applies to NaN (`_generate_and_score_completions`);
- advantages: (r - group mean) / (group std + 1e-4), Bessel-corrected std, NaN -> 0
  (`scale_rewards="group"`, the default);
- per-token loss: -min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A), plus
  beta * (exp(ref - logp) - (ref - logp) - 1) (the k3 KL estimator) times the ratio (TRL's
  `use_bias_correction_kl`, default on) when beta > 0;
- normalisation (`loss_type`): "grpo" mean over answers of each answer's token mean; "dr_grpo" sum
  over (answers x max_completion_length); "dapo" (TRL's default) sum over the step's answer tokens.
  A step of several micro-batches divides as TRL's gradient accumulation does.
tests/grpo/test_loss.py runs TRL's `_compute_loss` on the same batch.

The sampling RNG of step s, micro-batch k is seeded from (seed, s, k) inside `torch.random.fork_rng`,
so a resumed run samples exactly what the uninterrupted run sampled; the global RNG (LoRA dropout)
is in the checkpoint (`TorchCheckpointer`). The reference for the KL term is the base with the
adapter disabled, as for DPO (`preference._reference`).
"""

from __future__ import annotations

import ctypes
import logging
import math
import sys
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

import torch

from ..errors import IceburgError
from ..engine import Cadence, OptimizerStep, StepResult, TrainingCallback, make_plan, run_plan
from . import fast_decode
from .fast_decode import roomy_layer_class
from .lora_dropout import lora_dropout_on_cpu
from .preference import _History, _reference, plan_preference_steps
from .trainer import TorchCheckpointer, TrainArgs, default_optimizer, default_scheduler

logger = logging.getLogger(__name__)

# TRL 1.16 grpo_trainer.py: `advantages / (std_rewards + 1e-4)`
STD_EPS = 1e-4


@dataclass
class GrpoArgs:
    group: int = 4
    loss_type: str = "dapo"  # TRL 1.16 GRPOConfig default
    epsilon_low: float = 0.2  # GRPOConfig.epsilon
    epsilon_high: float = 0.2  # GRPOConfig.epsilon_high (None there: = epsilon)
    beta: float = 0.0  # GRPOConfig.beta
    max_completion_length: int = 256
    temperature: float = 1.0
    # TRL 1.16 GRPOConfig.use_bias_correction_kl (default True): the KL term times the importance
    # ratio (1 in value on-policy; it changes the KL gradient to the unbiased reverse-KL one)
    bias_correction_kl: bool = True
    # opt-in: sample the G answers with the model's weights in this dtype ("bfloat16"), the output
    # head and the logits kept in float32; None samples in the model's own dtype. Faster on CPUs with
    # bf16 matmuls (half the weight bytes a decoded token reads) but the answers are drawn from a
    # rounded policy, not the one the loss scores (as a vLLM sampler in bf16 is); greedy held-out
    # answers never use it. docs/grpo.md "Speed"
    sample_dtype: str | None = None
    # held-out evaluation besides the greedy answers: K answers per prompt sampled at `temperature`
    # with seeds fixed per prompt batch (the same before and after training), each reward's mean over
    # the K per prompt; 0 = greedy only. docs/grpo.md "Greedy and sampled held-out rewards"
    eval_samples: int = 0


@dataclass
class GrpoPrompt:
    """One prompt: its id, the rendered prompt ids (chat template, generation prompt added) and what
    the rewards need to score an answer to it (`source`, opaque here)."""

    id: str
    prompt_ids: list[int]
    source: Any = None


@dataclass
class Completion:
    text: str
    stopped: bool  # ended with an end-of-turn token within the budget
    tokens: int  # answer tokens, the end-of-turn token included


class RewardSet(Protocol):
    """Named reward functions with weights. `score` returns, per name, one value per answer (None:
    does not apply to that prompt) and raises, naming the prompt, when a function fails."""

    names: list[str]
    weights: list[float]

    def score(self, sources: list, completions: list[Completion]) -> dict[str, list[float | None]]: ...


@dataclass
class Rollout:
    """One micro-batch of prompts, each repeated `group` times, with its sampled answers."""

    prompt_ids: torch.Tensor  # (N, P) left-padded
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor  # (N, C) right-padded after the end-of-turn token
    completion_mask: torch.Tensor  # 1 up to and including the first end-of-turn token
    completions: list[Completion]
    sources: list
    rewards_per_func: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    advantages: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    ref_logps: torch.Tensor | None = None


# -- rewards and advantages ----------------------------------------------------------------------

def combine_rewards(rewards_per_func: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum per answer ignoring rewards that do not apply (NaN); NaN where none applies."""
    rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
    rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
    return rewards


def nanstd(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Bessel-corrected std ignoring NaNs (NaN for fewer than two values), as TRL's `nanstd`."""
    mean = torch.nanmean(x, dim=dim, keepdim=True)
    var = torch.nanmean((x - mean) ** 2, dim=dim, keepdim=True)
    n = (~torch.isnan(x)).sum(dim=dim, keepdim=True)
    var = var * torch.where(n > 1, n / (n - 1), torch.full_like(var, float("nan")))
    return var.sqrt().squeeze(dim)


def group_advantages(rewards: torch.Tensor, group: int) -> torch.Tensor:
    """(r - group mean) / (group std + 1e-4); an unscorable answer's advantage is 0."""
    g = rewards.view(-1, group)
    mean = torch.nanmean(g, dim=1).repeat_interleave(group)
    std = nanstd(g, dim=1).repeat_interleave(group)
    return torch.nan_to_num((rewards - mean) / (std + STD_EPS), nan=0.0)


# -- the loss ------------------------------------------------------------------------------------

def grpo_loss(logps: torch.Tensor, old_logps: torch.Tensor, ref_logps: torch.Tensor | None,
              advantages: torch.Tensor, mask: torch.Tensor, gargs: GrpoArgs,
              num_items: float | torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped policy loss of one micro-batch, normalised as TRL's `loss_type` with one
    accumulation step (`num_items`: the step's answer tokens, for "dapo"); and its metrics."""
    mask = mask.float()
    adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
    coef_1 = torch.exp(logps - old_logps)
    coef_2 = torch.clamp(coef_1, 1 - gargs.epsilon_low, 1 + gargs.epsilon_high)
    per_token = -torch.min(coef_1 * adv, coef_2 * adv)
    m: dict[str, float] = {}
    if gargs.beta != 0.0:
        if ref_logps is None:
            raise ValueError("grpo_loss: beta > 0 needs the reference log-probabilities")
        kl = torch.exp(ref_logps - logps) - (ref_logps - logps) - 1
        if gargs.bias_correction_kl:
            kl = kl * coef_1
        per_token = per_token + gargs.beta * kl
        m["kl"] = ((kl * mask).sum() / mask.sum().clamp(min=1.0)).item()
    if gargs.loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif gargs.loss_type == "dr_grpo":
        loss = (per_token * mask).sum() / (per_token.size(0) * gargs.max_completion_length)
    elif gargs.loss_type == "dapo":
        loss = (per_token * mask).sum() / torch.as_tensor(num_items, dtype=per_token.dtype).clamp(min=1.0)
    else:
        raise ValueError(f"unknown GRPO loss {gargs.loss_type!r}; choose grpo, dr_grpo or dapo")
    clipped = ((coef_1 < 1 - gargs.epsilon_low) & (adv < 0)) | ((coef_1 > 1 + gargs.epsilon_high) & (adv > 0))
    m["clip_ratio/region_mean"] = ((clipped.float() * mask).sum() / mask.sum().clamp(min=1.0)).item()
    return loss, m


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Logits in float32 at least (bf16/fp16 up-cast; float64 kept, for the exactness tests)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def completion_logps(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                     completion_mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-token log-probabilities of the answer tokens (N, C), the logits divided by the sampling
    temperature as TRL's fused head does."""
    ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attn = torch.cat([prompt_mask, completion_mask], dim=1)
    c = completion_ids.size(1)
    # only the answer positions' logits (TRL: logits_to_keep = completion length + 1)
    logits = model(input_ids=ids, attention_mask=attn, use_cache=False,
                   logits_to_keep=c + 1).logits[:, :-1]
    logits = _at_least_fp32(logits) / temperature
    return logits.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def prompt_groups(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> list[tuple[int, int]]:
    """[start, end) row ranges of consecutive rows with the same prompt (a rollout's G answers)."""
    bounds, start = [], 0
    for i in range(1, prompt_ids.size(0) + 1):
        if i == prompt_ids.size(0) or not (torch.equal(prompt_ids[i], prompt_ids[start])
                                          and torch.equal(prompt_mask[i], prompt_mask[start])):
            bounds.append((start, i))
            start = i
    return bounds


def shared_prefix_logps(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                        completion_mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """`completion_logps`, with each prompt run once: per group of rows sharing a prompt, the prompt
    (its padding cut) goes through the model at batch 1 with its KV cache kept (gradient included),
    the cache is repeated to the group's G rows, and the G answers run on it; logits only at answer
    positions. Mathematically the full forward (causal attention: a prompt token never sees the
    answer); prompt compute and memory / G, no (N, prompt, vocab) logits. LoRA dropout on prompt
    tokens is drawn once per prompt, not per answer."""
    checkpointing = getattr(model, "is_activation_checkpointing", None)  # transformers 5 (was is_gradient_...)
    if checkpointing if checkpointing is not None else getattr(model, "is_gradient_checkpointing", False):
        # no KV cache under checkpointing
        return completion_logps(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature)
    out = []
    for a, b in prompt_groups(prompt_ids, prompt_mask):
        prompt = prompt_ids[a][prompt_mask[a].bool()].unsqueeze(0)
        pre = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
        cache = pre.cache
        if not hasattr(cache, "batch_repeat_interleave"):  # a cache that cannot be shared: the full forward
            return completion_logps(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature)
        cache.batch_repeat_interleave(b - a)
        attn = torch.cat([torch.ones(b - a, prompt.size(1), dtype=completion_mask.dtype,
                                     device=completion_mask.device), completion_mask[a:b]], dim=1)
        comp = model(input_ids=completion_ids[a:b], attention_mask=attn, cache=cache, use_cache=True,
                     logits_to_keep=completion_ids.size(1))
        # the first answer token's logits are the prompt's last position, one row for the G answers:
        # scored once against it, not expanded and concatenated into an (G, C, vocab) copy
        first, rest = _scaled(pre.logits[0, -1], temperature), _scaled(comp.logits[:, :-1], temperature)
        lp_first = first[completion_ids[a:b, 0]] - torch.logsumexp(first, dim=-1)
        lp_rest = rest.gather(-1, completion_ids[a:b, 1:].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(rest, dim=-1)
        out.append(torch.cat([lp_first.unsqueeze(1), lp_rest], dim=1))
    return torch.cat(out)


def _scaled(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Logits in float32 at least, divided by the sampling temperature (no copy at temperature 1)."""
    logits = _at_least_fp32(logits)
    return logits if temperature == 1.0 else logits / temperature


# -- sampling ------------------------------------------------------------------------------------

def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
    return ids, mask


def answer_mask(completion_ids: torch.Tensor, eos: Iterable[int]) -> torch.Tensor:
    """1 up to and including the first end-of-turn token of each row (all 1 when none)."""
    is_eos = torch.isin(completion_ids, torch.tensor(sorted(eos), device=completion_ids.device))
    n = completion_ids.size(1)
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full((completion_ids.size(0),), n,
                                                                          device=completion_ids.device))
    return (torch.arange(n, device=completion_ids.device).unsqueeze(0) <= first.unsqueeze(1)).long()


def sample_seed(seed: int, step: int, micro: int) -> int:
    """The sampling seed of a step's micro-batch: a function of the run's seed and the position only."""
    return (seed * 1_000_003 + step * 1_009 + micro) % 2**63


def generate(model, tokenizer, prompts: list[GrpoPrompt], n: int, gargs: GrpoArgs, eos: set[int], pad_id: int,
             seed: int | None, device: str = "cpu") -> Rollout:
    """`n` answers per prompt (sampled with `seed`; greedy when seed is None), one left-padded batch.
    Sampling is `GumbelSampler` on `generate`'s greedy path: an exact draw from softmax(logits / T).
    Runs under `torch.inference_mode` (no version counters or autograd metadata on the ~1,800 small
    ops a decoded token makes: 59.5-60.5 vs 61.2-61.6 ms a token on SmolLM2-135M at batch 4, 2
    threads, the same tokens; docs/grpo.md "Speed"); the answer ids are copied out of it, since the
    loss forward saves them for backward, which inference tensors cannot be."""
    with torch.inference_mode():
        ids, attn, out = _sample(model, prompts, n, gargs, eos, pad_id, seed, device)
    comp = out[:, ids.size(1):].clone()
    mask, completions = decode_answers(tokenizer, comp, eos)
    return Rollout(ids.clone(), attn.clone(), comp, mask, completions, [p.source for p in prompts for _ in range(n)])


def _sample(model, prompts: list[GrpoPrompt], n: int, gargs: GrpoArgs, eos: set[int], pad_id: int,
            seed: int | None, device: str):
    rows = [p.prompt_ids for p in prompts for _ in range(n)]
    ids, attn = left_pad(rows, pad_id)
    ids, attn = ids.to(device), attn.to(device)
    sampler = GumbelSampler(gargs.temperature) if seed is not None else None  # None: greedy
    kw: dict[str, Any] = dict(do_sample=False, top_p=None, top_k=None, temperature=None)
    if sampler is not None:
        kw["logits_processor"] = [sampler]
    was = model.training
    model.eval()
    dtype = getattr(torch, gargs.sample_dtype) if gargs.sample_dtype and seed is not None else None
    with torch.random.fork_rng(devices=[]), merged_lora(model, dtype), cast_for_sampling(model, dtype):
        cache = (prefill_once(model, prompts, n, pad_id, device, room=gargs.max_completion_length + 1)
                 if n > 1 and min(map(len, rows)) > 1 else None)
        if seed is not None:
            torch.manual_seed(seed)
        if fast_decode.supports(model, cache, ids.size(1) + gargs.max_completion_length):
            out = fast_decode.decode(model, ids, attn, cache, gargs.max_completion_length, eos, pad_id, sampler)
        else:
            out = model.generate(input_ids=ids, attention_mask=attn, max_new_tokens=gargs.max_completion_length,
                                 eos_token_id=sorted(eos), pad_token_id=pad_id, use_cache=True, cache=cache,
                                 **kw)
    model.train(was)
    return ids, attn, out


class GumbelSampler:
    """A logits processor that makes `generate`'s greedy step a sample at `temperature`: the argmax of
    logits / T plus independent Gumbel(0, 1) noise is an exact draw from softmax(logits / T) (the
    Gumbel-max trick; torch.multinomial's one-sample path is the same race in its exponential form).
    Written here because torch's multinomial spends ~3.8 ms a token drawing its 4 x 49,152
    exponentials at 2 threads (SmolLM2's vocabulary, batch 4), against ~0.7 ms for `torch.rand` and
    two logs (docs/grpo.md "Speed"). Uses the global generator, as multinomial does; u = 0 is lifted
    to the smallest normal float so the noise stays finite. Masked (-inf) logits stay -inf."""

    def __init__(self, temperature: float):
        if not temperature > 0:
            raise IceburgError(f"sampling temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        u = torch.rand_like(scores).clamp_(min=torch.finfo(scores.dtype).tiny)
        noise = u.log_().neg_().log_().neg_()
        return (scores if self.temperature == 1.0 else scores / self.temperature) + noise


_HUGE_PAGE = 2 << 20  # x86-64 / arm64 transparent huge page
_MADV_HUGEPAGE = 14  # <linux/mman.h>
# model -> {dtype: flat buffer}: the sampling copy kept between steps (`sampling_copy_kept`)
_KEPT: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def huge_page_buffer(numel: int, dtype: torch.dtype) -> torch.Tensor:
    """A flat CPU tensor aligned to 2 MiB and advised (Linux `madvise(MADV_HUGEPAGE)`) to be backed
    by transparent huge pages: one TLB entry per 2 MiB instead of per 4 KiB. Read once per decoded
    token, SmolLM2's merged projections ran 13-15% faster from such a buffer than as 210 separate
    tensors (docs/grpo.md "Speed"). No libc (not Linux) or a refused advice leaves ordinary pages:
    the same values, only slower. Written by hand: torch's own THP switch (`THP_MEM_ALLOC_ENABLE`)
    is read once at start-up and covers only single allocations of 2 MiB or more."""
    size = torch.empty((), dtype=dtype).element_size()
    raw = torch.empty(numel + _HUGE_PAGE // size, dtype=dtype)
    start = (-raw.data_ptr()) % _HUGE_PAGE // size
    buf = raw[start:start + numel]
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.madvise(ctypes.c_void_p(buf.data_ptr()), ctypes.c_size_t(numel * size), _MADV_HUGEPAGE):
                logger.debug("madvise(MADV_HUGEPAGE) refused (errno %d): ordinary pages", ctypes.get_errno())
        except (OSError, AttributeError) as e:
            logger.debug("no madvise: %s", e)
    return buf


def sampling_copy_bytes(model) -> int:
    """Bytes of the weights `merged_lora` copies for sampling: the LoRA layers' base weights and the
    output head's."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    ws = [m.base_layer.weight for m in model.modules() if isinstance(m, LoraLinear)]
    head = model.get_output_embeddings()
    if head is not None and getattr(head, "weight", None) is not None:
        ws.append(head.weight)
    return sum(w.numel() * w.element_size() for w in ws)


@contextmanager
def sampling_copy_kept(model, keep: bool = True):
    """While inside (and `keep`), `merged_lora` writes the merged weights into one huge-page buffer
    kept between calls, instead of new tensors each call: a fresh huge-page buffer costs ~1 s of
    page faults a step, and a buffer of 4 KiB pages is read slower. The buffer is released on exit.
    `train_grpo` keeps it on CPU when it takes at most a quarter of the memory available."""
    if not keep:
        yield
        return
    _KEPT[model] = {}
    try:
        yield
    finally:
        _KEPT.pop(model, None)


@contextmanager
def cast_for_sampling(model, dtype: torch.dtype | None):
    """Every floating parameter but the output head's swapped for a `dtype` copy, the head's input cast
    back to the head's dtype (so the logits are float32 for a float32 model); the original tensors put
    back on exit. No-op for None or the model's own dtype. Tied input embeddings get their own copy."""
    head = model.get_output_embeddings() if dtype is not None else None
    if head is None or head.weight.dtype == dtype:
        yield
        return
    saved = []
    hook = head.register_forward_pre_hook(lambda mod, args: (args[0].to(mod.weight.dtype), *args[1:]))
    try:
        for module in model.modules():
            if module is head:
                continue
            for name, p in list(module._parameters.items()):
                if p is not None and p.is_floating_point() and p.dtype != dtype:
                    saved.append((module, name, p))
                    module._parameters[name] = torch.nn.Parameter(p.detach().to(dtype), requires_grad=False)
        yield
    finally:
        hook.remove()
        for module, name, p in saved:
            module._parameters[name] = p


@contextmanager
def merged_lora(model, dtype: torch.dtype | None = None):
    """Sample through plain Linear layers: each LoRA layer's base weight is swapped for W + BA*s (a
    copy) with the adapter disabled, and the very same original tensors put back on exit
    (bit-exact, unlike PEFT's merge/unmerge, which adds and subtracts the delta). While sampling each
    LoRA layer is swapped out of the module tree for its base Linear (what the disabled adapter calls:
    the same operation, without PEFT's per-layer call; 210 layers a token on SmolLM2). Only plain float
    LoRA Linear layers (no DoRA, no quantized base); anything else samples unmerged. Costs one copy
    of the adapted weights while sampling; `dtype`: the merged copy in that dtype (`cast_for_sampling`).
    Inside `sampling_copy_kept` the copies (the output head's too, read once a token as well) are
    views into one kept huge-page buffer, rewritten each call."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    layers = [m for m in model.modules() if isinstance(m, LoraLinear)]
    if (not layers or getattr(model, "disable_adapter", None) is None
            or any(type(m) is not LoraLinear or m.merged or any(m.use_dora.get(n) for n in m.active_adapters)
                   or not m.base_layer.weight.is_floating_point() for m in layers)):
        yield
        return
    names = {id(m): name for name, m in model.named_modules()}
    kept = _KEPT.get(model)
    head = model.get_output_embeddings() if kept is not None else None
    if head is not None and (type(head) is not torch.nn.Linear or head.weight.device.type != "cpu"
                             or not head.weight.is_floating_point()):
        head = None
    saved, swapped, head_w = [], [], None
    try:
        with torch.no_grad():
            take = _buffer_views(kept, layers, dtype)
            for m in layers:
                w = m.base_layer.weight
                saved.append((m, w))
                if take is None:
                    merged = _merged_weight(m, w)
                    merged = merged if dtype is None else merged.to(dtype)
                elif dtype is None or dtype == w.dtype:
                    merged = _merged_weight(m, w, out=take(w))
                else:
                    merged = take(w).copy_(_merged_weight(m, w))
                m.base_layer.weight = torch.nn.Parameter(merged, requires_grad=False)
            if head is not None:
                head_w = head.weight
                head.weight = torch.nn.Parameter(_head_copy(kept, head_w), requires_grad=False)
        for m in layers:  # the plain Linear in the LoRA layer's place: what the disabled adapter computes, minus its call
            parent, _, attr = names[id(m)].rpartition(".")
            swapped.append((model.get_submodule(parent), attr, m))
            setattr(swapped[-1][0], attr, m.base_layer)
        yield
    finally:
        for parent, attr, m in swapped:
            setattr(parent, attr, m)
        for m, w in saved:
            m.base_layer.weight = w
        if head_w is not None:
            head.weight = head_w


def _buffer_views(kept: dict | None, layers: list, dtype: torch.dtype | None) -> Callable | None:
    """`take(w)`: the next view shaped like `w` in the kept buffer of `dtype` (the layers' own dtype
    for None), the buffer made or re-made to hold every layer's weight; None when nothing is kept or
    the layers' weights are not all CPU tensors of one dtype."""
    first = layers[0].base_layer.weight
    if kept is None or any(m.base_layer.weight.device.type != "cpu" or m.base_layer.weight.dtype != first.dtype
                           for m in layers):
        return None
    key = dtype or first.dtype
    numel = sum(m.base_layer.weight.numel() for m in layers)
    if (buf := kept.get(key)) is None or buf.numel() != numel:
        buf = kept[key] = huge_page_buffer(numel, key)
    offset = 0

    def take(w: torch.Tensor) -> torch.Tensor:
        nonlocal offset
        offset += w.numel()
        return buf[offset - w.numel():offset].view(w.shape)

    return take


def _head_copy(kept: dict, w: torch.Tensor) -> torch.Tensor:
    """The output head's weight copied into the kept huge-page buffer; copied again only when `w` is
    another tensor or was changed in place since (its version counter: an optimizer step on trainable
    embeddings), so a frozen head is copied once per run, not once per `generate` call."""
    buf, source = kept.get("head"), (id(w), w.data_ptr(), w._version)
    if buf is None or buf.numel() != w.numel() or buf.dtype != w.dtype:
        buf = kept["head"] = huge_page_buffer(w.numel(), w.dtype)
        kept["head_source"] = None
    if kept.get("head_source") != source:
        buf.copy_(w.reshape(-1))
        kept["head_source"] = source
    return buf.view(w.shape)


def _merged_weight(m, w: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """W + s * B @ A of a LoRA layer (into `out` when given): one `addmm` for a single float32/64
    adapter (it reads W and writes the result once; W + delta also writes and reads a delta the
    size of W), PEFT's `get_delta_weight` for anything else (fan-in-fan-out, half-precision
    adapters, several active adapters)."""
    names = [n for n in m.active_adapters if n in m.lora_A]
    if len(names) == 1 and not m.fan_in_fan_out and w.dtype in (torch.float32, torch.float64):
        a, b = m.lora_A[names[0]].weight, m.lora_B[names[0]].weight
        if a.dtype == b.dtype == w.dtype and a.device == w.device:
            return torch.addmm(w, b, a, alpha=m.scaling[names[0]], out=out)
    delta = sum(m.get_delta_weight(n) for n in names)
    return w + delta if out is None else torch.add(w, delta, out=out)


@torch.no_grad()
def prefill_once(model, prompts: list[GrpoPrompt], n: int, pad_id: int, device: str, room: int = 0):
    """The KV cache of each distinct prompt but its last token, computed once (one left-padded row
    per prompt, positions as `generate` numbers them) and repeated to `n` rows per prompt, for
    `generate` to continue from; None where the model's cache cannot be repeated. `room`: tokens
    the cache preallocates for (`_RoomyLayer`), so decoding does not re-copy it every token."""
    ids, attn = left_pad([p.prompt_ids[:-1] for p in prompts], pad_id)
    ids, attn = ids.to(device), attn.to(device)
    pos = (attn.cumsum(-1) - 1).masked_fill(attn == 0, 1)
    cache = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True, logits_to_keep=1).cache
    if not hasattr(cache, "batch_repeat_interleave"):
        return None
    cache.batch_repeat_interleave(n)
    from transformers.cache_utils import DynamicCache, DynamicLayer

    if room and type(cache) is DynamicCache and all(type(x) is DynamicLayer for x in cache.layers):
        roomy = roomy_layer_class()
        cache.layers = [roomy(x, room) for x in cache.layers]
    return cache


def decode_answers(tokenizer, comp: torch.Tensor, eos: set[int]) -> tuple[torch.Tensor, list[Completion]]:
    """The answer mask of sampled ids (N, C) and each answer's text (the end-of-turn token cut), whether
    it stopped within the budget and its token count (MLX's sampler shares it: mlx_grpo.py)."""
    mask = answer_mask(comp, eos)
    completions = []
    for row, m in zip(comp.tolist(), mask.tolist()):
        k = sum(m)
        stopped = k <= len(row) and k > 0 and row[k - 1] in eos
        kept = row[:k - 1] if stopped else row[:k]
        completions.append(Completion(tokenizer.decode(kept, skip_special_tokens=True).strip(), stopped, k))
    return mask, completions


def score(rollout: Rollout, rewards: RewardSet, group: int) -> None:
    """Fill the rollout's per-function rewards (NaN: not applicable) and its advantages."""
    by_name = rewards.score(rollout.sources, rollout.completions)
    cols = [[math.nan if v is None else float(v) for v in by_name[name]] for name in rewards.names]
    rollout.rewards_per_func = torch.tensor(cols, dtype=torch.float32).T.reshape(len(rollout.completions), -1)
    total = combine_rewards(rollout.rewards_per_func, torch.tensor(rewards.weights, dtype=torch.float32))
    rollout.advantages = group_advantages(total, group)


@torch.no_grad()
def reference_logps(model, r: Rollout, gargs: GrpoArgs) -> torch.Tensor:
    with _reference(model):
        return shared_prefix_logps(model, r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask,
                                   gargs.temperature)


# -- the step ------------------------------------------------------------------------------------

def grpo_step(model, tokenizer, args: TrainArgs, gargs: GrpoArgs, rewards: RewardSet, eos: set[int],
              stepper: OptimizerStep) -> Callable:
    """The engine's step function: sample and score every micro-batch of the step, then one
    forward/backward per micro-batch (each weighted as TRL's accumulation weights it), one optimizer step."""

    def step(index: int, micro_batches: list[list[GrpoPrompt]], on_batch: Callable) -> StepResult:
        rolls = []
        for k, mb in enumerate(micro_batches):
            on_batch([p.id for p in mb])
            r = generate(model, tokenizer, mb, gargs.group, gargs, eos, args.pad_id,
                         sample_seed(args.seed, index, k), args.device)
            score(r, rewards, gargs.group)
            if gargs.beta != 0.0:
                r.ref_logps = reference_logps(model, r, gargs)
            rolls.append(r)
        num_items = float(sum(r.completion_mask.sum() for r in rolls))
        n_seq = sum(len(r.completions) for r in rolls)
        loss_sum, agg = 0.0, {}
        for r in rolls:
            dev = r.completion_ids.device
            logps = shared_prefix_logps(model, r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask,
                                        gargs.temperature)
            loss, m = grpo_loss(logps, logps.detach(), r.ref_logps, r.advantages.to(dev), r.completion_mask,
                                gargs, num_items)
            # grpo / dr_grpo: TRL divides each micro-batch by the accumulation steps (its share of the
            # step's answers); dapo's num_items already spans the step
            share = 1.0 if gargs.loss_type == "dapo" else len(r.completions) / n_seq
            stepper.backward(loss * share)
            loss_sum += loss.item() * share
            for key, v in m.items():
                agg[key] = agg.get(key, 0.0) + v * len(r.completions) / n_seq
            del loss, logps  # their graph would pin glibc's heap under the next micro-batch (trainer.sft_step)
        lr = stepper.step()
        total = int(num_items) + sum(int(r.prompt_mask.sum()) for r in rolls)  # answer tokens are the supervised ones
        return StepResult(loss_sum, {**reward_metrics(rolls, rewards), **agg, "lr": lr}, int(num_items), total)

    return step


def reward_metrics(rolls: list[Rollout], rewards: RewardSet) -> dict[str, float]:
    """TRL's names: rewards/<name>/mean (over answers it applies to), reward, reward_std, lengths."""
    rpf = torch.cat([r.rewards_per_func for r in rolls])
    total = combine_rewards(rpf, torch.tensor(rewards.weights, dtype=torch.float32))
    comps = [c for r in rolls for c in r.completions]
    m: dict[str, float] = {}
    for j, name in enumerate(rewards.names):
        col = rpf[:, j]
        if (~torch.isnan(col)).any():
            m[f"rewards/{name}/mean"] = torch.nanmean(col).item()
    m["reward"] = torch.nanmean(total).item()
    m["reward_std"] = nanstd(total, dim=0).item() if total.numel() > 1 else 0.0
    m["completions/mean_length"] = sum(c.tokens for c in comps) / len(comps)
    m["completions/clipped_ratio"] = sum(not c.stopped for c in comps) / len(comps)
    return m


# -- held-out rewards and the loop ---------------------------------------------------------------

# the "step" of the held-out sampling seeds (`sample_seed(seed, EVAL_SEED_STEP, batch index)`): past any
# training step, so held-out answers never share a seed with a training step's
EVAL_SEED_STEP = 10 ** 9


def held_out_rewards(model, tokenizer, prompts: list[GrpoPrompt], gargs: GrpoArgs, rewards: RewardSet,
                     eos: set[int], pad_id: int, device: str = "cpu", batch: int = 8,
                     sample: Callable | None = None, texts: list[str] | None = None, samples: int = 0,
                     seed: int = 0) -> dict[str, list[float | None]]:
    """Each reward per held-out prompt (None: does not apply). `samples` 0: of the greedy answer;
    K > 0: the mean over K answers sampled at `gargs.temperature` (None where it applies to none of
    them), the batch of prompts i..i+b sampled from `sample_seed(seed, EVAL_SEED_STEP, i)`, so the
    same model, prompts and seed give the same answers and two models are compared on common seeds.
    `sample`: the generation function (default `generate`; MLX passes `mlx_grpo.generate_mlx`);
    `texts`: a list the answers' texts are appended to, in prompt order (K per prompt when sampled)."""
    sample = sample or generate
    n = max(1, samples)
    step = max(1, batch // n)  # prompts per generate call: about `batch` rows
    out: dict[str, list[float | None]] = {name: [] for name in rewards.names}
    for i in range(0, len(prompts), step):
        r = sample(model, tokenizer, prompts[i:i + step], n, gargs, eos, pad_id,
                   sample_seed(seed, EVAL_SEED_STEP, i) if samples else None, device)
        if texts is not None:
            texts.extend(c.text for c in r.completions)
        for name, vals in rewards.score(r.sources, r.completions).items():
            for j in range(0, len(vals), n):  # the prompt's n answers are consecutive rows
                got = [v for v in vals[j:j + n] if v is not None]
                out[name].append(sum(got) / len(got) if got else None)
    return out


def mean_rewards(values: dict[str, list[float | None]]) -> dict[str, float]:
    means = {}
    for name, vals in values.items():
        got = [v for v in vals if v is not None]
        if got:
            means[name] = sum(got) / len(got)
    return means


@dataclass
class GrpoOutput:
    steps: int
    train_loss: float
    last_loss: float
    before: dict[str, list[float | None]] = field(default_factory=dict)  # held-out rewards per prompt
    after: dict[str, list[float | None]] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    prompts_seen: int = 0
    supervised_tokens: int = 0  # sampled answer tokens trained on (the steps this process ran)
    total_tokens: int = 0
    wall_seconds: float = 0.0
    resumed_from: int = 0
    answers_before: list[str] = field(default_factory=list)  # the held-out greedy answers, prompt order
    answers_after: list[str] = field(default_factory=list)
    # `GrpoArgs.eval_samples` > 0: each reward's per-prompt mean over the K sampled held-out answers
    sampled_before: dict[str, list[float | None]] = field(default_factory=dict)
    sampled_after: dict[str, list[float | None]] = field(default_factory=dict)


def held_out_sampled(model, tokenizer, prompts: list[GrpoPrompt], gargs: GrpoArgs, rewards: RewardSet,
                     eos: set[int], args: TrainArgs, sample: Callable | None = None) -> dict[str, list[float | None]]:
    """`held_out_rewards` over `gargs.eval_samples` sampled answers per prompt ({} when 0), seeded
    from the run's seed, so before and after share their seeds."""
    if not gargs.eval_samples:
        return {}
    return held_out_rewards(model, tokenizer, prompts, gargs, rewards, eos, args.pad_id, args.device,
                            sample=sample, samples=gargs.eval_samples, seed=args.seed)


@contextmanager
def cpu_step_context(model, device: str):
    """What `train_grpo` runs its steps under: the merged sampling weights kept between steps
    (`sampling_copy_kept`, when `keeps_sampling_copy`) and, on CPU, numpy-drawn LoRA dropout masks
    (`lora_dropout_on_cpu`). bench/grpo_throughput.py's profile runs under it too."""
    with (sampling_copy_kept(model, keep=keeps_sampling_copy(model, device)),
          lora_dropout_on_cpu(model, device == "cpu")):
        yield


def keeps_sampling_copy(model, device: str) -> bool:
    """Keep the merged sampling weights between steps (`sampling_copy_kept`) on CPU when they take at
    most a quarter of the memory available now: they add their size to the training phase's peak
    (SmolLM2-135M: 0.54 GB; measured in bench/results/grpo_throughput*.md's peak RSS)."""
    import psutil

    return str(device).startswith("cpu") and sampling_copy_bytes(model) * 4 <= psutil.virtual_memory().available


def train_grpo(model, tokenizer, train_prompts: list[GrpoPrompt], eval_prompts: list[GrpoPrompt], args: TrainArgs,
               gargs: GrpoArgs, rewards: RewardSet, eos: set[int], *, callbacks: Iterable[TrainingCallback] = (),
               make_optimizer: Callable = default_optimizer, make_scheduler: Callable = default_scheduler) -> GrpoOutput:
    """Train `model` (a PEFT LoRA model) with GRPO over `train_prompts`: a seeded shuffle per epoch,
    `args.micro_batch_size` prompts per micro-batch, `args.grad_accum` micro-batches per step, on the
    step engine (checkpoints, `args.resume`). Held-out rewards (greedy) before and after. One process.
    On CPU the LoRA dropout masks are drawn by `lora_dropout.CpuLoraDropout` (as SFT's trainer does:
    same distribution, cheaper) and the merged sampling weights are kept between steps
    (`sampling_copy_kept`, when they take at most a quarter of the memory available): `cpu_step_context`."""
    from .distributed import env_world_size

    if not train_prompts:
        raise IceburgError("no GRPO prompts to train on")
    if args.world_size != 1 or env_world_size() > 1:
        raise IceburgError("--objective grpo trains in one process (its step samples and scores answers on one "
                           "rank); drop --nproc / torchrun")
    if gargs.beta != 0.0 and getattr(model, "disable_adapter", None) is None:
        raise IceburgError("--grpo-beta > 0 needs a PEFT LoRA model (the reference is the adapter disabled)")
    plan = make_plan(*plan_preference_steps(train_prompts, args), key=lambda p: p.id)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, args)
    sched = make_scheduler(opt, len(plan), args)
    answers_before: list[str] = []
    answers_after: list[str] = []
    with cpu_step_context(model, args.device):
        before = held_out_rewards(model, tokenizer, eval_prompts, gargs, rewards, eos, args.pad_id, args.device,
                                  texts=answers_before)
        sampled_before = held_out_sampled(model, tokenizer, eval_prompts, gargs, rewards, eos, args)
        history = _History()
        ckpt = None if args.checkpoint_dir is None else TorchCheckpointer(model, opt, sched, args.checkpoint_dir)
        model.train()
        run = run_plan(plan, grpo_step(model, tokenizer, args, gargs, rewards, eos,
                                       OptimizerStep(params, opt, sched, args.max_grad_norm)),
                       lambda step: None, cadence=Cadence(args.eval_steps, args.save_steps), checkpointer=ckpt,
                       resume=args.resume, callbacks=[history, *callbacks], show_progress=args.show_progress,
                       desc="training (grpo)")
        after = held_out_rewards(model, tokenizer, eval_prompts, gargs, rewards, eos, args.pad_id, args.device,
                                 texts=answers_after)
        sampled_after = held_out_sampled(model, tokenizer, eval_prompts, gargs, rewards, eos, args)
    return GrpoOutput(steps=run.steps, train_loss=run.train_loss, last_loss=run.last_loss, before=before,
                      after=after, history=history.lines,
                      prompts_seen=sum(len(mb) for st in plan.steps for mb in st),
                      supervised_tokens=run.supervised_tokens, total_tokens=run.total_tokens,
                      wall_seconds=run.wall_seconds, resumed_from=run.resumed_from,
                      answers_before=answers_before, answers_after=answers_after,
                      sampled_before=sampled_before, sampled_after=sampled_after)
