"""The step engine (iceburg/engine.py): cadence, resume refusing a changed plan, the
divergence error and the metrics lines, on a pure-Python model and on iceburg-tiny (torch SFT,
DPO, MLX); and the package keeps one torch optimizer step."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest
import torch

from iceburg.errors import IceburgError
from iceburg.engine import Cadence, StepResult, make_plan, run_plan
from iceburg.training.result import MetricsLog

ROOT = Path(__file__).resolve().parents[2]


class Mean:
    """A real model small enough to reason about: one weight w, loss = mean (w - x)^2 over a
    step's numbers, plain gradient descent. Its checkpoint is a JSON file (w, step, plan)."""

    def __init__(self, path: Path, lr: float = 0.1):
        self.w, self.lr, self.path = 0.0, lr, path

    def step(self, index: int, micro_batches: list[list[float]], on_batch) -> StepResult:
        xs = [x for mb in micro_batches for x in mb]
        for mb in micro_batches:
            on_batch([str(x) for x in mb])
        loss = sum((self.w - x) * (self.w - x) for x in xs) / len(xs)  # inf, not OverflowError, past 1e308
        self.w -= self.lr * 2 * sum(self.w - x for x in xs) / len(xs)
        return StepResult(loss, {"lr": self.lr}, supervised_tokens=len(xs), total_tokens=2 * len(xs))

    def evaluate(self, step: int) -> float:
        return (self.w - 5.0) ** 2

    # the Checkpointer protocol
    def saved_plan(self):
        return json.loads(self.path.read_text())["plan"] if self.path.exists() else None

    def load(self) -> int:
        if not self.path.exists():
            return 0
        state = json.loads(self.path.read_text())
        self.w = state["w"]
        return state["step"]

    def save(self, step: int, plan_id: str) -> None:
        self.path.write_text(json.dumps({"w": self.w, "step": step, "plan": plan_id}))


class Recorder:
    def __init__(self, stop: int = -1):
        self.stop, self.batches, self.lines, self.evals = stop, [], {}, []

    def on_batch(self, ids):
        self.batches.append(ids)

    def on_step(self, step, metrics):
        self.lines[step] = metrics
        if step == self.stop:
            raise KeyboardInterrupt

    def on_eval(self, step, loss):
        self.evals.append(step)


def numbers_plan(order=None):
    """7 steps of one micro-batch of two numbers; epochs of 3, 3 and 1 steps."""
    xs = [float(i) for i in range(14)]
    if order is not None:
        xs = [xs[i] for i in order]
    steps = [[xs[i:i + 2]] for i in range(0, 14, 2)]
    return make_plan(steps, {3, 6, 7}, key=str)


def run(model: Mean, plan, rec: Recorder, resume=False, **cadence):
    return run_plan(plan, model.step, model.evaluate, cadence=Cadence(**cadence), checkpointer=model,
                    resume=resume, callbacks=[rec], show_progress=False)


class SaveLog(Mean):
    def save(self, step, plan_id):
        self.saved = [*getattr(self, "saved", []), step]
        super().save(step, plan_id)


@pytest.mark.parametrize("cadence, evals, saves", [
    ({}, [3, 6, 7], [3, 6]),  # defaults: each epoch end; the last step is evaluated, never saved
    ({"eval_steps": 2}, [2, 4, 6, 7], [2, 4, 6]),
    ({"eval_steps": 2, "save_steps": 3}, [2, 4, 6, 7], [3, 6]),
])
def test_eval_and_save_cadence(tmp_path, cadence, evals, saves):
    model, rec = SaveLog(tmp_path / "ck.json"), Recorder()
    out = run(model, numbers_plan(), rec, **cadence)
    assert rec.evals == evals and [s for s, _ in out.eval_history] == evals
    assert model.saved == saves
    assert out.steps == 7 and len(rec.batches) == 7


