"""The step engine: the one training loop, over a deterministic step plan, for every objective.

`run_plan(plan, step_fn, eval_fn, ...)` owns what every training run shares: the step plan and
its fingerprint, resume (refusing a checkpoint written for another plan), the evaluation and save
cadence, the metrics line and the three-method callbacks, the divergence check, the progress bar
and the `TrainOutput`. An objective or backend supplies only

- `step_fn(index, micro_batches, on_batch) -> StepResult`: one optimizer step over the plan's
  micro-batches of step `index` (0-based), calling `on_batch(ids)` before each micro-batch it
  trains on (torch SFT: `training/trainer.py`; DPO/ORPO/KTO: `training/preference.py`; GRPO:
  `training/grpo.py`; MLX: `training/mlx_trainer.py`, MLX GRPO: `training/mlx_grpo.py`; the
  iceburg-tiny pre-training: `models/tiny.py`);
- `eval_fn(step) -> float | None`: the held-out loss (None: nothing to evaluate);
- a `Checkpointer` that saves and loads its model and optimizer state.

Torch step functions end with `OptimizerStep.step`, the package's one torch optimizer step.

The shape of mlx-lm's `tuner/trainer.py:train` and torchtune's recipes: one loop, the loss and
step plugged in (STYLE.md). The loop adds no device synchronisation of its own: it reads
only the Python floats the step function returns.

Why here and not in `training/`: the layer contract (pyproject.toml) puts `models` below
`training` (`base_models` resolves the name iceburg-tiny by building it, and `training` imports
`base_models`), so the iceburg-tiny pre-training can use the engine only from a layer below
`models`. The module needs nothing but `errors` and `progress` (torch only inside
`OptimizerStep`), so it sits just under `models`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol

from .errors import IceburgError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


class TrainingCallback(Protocol):
    def on_batch(self, example_ids: list[str]) -> None: ...
    def on_step(self, step: int, metrics: dict) -> None: ...
    def on_eval(self, step: int, eval_loss: float) -> None: ...


class Checkpointer(Protocol):
    """Saves and restores one backend's training state (weights, optimizer, schedule, RNG)."""

    path: Path

    def saved_plan(self) -> str | None:
        """The plan fingerprint stored with the checkpoint at `path` (None: no checkpoint, one
        written before fingerprints, or another backend's, which `load` refuses by name)."""
        ...

    def load(self) -> int:
        """Restore the state; the step it was saved after (0: no checkpoint)."""
        ...

    def save(self, step: int, plan_id: str) -> None: ...


@dataclass(frozen=True)
class StepPlan:
    """Optimizer steps -> micro-batches -> items (packed rows, pairs), the steps (1-based) that
    end an epoch, and the plan's fingerprint (`plan_fingerprint`)."""

    steps: list[list[list]]
    epoch_ends: frozenset[int]
    fingerprint: str

    def __len__(self) -> int:
        return len(self.steps)


@dataclass
class StepResult:
    """What one optimizer step reports. `loss` is the step's mean loss (a Python float: the step
    function has already synchronised to get it); `metrics` go into the metrics line after it
    (`lr`, rewards, ...); `supervised_tokens` is None when the objective does not count tokens."""

    loss: float
    metrics: dict[str, Any] = field(default_factory=dict)
    supervised_tokens: int | None = None
    total_tokens: int = 0


@dataclass
class TrainOutput:
    steps: int
    train_loss: float  # mean loss over the steps this process ran
    last_loss: float
    eval_history: list[tuple[int, float]] = field(default_factory=list)
    supervised_tokens: int = 0  # assistant tokens the optimizer saw (all epochs)
    total_tokens: int = 0  # tokens processed, padding included
    wall_seconds: float = 0.0
    resumed_from: int = 0


@dataclass(frozen=True)
class Cadence:
    """When to evaluate and save. `eval_steps` None: at the end of each epoch; `save_steps` None:
    at each evaluation. The last step is always evaluated and never saved (the run's own save
    follows it)."""

    eval_steps: int | None = None
    save_steps: int | None = None

    def _scheduled_eval(self, done: int, plan: StepPlan) -> bool:
        return done % self.eval_steps == 0 if self.eval_steps else done in plan.epoch_ends

    def evaluates(self, done: int, plan: StepPlan) -> bool:
        return self._scheduled_eval(done, plan) or done == len(plan)

    def saves(self, done: int, plan: StepPlan) -> bool:
        at = done % self.save_steps == 0 if self.save_steps else self._scheduled_eval(done, plan)
        return at and done < len(plan)


def row_ids(row) -> list[str]:
    return row.example_ids


def plan_fingerprint(steps: list[list[list]], key: Callable = row_ids) -> str:
    """A hash of the step plan's shape: which example ids sit in which row, micro-batch and step
    (`key` names an item: a packed Row by its example ids, a preference pair by its id). Stored
    with each checkpoint so a resume whose data, order, packing or batch settings changed is
    refused instead of silently training a different plan."""
    layout = [[[key(r) for r in mb] for mb in step] for step in steps]
    return hashlib.sha256(json.dumps(layout, separators=(",", ":")).encode()).hexdigest()[:16]


def make_plan(steps: list[list[list]], epoch_ends: Iterable[int], key: Callable = row_ids) -> StepPlan:
    if not steps:
        raise ValueError("nothing to train on: the step plan is empty")
    return StepPlan(steps, frozenset(epoch_ends), plan_fingerprint(steps, key))


