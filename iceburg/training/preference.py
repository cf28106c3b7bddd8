"""Preference training (DPO / ORPO / KTO) on a LoRA model: a step function (`preference_step`) on
the step engine SFT and MLX run on too (`engine.run_plan`: resume, cadence, metrics, checkpoints).

Lives in `training/` (it runs on the SFT encoding and `TrainArgs`); the data, mining and losses
it trains on are `iceburg/preference/`, a layer below.

Why our own loop and not TRL's `DPOTrainer`: (1) the same encoding as SFT - the chat template's
own rendering with assistant-only masks found by prefix rendering (`training/encoding.py`), where
TRL splits prompt and answer by tokenising the prompt alone and supervises whatever follows it
(ChatML's trailing newline included); (2) exact control of order, metrics and before/after
evaluation through the same `TrainArgs` and callbacks as SFT; (3) speed on CPU: the reference
log-probabilities are computed once before training with the adapter disabled (TRL's
`precompute_ref_log_probs`), so a step is one policy forward/backward over [chosen; rejected]
(bench/preference_throughput.py measures pairs/s and peak memory against TRL). The losses match
TRL's term for term (tests/preference/test_losses.py runs TRL's trainer on the same batch).

The DPO/KTO reference is the base model with the LoRA adapter disabled (`disable_adapter()`):
no second copy of the weights. Evaluation reports, on held-out pairs: the implicit reward margin
and reward accuracy (share of pairs with margin > 0, TRL's `rewards/accuracies`), the chosen and
rejected log-probabilities, and the likelihood accuracy (share of pairs whose chosen answer has
the higher mean per-token log-probability under the policy), which is defined before training too.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

import torch

from ..errors import IceburgError
from ..records import Record
from ..preference import losses
from ..preference.data import KTOExample, PreferencePair
from .encoding import Example, encode
from ..engine import Cadence, OptimizerStep, StepResult, TrainingCallback, make_plan, run_plan
from .trainer import TorchCheckpointer, TrainArgs, default_optimizer, default_scheduler

logger = logging.getLogger(__name__)


@dataclass
class PairExample:
    chosen: Example
    rejected: Example
    id: str
    ref_chosen: float = float("nan")  # reference (adapter disabled) summed log-probs
    ref_rejected: float = float("nan")


@dataclass
class KTOItem:
    completion: Example
    kl: Example | None  # the prompt with another answer of its batch (mismatched, for the z0 estimate)
    label: bool
    id: str
    ref: float = float("nan")
    ref_kl: float = float("nan")
    group: int = -1  # the micro-batch it trains in: its KL answer comes from the same batch (kl_batches)
    source: KTOExample | None = None


@dataclass
class PreferenceArgs:
    objective: str = "dpo"
    beta: float = losses.DEFAULT_BETA
    desirable_weight: float = 1.0  # KTO
    undesirable_weight: float = 1.0


@dataclass
class PreferenceOutput:
    steps: int
    train_loss: float
    last_loss: float
    eval_before: dict[str, float] = field(default_factory=dict)
    eval_after: dict[str, float] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    pairs_seen: int = 0  # over the whole plan, the steps before a resumed checkpoint included
    wall_seconds: float = 0.0
    resumed_from: int = 0


# -- encoding ------------------------------------------------------------------------------------

def encode_continuation(tokenizer, prompt: list[dict], continuation: list[dict], max_length: int,
                        eos: set[int], ex_id: str) -> Example | None:
    """prompt + continuation with the SFT encoding, supervising only the continuation's assistant
    turns; truncated at the end like TRL's "keep_start". None when no answer token fits."""
    ex = encode(tokenizer, Record(messages=prompt + continuation), 10 ** 9, eos)
    if ex is None:
        return None
    runs = [t for t in range(len(ex.mask)) if ex.mask[t] and (t == 0 or not ex.mask[t - 1])]
    n_turns = sum(m["role"] == "assistant" for m in prompt + continuation)
    if len(runs) != n_turns:
        raise IceburgError(f"the chat template merges assistant turns ({len(runs)} supervised runs for "
                           f"{n_turns} assistant turns), so the answer cannot be told from the prompt")
    start = runs[n_turns - len(continuation)]
    mask = [False] * start + ex.mask[start:]
    ids = ex.input_ids[:max_length]
    mask = mask[:max_length]
    if not any(mask):
        return None
    return Example(input_ids=ids, mask=mask, id=ex_id, truncated=len(ex.input_ids) > max_length)


