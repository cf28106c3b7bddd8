"""The step plan: order kept, epochs of different lengths, max_steps beyond the epochs."""

from __future__ import annotations

import pytest
import torch

from iceburg.training.encoding import Example
from iceburg.training.trainer import TrainArgs, plan_steps


def exs(n):
    return [Example(input_ids=[1] * 10, mask=[False] + [True] * 9, id=f"e{i}") for i in range(n)]


def ids(steps):
    return [[eid for mb in step for r in mb for eid in r.example_ids] for step in steps]


def test_epochs_of_different_length_end_where_they_end():
    grow = {0: [0, 1], 1: [0, 1, 2, 3], 2: [0, 1, 2, 3, 4, 5]}  # a progressive-style pool
    args = TrainArgs(epochs=3, micro_batch_size=1, grad_accum=1, max_length=10)
    steps, ends = plan_steps(exs(6), lambda e: grow[e], args)
    assert ids(steps) == [["e0"], ["e1"], ["e0"], ["e1"], ["e2"], ["e3"]] + [[f"e{i}"] for i in range(6)]
    assert ends == {2, 6, 12}


def test_packing_accumulation_and_max_steps_beyond_epochs():
    args = TrainArgs(epochs=1, micro_batch_size=2, grad_accum=2, max_length=20, max_steps=3)
    steps, ends = plan_steps(exs(6), lambda e: list(range(6)) if e % 2 == 0 else list(range(5, -1, -1)), args)
    # 6 examples of 10 tokens -> 3 packed rows of 2 -> micro-batches [2 rows, 1 row] -> 1 step per epoch
    assert len(steps) == 3 and ends == {1, 2, 3}
    assert ids(steps)[0] == ["e0", "e1", "e2", "e3", "e4", "e5"]
    assert ids(steps)[1] == ["e5", "e4", "e3", "e2", "e1", "e0"]


def test_resume_refuses_a_checkpoint_of_another_step_plan(tmp_path, tiny_model_dir):
    import pytest
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from iceburg.errors import IceburgError
    from iceburg.training.trainer import train

    class Stop:
        def on_batch(self, ids): pass
        def on_eval(self, step, loss): pass

        def on_step(self, step, metrics):
            if step == 2:
                raise KeyboardInterrupt

    def model():
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        return get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"]))

    # rows of 40: greedy in order [30] [20,10] [25] [15,5]; best-fit [30,10] [20,5] [25,15]
    data = [Example(list(range(5, 5 + n)), [False] + [True] * (n - 1), f"e{i}")
            for i, n in enumerate([30, 20, 10, 25, 15, 5])]
    args = TrainArgs(max_steps=3, save_steps=1, max_length=40, best_fit=True, checkpoint_dir=tmp_path / "ck",
                     show_progress=False)
    order = lambda e: list(range(6))  # noqa: E731
    with pytest.raises(KeyboardInterrupt):
        train(model(), data, order, [], args, callbacks=[Stop()])
    with pytest.raises(IceburgError, match="another step plan"):
        train(model(), data, order, [], TrainArgs(**{**args.__dict__, "resume": True, "best_fit": False}))
    out = train(model(), data, order, [], TrainArgs(**{**args.__dict__, "resume": True}))
    assert out.resumed_from == 1 and out.steps == 3  # the stop came before step 2 was saved


@pytest.mark.parametrize("total", [1, 6, 12, 19, 20, 40, 101])
def test_warmup_rounds_down_and_never_wastes_a_short_run(total):
    """A warm-up shorter than one whole step is none (the first step trains at the peak rate);
    longer runs ramp up from 0 over floor(ratio x steps) steps; the MLX trainer's schedule is the same."""
    from iceburg.training.mlx_trainer import _lr
    from iceburg.training.trainer import default_scheduler, warmup_steps

    args = TrainArgs(learning_rate=1e-3, warmup_ratio=0.05)
    warm = warmup_steps(total, args)
    assert warm == int(0.05 * total + 1e-9)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=args.learning_rate)
    sched = default_scheduler(opt, total, args)
    lrs = []
    for _ in range(total):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    if warm == 0:
        assert lrs[0] == pytest.approx(1e-3)  # the 12-step run of the docs: no step at rate 0
    else:
        assert lrs[0] == 0.0 and lrs[warm] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[warm:], lrs[warm + 1:]))  # then linear decay
    assert lrs == pytest.approx([_lr(i, total, args) for i in range(total)])
