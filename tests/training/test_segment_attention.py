"""Segment attention (training/segment_attention.py): per-example causal attention on packed rows
computes the same loss and gradients as sdpa's block-diagonal mask, on iceburg-tiny and on the
real architectures of the family fixtures; models it cannot serve keep sdpa."""

from __future__ import annotations

import pytest
import torch

from iceburg.training.encoding import Example
from iceburg.training.packing import collate, pack
from iceburg.training.segment_attention import SEGMENT_SDPA, segment_attention, segments, supports_segments
from iceburg.training.trainer import TrainArgs, _forward_loss, _use_segments, weighted_token_loss


def _rows(vocab: int, lengths=(40, 23, 57, 31, 12, 48, 9), max_length: int = 100):
    g = torch.Generator().manual_seed(0)
    exs = [Example(torch.randint(0, vocab, (k,), generator=g).tolist(), [j >= k // 3 for j in range(k)],
                   f"e{i}", 0.5 + 0.25 * i) for i, k in enumerate(lengths)]
    rows = pack(exs, max_length)
    assert any(len(r.example_ids) > 1 for r in rows)  # really packed
    return collate(rows, 0)


def _loss_and_grads(model, batch, segmented: bool):
    model.zero_grad()
    loss, n = _forward_loss(model, batch, TrainArgs(segment_attention=segmented), weighted_token_loss)
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return float(loss.detach()), n, grads


def _check_same_function(model, vocab):
    model.train()
    batch = _rows(vocab)
    spans = segments(batch["position_ids"])
    assert max(len(s) for s in spans) >= 3
    l0, n0, g0 = _loss_and_grads(model, batch, False)
    l1, n1, g1 = _loss_and_grads(model, batch, True)
    assert n0 == n1
    assert abs(l0 - l1) <= 1e-5 * abs(l0)
    assert float((g0 - g1).abs().max()) <= 1e-4 * float(g0.abs().max())
    return l0


def test_segments_follow_restarting_positions():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5, 0, 1, 2]])
    assert segments(pos) == [[(0, 3), (3, 5), (5, 9)], [(0, 6), (6, 9)]]


def test_tiny_model_same_loss_and_gradients(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    _check_same_function(model, model.config.vocab_size)
    assert model.config._attn_implementation == "sdpa"  # restored after each forward


def test_examples_do_not_see_each_other(tiny_model_dir):
    """The second example's loss is the same whatever the first example of its row holds."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    a = Example(list(range(5, 35)), [False] * 30, "a", 1.0)
    b = Example(list(range(40, 60)), [False] + [True] * 19, "b", 1.0)  # its first token has no context
    a2 = Example(list(range(100, 130)), [False] * 30, "a2", 1.0)
    args = TrainArgs(segment_attention=True)
    with torch.no_grad():
        l1, _ = _forward_loss(model, collate(pack([a, b], 64), 0), args, weighted_token_loss)
        l2, _ = _forward_loss(model, collate(pack([a2, b], 64), 0), args, weighted_token_loss)
        alone, _ = _forward_loss(model, collate(pack([b], 64), 0), args, weighted_token_loss)
    assert abs(float(l1) - float(alone)) < 1e-5 * float(alone)
    assert abs(float(l2) - float(alone)) < 1e-5 * float(alone)


@pytest.mark.parametrize("name", ["llama3.2", "qwen2.5", "qwen3", "mistral-v0.3", "phi3.5"])
def test_family_architectures_same_loss_and_gradients(name):
    from transformers import AutoModelForCausalLM

    from iceburg.testing.families import family_model_dir

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(family_model_dir(name), dtype=torch.float32)
    assert supports_segments(model, 100) is None
    _check_same_function(model, min(model.config.vocab_size, 30000))


@pytest.mark.parametrize("name, why", [("gemma2", "soft-capping"), ("gemma3", "sliding window")])
def test_models_it_cannot_serve_keep_sdpa(name, why):
    from transformers import AutoModelForCausalLM

    from iceburg.testing.families import family_model_dir

    model = AutoModelForCausalLM.from_pretrained(family_model_dir(name), dtype=torch.float32)
    assert why in supports_segments(model, 512)
    assert _use_segments(model, TrainArgs(device="cpu", max_length=512)) is False


def test_on_by_default_on_cpu_only(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert _use_segments(model, TrainArgs(device="cpu")) is True
    other = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert _use_segments(other, TrainArgs(device="mps")) is False
    third = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert _use_segments(third, TrainArgs(device="cpu", varlen=True)) is False


def test_refuses_generation_with_a_cache(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    ids = torch.tensor([[5, 6, 7, 8]])
    with segment_attention(model), pytest.raises(RuntimeError, match=SEGMENT_SDPA):
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False)
    assert model.config._attn_implementation != SEGMENT_SDPA


def test_work_share_measures_packing():
    from iceburg.training.segment_attention import segment_work_share

    short = torch.tensor([list(range(16)) * 4])  # four examples of 16 in a row of 64: share 0.25
    long_ = torch.tensor([list(range(60)) + list(range(4))])  # one example of 60 + one of 4
    assert segment_work_share(short) == 0.25
    assert segment_work_share(long_) == (60 ** 2 + 4 ** 2) / 64 ** 2