def resume_step(plan: StepPlan, checkpointer: Checkpointer) -> int:
    """The step to continue after: the checkpoint's, once its plan is known to be this run's."""
    saved = checkpointer.saved_plan()
    if saved is not None and saved != plan.fingerprint:
        raise IceburgError(f"{checkpointer.path} was written for another step plan (plan {saved}, this run's is "
                           f"{plan.fingerprint}): the data, --curriculum, --seed, --max-seq-length, packing, batch "
                           "or objective settings changed since. Resume with the original settings, or start a new "
                           "run without --resume")
    start = checkpointer.load()
    if start > len(plan):
        raise IceburgError(f"{checkpointer.path} is at step {start} but this run plans {len(plan)} steps: "
                           "resume with the settings of the interrupted run (see its config.json)")
    return start


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


class _Fanout:
    """The callbacks as one: each call goes to every callback in order."""

    def __init__(self, callbacks: Iterable[TrainingCallback]):
        self.callbacks = list(callbacks)

    def on_batch(self, example_ids: list[str]) -> None:
        for cb in self.callbacks:
            cb.on_batch(example_ids)

    def on_step(self, step: int, metrics: dict) -> None:
        for cb in self.callbacks:
            cb.on_step(step, metrics)

    def on_eval(self, step: int, eval_loss: float) -> None:
        for cb in self.callbacks:
            cb.on_eval(step, eval_loss)


def _account(out: TrainOutput, done: int, res: StepResult, elapsed: float) -> dict[str, Any]:
    """Fold the step into `out` and build its metrics line (the keys metrics.jsonl has carried)."""
    if not math.isfinite(res.loss):
        raise FloatingPointError(f"training diverged at step {done}: loss is {res.loss}; lower --learning-rate "
                                 "(or raise --warmup-ratio)")
    out.last_loss = res.loss
    line = {"step": done, "loss": res.loss, **res.metrics}
    counted = res.supervised_tokens is not None
    if counted:
        out.supervised_tokens += res.supervised_tokens
        out.total_tokens += res.total_tokens
        line["supervised_tokens"] = out.supervised_tokens
    line["elapsed_s"] = round(elapsed, 2)
    if counted:
        line["supervised_tokens_per_s"] = round(out.supervised_tokens / max(elapsed, 1e-9), 1)
    line["peak_rss_mib"] = round(peak_rss_mib(), 1)
    return line


def _postfix(line: dict, out: TrainOutput) -> dict[str, str]:
    post = {"loss": f"{line['loss']:.3f}"}
    if "supervised_tokens_per_s" in line:
        post["sup_tok_s"] = f"{line['supervised_tokens_per_s']:.0f}"
    if out.eval_history:
        post["eval"] = f"{out.eval_history[-1][1]:.3f}"
    return post


def run_plan(plan: StepPlan, step_fn: Callable[[int, list, Callable], StepResult],
             eval_fn: Callable[[int], float | None], *, cadence: Cadence = Cadence(),
             checkpointer: Checkpointer | None = None, resume: bool = False,
             callbacks: Iterable[TrainingCallback] = (), show_progress: bool | None = None,
             desc: str = "training") -> TrainOutput:
    """Run `plan` from the start, or (`resume`) from `checkpointer`'s step after checking that it
    was written for this plan. After each step: the divergence check, the metrics line to
    `on_step`, an evaluation (`on_eval`) and a checkpoint when `cadence` says so."""
    from .progress import bar as progress_bar

    cbs = _Fanout(callbacks)
    start = resume_step(plan, checkpointer) if resume and checkpointer is not None else 0
    out = TrainOutput(steps=len(plan), train_loss=float("nan"), last_loss=float("nan"), resumed_from=start)
    started, loss_sum = time.time(), 0.0
    bar = progress_bar(total=len(plan), initial=start, desc=desc, unit="step", show=show_progress)
    try:
        for index in range(start, len(plan)):
            done = index + 1
            line = _account(out, done, step_fn(index, plan.steps[index], cbs.on_batch), time.time() - started)
            loss_sum += out.last_loss
            bar.update(1)
            bar.set_postfix(**_postfix(line, out))
            cbs.on_step(done, line)
            if cadence.evaluates(done, plan):
                ev = eval_fn(done)
                if ev is not None:
                    out.eval_history.append((done, ev))
                    cbs.on_eval(done, ev)
            if checkpointer is not None and cadence.saves(done, plan):
                checkpointer.save(done, plan.fingerprint)
    finally:
        bar.close()
    out.train_loss = loss_sum / max(len(plan) - start, 1)
    out.wall_seconds = time.time() - started
    return out


class OptimizerStep:
    """The one torch optimizer step (SFT, preference objectives, GRPO, the iceburg-tiny
    pre-training): unscale (fp16 on CUDA), clip the gradient norm, step the optimizer and the
    schedule, clear the gradients. torch is imported here, not at module level, so the engine
    itself stays importable without it (MLX)."""

    def __init__(self, params: list[torch.nn.Parameter], opt: torch.optim.Optimizer, sched, max_grad_norm: float,
                 fp16: bool = False):
        import torch

        self.params, self.opt, self.sched, self.max_grad_norm = params, opt, sched, max_grad_norm
        # disabled, the scaler passes the loss through and calls opt.step() as it is
        self.scaler = torch.amp.GradScaler(enabled=fp16)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self) -> float:
        """Apply the accumulated gradients; the learning rate the next step will use."""
        import torch

        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return self.sched.get_last_lr()[0]