def encode_pairs(tokenizer, pairs: Iterable[PreferencePair], max_length: int, eos: set[int]
                 ) -> tuple[list[PairExample], list[str]]:
    """Encoded pairs, and the ids of pairs dropped because the prompt leaves no room for an answer."""
    out, dropped = [], []
    for p in pairs:
        c = encode_continuation(tokenizer, p.prompt, p.chosen, max_length, eos, p.id)
        r = encode_continuation(tokenizer, p.prompt, p.rejected, max_length, eos, p.id)
        if c is None or r is None:
            dropped.append(p.id)
            continue
        out.append(PairExample(c, r, p.id))
    return out, dropped


def encode_kto(tokenizer, items: list[KTOExample], max_length: int, eos: set[int], batch_size: int | None = None,
               seed: int = 0) -> tuple[list[KTOItem], list[str]]:
    """Encoded KTO examples, and the ids of those dropped because the prompt leaves no room for an
    answer. With `batch_size`, also their KL sequences, in fixed micro-batches (`kl_batches`);
    without it `kl` is None (enough to plan memory, not to train)."""
    out, dropped = [], []
    for it in items:
        c = encode_continuation(tokenizer, it.prompt, it.completion, max_length, eos, it.id)
        if c is None:
            dropped.append(it.id)
            continue
        out.append(KTOItem(c, None, it.label, it.id, source=it))
    if batch_size is not None:
        out = kl_batches(tokenizer, out, batch_size, max_length, eos, seed)
    return out, dropped


def kl_batches(tokenizer, items: list[KTOItem], batch_size: int, max_length: int, eos: set[int],
               seed: int = 0) -> list[KTOItem]:
    """Fix the micro-batches KTO trains in and build each example's mismatched KL sequence, as TRL
    1.16.0 does (`KTOTrainer._prepare_dataset`): within each batch of `batch_size`, answers rotate by
    one, (x_1, y_n), (x_2, y_1), ..., (x_n, y_{n-1}), so the z0 estimate of a batch uses the same
    answers as its rewards, paired with other prompts (KTO paper, sec. 4). Unlike TRL, which keeps
    the data set's order, the items are shuffled once (seeded) before batching: unpaired pairs sit
    next to each other, and rotating within them would pair an answer with its own prompt. The
    training loop keeps these batches whole and shuffles only their order."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    shuffled = [items[i] for i in order]
    out: list[KTOItem] = []
    for g, start in enumerate(range(0, len(shuffled), batch_size)):
        chunk = shuffled[start:start + batch_size]
        for i, it in enumerate(chunk):
            other = chunk[i - 1]  # i = 0 takes the last answer; a batch of one pairs with itself, as TRL
            if it.source is None or other.source is None:
                raise IceburgError(f"KTO example {it.id} has no source messages to build its KL sequence from")
            kl = encode_continuation(tokenizer, it.source.prompt, other.source.completion, max_length, eos, it.id)
            if kl is None:  # cannot happen: the prompt left room for its own answer, so for any other one
                raise IceburgError(f"KTO example {it.id}: no room for the mismatched answer within {max_length} tokens")
            out.append(replace(it, kl=kl, group=g))
    return out


def micro_batches(data: list, size: int) -> list[list]:
    """The data's micro-batches in order: KTO's fixed groups (their KL answers come from inside
    the group), otherwise consecutive chunks of `size`."""
    if data and isinstance(data[0], KTOItem):
        if any(d.kl is None or d.group < 0 for d in data):
            raise IceburgError("KTO examples need their KL sequences: encode them with encode_kto(..., batch_size=N)")
        groups: dict[int, list] = {}
        for d in data:
            groups.setdefault(d.group, []).append(d)
        return list(groups.values())
    return [data[i:i + size] for i in range(0, len(data), size)]


# -- log-probabilities ---------------------------------------------------------------------------

def sequence_logps(model, examples: list[Example], pad_id: int, device: str = "cpu"
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each example's supervised tokens, and their count (one forward
    over the right-padded batch)."""
    n = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    attn = torch.zeros((len(examples), n), dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.bool)
    for i, e in enumerate(examples):
        k = len(e.input_ids)
        ids[i, :k] = torch.tensor(e.input_ids)
        attn[i, :k] = 1
        mask[i, :k] = torch.tensor(e.mask)
    ids, attn, mask = ids.to(device), attn.to(device), mask.to(device)
    logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits[:, :-1].float()
    return masked_logps(logits, ids[:, 1:], mask[:, 1:])