def test_metrics_lines_and_output(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    model, rec = Mean(tmp_path / "ck.json"), Recorder()
    out = run_plan(numbers_plan(), model.step, model.evaluate, callbacks=[rec, log], show_progress=False)
    log.close()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [x for x in lines if x["type"] == "train"]
    assert [x["step"] for x in train] == list(range(1, 8))
    # the keys metrics.jsonl has always carried for SFT (tensorboard.py and run_report.py read them)
    assert list(train[0]) == ["type", "step", "loss", "lr", "supervised_tokens", "elapsed_s",
                              "supervised_tokens_per_s", "peak_rss_mib"]
    assert [x["supervised_tokens"] for x in train] == [2 * s for s in range(1, 8)]  # running total
    assert [(x["step"], x["eval_loss"]) for x in lines if x["type"] == "eval"] == out.eval_history
    assert out.supervised_tokens == 14 and out.total_tokens == 28
    assert out.train_loss == pytest.approx(sum(m["loss"] for m in rec.lines.values()) / 7)
    assert out.last_loss == rec.lines[7]["loss"]


def test_steps_that_count_no_tokens_write_no_token_fields(tmp_path):
    def step(index, micro_batches, on_batch):
        return StepResult(0.5, {"rewards/margins": 0.1, "lr": 1e-3})

    rec = Recorder()
    out = run_plan(numbers_plan(), step, lambda s: None, callbacks=[rec], show_progress=False)
    assert list(rec.lines[1]) == ["step", "loss", "rewards/margins", "lr", "elapsed_s", "peak_rss_mib"]
    assert out.eval_history == [] and rec.evals == []  # nothing to evaluate: no eval line, no history
    assert out.supervised_tokens == 0


def test_interrupted_run_resumes_the_same_plan(tmp_path):
    whole, rec = Mean(tmp_path / "a.json"), Recorder()
    ref = run(whole, numbers_plan(), rec, save_steps=2)
    first = Recorder(stop=5)  # interrupted inside step 5's callbacks: the last checkpoint is step 4
    with pytest.raises(KeyboardInterrupt):
        run(Mean(tmp_path / "b.json"), numbers_plan(), first, save_steps=2)
    assert json.loads((tmp_path / "b.json").read_text())["step"] == 4
    rest = Recorder()
    out = run(Mean(tmp_path / "b.json"), numbers_plan(), rest, resume=True, save_steps=2)
    assert out.resumed_from == 4 and sorted(rest.lines) == [5, 6, 7]
    assert first.batches[:4] + rest.batches == rec.batches
    for s in (5, 6, 7):  # w came back from the checkpoint: the same losses, not a fresh start's
        assert rest.lines[s]["loss"] == rec.lines[s]["loss"]
    assert out.eval_history[-1] == ref.eval_history[-1]


def test_resume_refuses_a_changed_plan_before_loading_anything(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run(Mean(tmp_path / "ck.json"), numbers_plan(), Recorder(stop=3), save_steps=2)
    saved = (tmp_path / "ck.json").read_text()
    other = Mean(tmp_path / "ck.json")
    with pytest.raises(IceburgError, match="another step plan.*without --resume"):
        run(other, numbers_plan(order=list(range(13, -1, -1))), Recorder(), resume=True)
    assert other.w == 0.0 and (tmp_path / "ck.json").read_text() == saved  # nothing loaded, nothing written


def test_checkpoint_beyond_the_plan_is_refused(tmp_path):
    ck = Mean(tmp_path / "ck.json")
    ck.save(9, numbers_plan().fingerprint)
    with pytest.raises(IceburgError, match="at step 9 but this run plans 7 steps"):
        run(Mean(tmp_path / "ck.json"), numbers_plan(), Recorder(), resume=True)


def test_divergence_names_the_step_and_the_fix(tmp_path):
    model = SaveLog(tmp_path / "ck.json")
    losses = []

    class Keep(Recorder):
        def on_step(self, step, metrics):
            losses.append(metrics["loss"])

    steps = [[[1e200, -1e200]]] * 3  # (w - x)^2 of 1e200 overflows to inf at once
    with pytest.raises(FloatingPointError, match=r"diverged at step 1: loss is inf; lower --learning-rate"):
        run_plan(make_plan(steps, {3}, key=str), model.step, model.evaluate, cadence=Cadence(save_steps=1),
                 checkpointer=model, callbacks=[Keep()], show_progress=False)
    assert losses == [] and not hasattr(model, "saved")  # no metrics line, no checkpoint of a diverged step


def test_empty_plan_is_refused():
    with pytest.raises(ValueError, match="step plan is empty"):
        make_plan([], set())


# -- the three backends through the engine, on iceburg-tiny ------------------------------------------

def _lora(tiny_model_dir, seed=0):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return get_peft_model(base, LoraConfig(r=2, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))


def _examples():
    from iceburg.training.encoding import Example

    # rows of 40 (no packing): 6 steps, one example each
    return [Example(list(range(5, 5 + n)), [False] + [True] * (n - 1), f"e{i}")
            for i, n in enumerate([30, 20, 10, 25, 15, 5])]


def test_torch_sft_runs_on_the_engine(tmp_path, tiny_model_dir):
    from iceburg.training.trainer import TrainArgs, train, weighted_token_loss

    data = _examples()
    args = TrainArgs(epochs=2, max_length=40, packing=False, eval_steps=None, show_progress=False,
                     checkpoint_dir=tmp_path / "ck", save_steps=4, learning_rate=1e-3)
    rec = Recorder()
    out = train(_lora(tiny_model_dir), data, lambda e: list(range(6)), data[:2], args, callbacks=[rec])
    assert out.steps == 12 and [s for s, _ in out.eval_history] == rec.evals == [6, 12]  # epoch ends
    assert list(rec.lines[1]) == ["step", "loss", "lr", "supervised_tokens", "elapsed_s",
                                  "supervised_tokens_per_s", "peak_rss_mib"]
    assert out.supervised_tokens == 2 * sum(sum(e.mask) for e in data)
    state = json.loads((tmp_path / "ck" / "state.json").read_text())
    assert state["step"] == 8 and len(state["plan"]) == 16  # saved at 4 and 8, never at the last step
    # divergence, through an injected loss that turns infinite at its third call (step 3)
    calls = []

    def exploding(logits, targets, mask, weights):
        calls.append(1)
        loss = weighted_token_loss(logits, targets, mask, weights)
        return loss * float("inf") if len(calls) == 3 else loss

    rec = Recorder()
    with pytest.raises(FloatingPointError, match=r"diverged at step 3: loss is inf; lower --learning-rate"):
        train(_lora(tiny_model_dir), data, lambda e: list(range(6)), [],
              TrainArgs(max_length=40, packing=False, show_progress=False), loss_fn=exploding, callbacks=[rec])
    assert sorted(rec.lines) == [1, 2]  # step 3 wrote no metrics line


def test_preference_takes_an_injected_optimizer_and_refuses_several_processes(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    from iceburg.data import SAMPLE_DIR
    from iceburg.preference.data import read_preferences
    from iceburg.training.encoding import eos_ids
    from iceburg.training.preference import PreferenceArgs, encode_pairs, train_preference
    from iceburg.training.trainer import TrainArgs

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = list(read_preferences(sorted((SAMPLE_DIR / "preference").glob("*.jsonl"))))[:16]
    data, _ = encode_pairs(tok, pairs, 96, eos_ids(tok))
    assert len(data) >= 8  # 6 to train on, 2 held out
    data = data[:8]
    made = []

    class CountingSGD(torch.optim.SGD):
        steps = 0

        def step(self, closure=None):
            self.steps += 1
            return super().step(closure)

    def sgd(params, args):
        made.append(CountingSGD(params, lr=args.learning_rate))
        return made[-1]

    args = TrainArgs(epochs=2, micro_batch_size=2, max_length=96, seed=0, show_progress=False, learning_rate=1e-2,
                     warmup_ratio=0.0)
    rec = Recorder()
    model = _lora(tiny_model_dir)
    out = train_preference(model, data[:6], data[6:], args, PreferenceArgs("orpo"), callbacks=[rec], make_optimizer=sgd)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(made) == 1 and made[0].steps == 6 and made[0].param_groups[0]["params"] == trainable
    assert out.steps == 6 and rec.evals == [3, 6]  # the engine's cadence: each epoch end, as SFT
    assert [m["step"] for m in out.history] == list(range(1, 7)) and out.eval_after
    assert rec.lines[1]["lr"] == pytest.approx(1e-2 * 5 / 6)  # the default schedule over 6 steps, no warm-up
    with pytest.raises(IceburgError, match="one process.*--nproc"):
        train_preference(model, data[:6], data[6:], TrainArgs(world_size=2), PreferenceArgs("orpo"))


def test_mlx_resume_refuses_a_changed_plan(tmp_path, tiny_model_dir):
    """MLX checkpoints carry the step plan's fingerprint (in the adapter's safetensors header; the
    state.json tests pin stays as it was), and a resume with another plan is refused as on torch."""
    from iceburg.training.mlx_backend import preload_openblas

    preload_openblas()
    pytest.importorskip("mlx_lm")
    from iceburg.training.mlx_backend import apply_lora_mlx, load_mlx_model
    from iceburg.training.mlx_trainer import saved_mlx_plan, train_mlx
    from iceburg.training.trainer import TrainArgs

    def model(work):
        return apply_lora_mlx(load_mlx_model(tiny_model_dir, tmp_path / work), 2, 4, ["q_proj", "v_proj"], 0.0)

    data = _examples()
    args = TrainArgs(max_steps=4, save_steps=1, max_length=40, packing=False, show_progress=False,
                     checkpoint_dir=tmp_path / "ck", learning_rate=1e-3)
    in_order = lambda e: list(range(6))  # noqa: E731
    with pytest.raises(KeyboardInterrupt):
        train_mlx(model("a"), data, in_order, [], args, callbacks=[Recorder(stop=3)])
    assert json.loads((tmp_path / "ck" / "state.json").read_text()) == {"step": 2, "format": "mlx"}
    assert len(saved_mlx_plan(tmp_path / "ck")) == 16
    resumed = TrainArgs(**{**args.__dict__, "resume": True})
    with pytest.raises(IceburgError, match="another step plan"):
        train_mlx(model("b"), data, lambda e: list(range(5, -1, -1)), [], resumed)
    out = train_mlx(model("c"), data, in_order, [], resumed)
    assert out.resumed_from == 2 and out.steps == 4 and math.isfinite(out.last_loss)


# -- one torch optimizer step in the package -----------------------------------------------------------

def test_one_torch_optimizer_step_in_the_package():
    """Every gradient clip, optimizer step and gradient reset of the package sits in
    `engine.OptimizerStep.step` (SFT, preference objectives, GRPO and the iceburg-tiny pre-training
    share it through the engine; tests/test_architecture.py checks that one loop drives it)."""
    found = set()
    for path in sorted((ROOT / "iceburg").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and _optimizer_call(node.func)):
                    found.add(f"{path.relative_to(ROOT)}:{fn.name}")
    assert found == {"iceburg/engine.py:step"}, found


def _optimizer_call(func: ast.Attribute) -> bool:
    """A call every torch optimizer-step loop makes: clearing or clipping gradients, or stepping an
    optimizer or a grad scaler (`opt.step()`, `self.scaler.step(...)`; not a scheduler or a bar)."""
    if func.attr in ("zero_grad", "clip_grad_norm_"):
        return True
    return func.attr == "step" and any(w in ast.unparse(func.value).lower() for w in ("opt", "scaler"))
