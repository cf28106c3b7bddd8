"""The lm head only at supervised (row, position) pairs (trainer._head_apart): the same loss and
gradients as `logits_to_keep` over the rows' union of positions, on iceburg-tiny and the real
architectures it is allowed for; other models keep the model's own forward."""

from __future__ import annotations

import pytest
import torch

from iceburg.training.encoding import Example
from iceburg.training.packing import collate, pack
from iceburg.training.trainer import TrainArgs, _forward_loss, _head_apart, weighted_token_loss


def _batch(vocab: int):
    g = torch.Generator().manual_seed(1)
    # rows supervise different positions: their union is wider than any row's own
    exs = [Example(torch.randint(0, vocab, (k,), generator=g).tolist(), [(j + i) % 3 != 0 for j in range(k)],
                   f"e{i}", 0.5 + 0.25 * i) for i, k in enumerate((40, 23, 57, 31, 12, 48, 9))]
    return collate(pack(exs, 64), 0)


def _loss_and_grads(model, batch, apart: bool):
    model._iceburg_head_apart = None if apart else False
    model.zero_grad()
    loss, n = _forward_loss(model, batch, TrainArgs(), weighted_token_loss)
    loss.backward()
    assert (_head_apart(model, TrainArgs()) is not None) == apart
    return float(loss.detach()), n, torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def _check(model, vocab):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=4, lora_dropout=0.0, target_modules="all-linear"))
    for m in model.modules():  # LoRA B starts at zero: give the adapters something to differentiate
        if hasattr(m, "lora_B"):
            torch.nn.init.normal_(m.lora_B["default"].weight, std=0.02)
    model.train()
    batch = _batch(vocab)
    l0, n0, g0 = _loss_and_grads(model, batch, False)
    l1, n1, g1 = _loss_and_grads(model, batch, True)
    assert n0 == n1 == int(batch["loss_mask"][:, 1:].sum())
    assert abs(l0 - l1) <= 1e-5 * abs(l0)
    assert float((g0 - g1).abs().max()) <= 1e-4 * float(g0.abs().max())


def test_tiny_model_same_loss_and_gradients(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    _check(model, model.config.vocab_size)


@pytest.mark.parametrize("name", ["llama3.2", "qwen2.5", "qwen3", "mistral-v0.3", "phi3.5"])
def test_family_architectures_same_loss_and_gradients(name):
    from transformers import AutoModelForCausalLM

    from iceburg.testing.families import family_model_dir

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(family_model_dir(name), dtype=torch.float32)
    _check(model, min(model.config.vocab_size, 30000))


@pytest.mark.parametrize("name", ["gemma2", "gemma3"])
def test_other_models_keep_their_forward(name):
    from transformers import AutoModelForCausalLM

    from iceburg.testing.families import family_model_dir

    model = AutoModelForCausalLM.from_pretrained(family_model_dir(name), dtype=torch.float32)
    assert _head_apart(model, TrainArgs()) is None  # gemma2: final logit soft-capping; gemma3: not listed


def test_only_single_process_cpu(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert _head_apart(model, TrainArgs()) is model
    assert _head_apart(model, TrainArgs(device="cuda")) is None
    assert _head_apart(model, TrainArgs(world_size=2)) is None
