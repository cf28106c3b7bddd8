"""CPU LoRA dropout (training/lora_dropout.py): the distribution of nn.Dropout, a fresh mask per call,
reproducible from torch's seed, and swapped in only around the trainer's own CPU training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from iceburg.training.lora_dropout import CpuLoraDropout, lora_dropout_on_cpu


def test_same_distribution_as_nn_dropout():
    d = CpuLoraDropout(0.05)
    x = torch.ones(1000, 1000)
    y = d(x)
    kept = y != 0
    # 1e6 Bernoulli(0.95) draws: the kept share's std is 2.2e-4, so +-0.002 is 9 sigma
    assert abs(float(kept.float().mean()) - 0.95) < 2e-3
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.95))
    # independent of position: rows and columns keep the same share
    assert float(kept.float().mean(dim=0).std()) < 0.03 and float(kept.float().mean(dim=1).std()) < 0.03


def test_fresh_mask_per_call_reproducible_from_torch_seed():
    d = CpuLoraDropout(0.3)
    x = torch.randn(64, 48)
    torch.manual_seed(7)
    a, b = d(x), d(x)
    assert not torch.equal(a != 0, b != 0)
    torch.manual_seed(7)
    assert torch.equal(d(x), a) and torch.equal(d(x), b)


def test_identity_in_eval_and_at_zero_and_gradient_is_the_mask():
    x = torch.randn(32, 16)
    d = CpuLoraDropout(0.5).eval()
    assert torch.equal(d(x), x)
    assert torch.equal(CpuLoraDropout(0.0)(x), x)
    d.train()
    xg = x.clone().requires_grad_()
    y = d(xg)
    y.sum().backward()
    assert torch.equal(xg.grad, (y != 0).float() * 2.0)


def test_swapped_only_inside_and_restored(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=2, lora_dropout=0.1, target_modules="all-linear"))
    before = [m for m in model.modules() if type(m) is nn.Dropout]
    assert before
    with lora_dropout_on_cpu(model) as n:
        assert n == len(before)
        assert not any(type(m) is nn.Dropout for m in model.modules())
        assert sum(isinstance(m, CpuLoraDropout) for m in model.modules()) == n
    after = [m for m in model.modules() if type(m) is nn.Dropout]
    assert after == before  # PEFT's own modules back in place
    with lora_dropout_on_cpu(model, enabled=False) as n:
        assert n == 0


@pytest.mark.parametrize("p", [0.05, 0.3])
def test_unbiased_like_nn_dropout(p):
    """A LoRA-shaped pair of layers, many masks: the mean output under CpuLoraDropout, as under
    nn.Dropout, converges on the no-dropout output (inverted dropout is unbiased)."""
    torch.manual_seed(0)
    lin_a, lin_b = nn.Linear(48, 4, bias=False), nn.Linear(4, 32, bias=False)
    x = torch.randn(16, 48)
    with torch.no_grad():
        exact = lin_b(lin_a(x))
        for d in (nn.Dropout(p), CpuLoraDropout(p)):
            mean = sum(lin_b(lin_a(d(x))) for _ in range(400)) / 400
            # unscaled masks would be off by p (30% at p=0.3)
            assert float((mean - exact).abs().max()) < 0.15 * float(exact.abs().max())


def test_resumed_run_drops_the_same_units(tmp_path, tiny_model_dir):
    """The checkpoint restores torch's RNG state, from which every CpuLoraDropout mask is seeded:
    an interrupted and resumed run ends with the uninterrupted run's adapter, bit for bit."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    from test_resume import StopAt

    from iceburg.training.encoding import Example
    from iceburg.training.trainer import TrainArgs, train

    def model():
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        return get_peft_model(base, LoraConfig(r=2, lora_dropout=0.3, target_modules="all-linear"))

    data = [Example(list(range(5, 5 + n)), [False] + [True] * (n - 1), f"e{i}")
            for i, n in enumerate([30, 20, 10, 25, 15, 5])]
    order = lambda e: list(range(6))  # noqa: E731

    def args(ck, resume=False):
        return TrainArgs(max_steps=4, save_steps=1, max_length=40, micro_batch_size=1, checkpoint_dir=ck,
                         show_progress=False, resume=resume)

    torch.manual_seed(1)
    whole = model()
    out = train(whole, data, order, [], args(tmp_path / "a"))
    torch.manual_seed(1)
    with pytest.raises(KeyboardInterrupt):
        train(model(), data, order, [], args(tmp_path / "b"), callbacks=[StopAt(2)])
    torch.manual_seed(99)  # a different stream: only the checkpoint's RNG state can give the same masks
    resumed = model()
    out2 = train(resumed, data, order, [], args(tmp_path / "b", resume=True))
    assert out2.resumed_from == 1 and out.steps == out2.steps == 4
    assert out2.last_loss == out.last_loss
    a, b = get_peft_model_state_dict(whole), get_peft_model_state_dict(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and the masks really mattered: without dropout the adapter ends elsewhere
    torch.manual_seed(0)  # the same initial adapter as model()
    nodrop = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                            LoraConfig(r=2, lora_dropout=0.0, target_modules="all-linear"))
    torch.manual_seed(1)
    train(nodrop, data, order, [], args(tmp_path / "c"))
    c = get_peft_model_state_dict(nodrop)
    assert not all(torch.equal(a[k], c[k]) for k in a)