def masked_logps(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row sum of log p(target) over `mask`, and the mask count (logits already shifted)."""
    tok = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    m = mask.float()
    return (tok * m).sum(-1), m.sum(-1)


def _reference(model):
    """The reference model: the same weights with the LoRA adapter switched off."""
    disable = getattr(model, "disable_adapter", None)
    if disable is None:
        raise IceburgError("preference objectives with a reference (dpo, kto) need a PEFT LoRA model")
    return disable()


@torch.no_grad()
def reference_logps(model, examples: list[Example], args: TrainArgs) -> list[float]:
    was = model.training
    model.eval()
    out: list[float] = []
    with _reference(model):
        for i in range(0, len(examples), args.micro_batch_size):
            lp, _ = sequence_logps(model, examples[i:i + args.micro_batch_size], args.pad_id, args.device)
            out.extend(lp.tolist())
    model.train(was)
    return out


def precompute_reference(model, data: list[PairExample] | list[KTOItem], args: TrainArgs) -> None:
    if data and isinstance(data[0], PairExample):
        rc = reference_logps(model, [d.chosen for d in data], args)
        rr = reference_logps(model, [d.rejected for d in data], args)
        for d, a, b in zip(data, rc, rr):
            d.ref_chosen, d.ref_rejected = a, b
    elif data:
        r = reference_logps(model, [d.completion for d in data], args)
        k = reference_logps(model, [d.kl for d in data], args)
        for d, a, b in zip(data, r, k):
            d.ref, d.ref_kl = a, b


# -- one batch -----------------------------------------------------------------------------------

def batch_loss(model, batch: list, args: TrainArgs, pargs: PreferenceArgs) -> tuple[torch.Tensor, dict]:
    """Mean loss over the batch and its metrics (TRL's names: rewards/margins, logps/chosen, ...)."""
    if pargs.objective == "kto":
        return _kto_batch(model, batch, args, pargs)
    lp, n = sequence_logps(model, [b.chosen for b in batch] + [b.rejected for b in batch], args.pad_id, args.device)
    pc, pr = lp.chunk(2)
    nc, nr = n.chunk(2)
    m = {"logps/chosen": pc.mean().item(), "logps/rejected": pr.mean().item(),
         "likelihood_accuracy": (pc / nc > pr / nr).float().mean().item()}
    if pargs.objective == "dpo":
        rc = torch.tensor([b.ref_chosen for b in batch], device=pc.device)
        rr = torch.tensor([b.ref_rejected for b in batch], device=pc.device)
        loss, cr, rj = losses.dpo_loss(pc, pr, rc, rr, pargs.beta)
        m.update({"rewards/chosen": cr.mean().item(), "rewards/rejected": rj.mean().item(),
                  "rewards/margins": (cr - rj).mean().item(), "rewards/accuracies": (cr > rj).float().mean().item()})
    elif pargs.objective == "orpo":
        loss, log_odds = losses.orpo_loss(pc / nc, pr / nr, -pc / nc, pargs.beta)
        m.update({"nll_loss": (-pc / nc).mean().item(), "log_odds_ratio": log_odds.mean().item(),
                  "rewards/margins": (pargs.beta * (pc / nc - pr / nr)).mean().item()})
    else:
        raise ValueError(f"unknown preference objective {pargs.objective!r}")
    loss = loss.mean()
    m["loss"] = loss.item()
    return loss, m


def _kto_batch(model, batch: list[KTOItem], args: TrainArgs, pargs: PreferenceArgs) -> tuple[torch.Tensor, dict]:
    lp, _ = sequence_logps(model, [b.completion for b in batch] + [b.kl for b in batch], args.pad_id, args.device)
    pol, pol_kl = lp.chunk(2)
    dev = pol.device
    ref = torch.tensor([b.ref for b in batch], device=dev)
    ref_kl = torch.tensor([b.ref_kl for b in batch], device=dev)
    labels = torch.tensor([b.label for b in batch], device=dev)
    loss, z0 = losses.kto_loss(pol, ref, labels, pol_kl.detach(), ref_kl, pargs.beta,
                               pargs.desirable_weight, pargs.undesirable_weight)
    rewards = pargs.beta * (pol - ref).detach()
    m = {"kl": z0.item(), "loss": loss.mean().item(), "n_desirable": float(labels.sum()),
         "n_undesirable": float((~labels).sum())}
    if labels.any():
        m["rewards/chosen"] = rewards[labels].mean().item()
        m["logps/chosen"] = pol[labels].mean().item()
    if (~labels).any():
        m["rewards/rejected"] = rewards[~labels].mean().item()
        m["logps/rejected"] = pol[~labels].mean().item()
    return loss.mean(), m


def _fresh_reference(model, chunk: list, args: TrainArgs) -> list:
    """`chunk` with reference log-probs computed in the same batch shape as the policy's, so that
    before training (adapter still zero) every margin is exactly 0, not float noise."""
    pairs = isinstance(chunk[0], PairExample)
    seqs = [c.chosen for c in chunk] + [c.rejected for c in chunk] if pairs else \
        [c.completion for c in chunk] + [c.kl for c in chunk]
    with _reference(model):
        a, b = sequence_logps(model, seqs, args.pad_id, args.device)[0].chunk(2)
    if pairs:
        return [replace(c, ref_chosen=x, ref_rejected=y) for c, x, y in zip(chunk, a.tolist(), b.tolist())]
    return [replace(c, ref=x, ref_kl=y) for c, x, y in zip(chunk, a.tolist(), b.tolist())]


@torch.no_grad()
def evaluate_preferences(model, data: list, args: TrainArgs, pargs: PreferenceArgs) -> dict[str, float]:
    """Held-out metrics, averaged over examples (see the module docstring)."""
    if not data:
        return {}
    was = model.training
    model.eval()
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for chunk in micro_batches(data, args.micro_batch_size):
        if pargs.objective in ("dpo", "kto"):
            chunk = _fresh_reference(model, chunk, args)
        _, m = batch_loss(model, chunk, args, pargs)
        for k, v in m.items():
            n = _count(k, m, len(chunk))
            sums[k] = sums.get(k, 0.0) + v * n
            counts[k] = counts.get(k, 0.0) + n
    model.train(was)
    return {k: v / counts[k] for k, v in sums.items() if not k.startswith("n_") and counts[k]}


def _count(key: str, m: dict, n: int) -> float:
    """Examples a batch metric averages over: KTO's chosen / rejected metrics cover only the
    desirable / undesirable examples of the batch."""
    if key.endswith("/chosen") and "n_desirable" in m:
        return m["n_desirable"]
    if key.endswith("/rejected") and "n_undesirable" in m:
        return m["n_undesirable"]
    return float(n)


# -- the loop ------------------------------------------------------------------------------------

def plan_preference_steps(train_data: list, args: TrainArgs) -> tuple[list[list[list]], set[int]]:
    """The whole step plan (micro-batches per optimizer step) and the steps that end an epoch: a
    deterministic function of the data and `args` (seeded shuffle per epoch; KTO shuffles its fixed
    batches), so a resumed run rebuilds it exactly and continues at its checkpoint's step."""
    rng = random.Random(args.seed)
    steps: list[list[list]] = []
    epoch_ends: set[int] = set()
    epoch = 0
    while epoch < args.epochs or (args.max_steps is not None and len(steps) < args.max_steps):
        if isinstance(train_data[0], KTOItem):
            micro = micro_batches(train_data, args.micro_batch_size)
            rng.shuffle(micro)
        else:
            order = list(range(len(train_data)))
            rng.shuffle(order)
            micro = micro_batches([train_data[j] for j in order], args.micro_batch_size)
        steps.extend(micro[i:i + args.grad_accum] for i in range(0, len(micro), args.grad_accum))
        epoch_ends.add(len(steps))
        epoch += 1
    if args.max_steps is not None:
        steps = steps[: args.max_steps]
    return steps, epoch_ends


def train_preference(model, train_data: list, eval_data: list, args: TrainArgs, pargs: PreferenceArgs, *,
                     callbacks: Iterable[TrainingCallback] = (), make_optimizer: Callable = default_optimizer,
                     make_scheduler: Callable = default_scheduler) -> PreferenceOutput:
    """Train `model` (a PEFT LoRA model) on encoded pairs / KTO items. Reference log-probs are
    computed first (adapter disabled); order is a seeded shuffle per epoch. The optimizer and
    schedule are injected as in `trainer.train` (`make_optimizer(params, args)`,
    `make_scheduler(opt, total_steps, args)`; defaults AdamW and linear warm-up/decay).

    The loop is the step engine's (`engine.run_plan`), as SFT's: checkpoints (adapter, optimizer,
    scheduler, step, torch RNG state for LoRA dropout) every `save_steps` steps (default: at each
    evaluation, every `eval_steps` or at epoch ends), `args.resume` continues the same plan and
    refuses a checkpoint of another one. The reference log-probs and the before-training
    evaluation are recomputed from the adapter-free model before the checkpoint is loaded, so a
    resumed run reports the same figures as an uninterrupted one. One process only."""
    from .distributed import env_world_size

    if not train_data:
        raise IceburgError("no preference pairs to train on")
    if args.world_size != 1 or env_world_size() > 1:
        raise IceburgError(f"preference objectives ({pargs.objective}) train in one process (world size "
                           f"{max(args.world_size, env_world_size())} asked): their step does not shard pairs "
                           "over ranks yet; drop --nproc / torchrun, or use --objective sft")
    if pargs.objective in ("dpo", "kto"):
        precompute_reference(model, train_data + eval_data, args)  # eval recomputes its own, see below
    plan = make_plan(*plan_preference_steps(train_data, args), key=lambda item: item.id)  # pairs / KTO items by id
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, args)
    sched = make_scheduler(opt, len(plan), args)
    eval_before = evaluate_preferences(model, eval_data, args, pargs)
    held_out = _HeldOut(model, eval_data, args, pargs)
    history = _History()
    ckpt = None if args.checkpoint_dir is None else TorchCheckpointer(model, opt, sched, args.checkpoint_dir)
    model.train()
    run = run_plan(plan, preference_step(model, args, pargs, OptimizerStep(params, opt, sched, args.max_grad_norm)),
                   held_out, cadence=Cadence(args.eval_steps, args.save_steps), checkpointer=ckpt,
                   resume=args.resume, callbacks=[history, *callbacks], show_progress=args.show_progress,
                   desc=f"training ({pargs.objective})")
    return PreferenceOutput(steps=run.steps, train_loss=run.train_loss, last_loss=run.last_loss,
                            eval_before=eval_before, eval_after=held_out.last if held_out.last is not None
                            else evaluate_preferences(model, eval_data, args, pargs),
                            history=history.lines, pairs_seen=sum(len(mb) for st in plan.steps for mb in st),
                            wall_seconds=run.wall_seconds, resumed_from=run.resumed_from)


def preference_step(model, args: TrainArgs, pargs: PreferenceArgs, stepper: OptimizerStep) -> Callable:
    """The engine's step function for DPO / ORPO / KTO: each micro-batch's mean loss weighted by
    its share of the step's pairs, its metrics averaged the same way, then one optimizer step."""

    def step(index: int, micro_batches: list[list], on_batch: Callable) -> StepResult:
        n_step = sum(len(mb) for mb in micro_batches)
        agg: dict[str, float] = {}
        for mb in micro_batches:
            on_batch([b.id for b in mb])
            loss, m = batch_loss(model, mb, args, pargs)
            stepper.backward(loss * len(mb) / n_step)
            for k, v in m.items():
                agg[k] = agg.get(k, 0.0) + v * len(mb) / n_step
            del loss  # its graph would pin glibc's heap under the next micro-batch (trainer.sft_step)
        lr = stepper.step()
        return StepResult(agg.pop("loss"), {**agg, "lr": lr})

    return step


class _HeldOut:
    """The engine's evaluation: held-out preference metrics; the loss goes to the callbacks, the
    whole dict of the latest evaluation stays in `last` (the run's `eval_after`)."""

    def __init__(self, model, data: list, args: TrainArgs, pargs: PreferenceArgs):
        self.model, self.data, self.args, self.pargs = model, data, args, pargs
        self.last: dict[str, float] | None = None

    def __call__(self, step: int) -> float | None:
        if not self.data:
            return None
        self.last = evaluate_preferences(self.model, self.data, self.args, self.pargs)
        return self.last.get("loss", float("nan"))


class _History:
    """Keeps every step's metrics line (`PreferenceOutput.history`)."""

    def __init__(self):
        self.lines: list[dict] = []

    def on_batch(self, example_ids: list[str]) -> None:
        pass

    def on_step(self, step: int, metrics: dict) -> None:
        self.lines.append(metrics)

    def on_eval(self, step: int, eval_loss: float) -> None:
        pass
