"""DPO / ORPO / KTO on iceburg-tiny with the bundled pairs: held-out preference accuracy rises, the
reference (base with the adapter disabled) does not move, and every exporter takes the result."""

from __future__ import annotations

import random

import pytest
import torch

from iceburg.preference.data import unpair
from iceburg.preference.trainer import (PreferenceArgs, encode_continuation, encode_kto, encode_pairs,
                                        reference_logps, train_preference)
from iceburg.training.encoding import eos_ids
from iceburg.training.trainer import TrainArgs

from .conftest import lora_model

MAX_LEN = 192  # keeps the run to seconds; answers are truncated at the end like TRL's keep_start


@pytest.fixture(scope="module")
def split(tiny_tokenizer, sample_pairs):
    data, dropped = encode_pairs(tiny_tokenizer, sample_pairs, MAX_LEN, eos_ids(tiny_tokenizer))
    assert not dropped
    idx = list(range(len(data)))
    random.Random(0).shuffle(idx)
    n_eval = len(data) // 5
    return [data[i] for i in idx[n_eval:]], [data[i] for i in idx[:n_eval]]


def _args(**kw):
    base = dict(epochs=2, learning_rate=2e-3, micro_batch_size=8, grad_accum=1, max_length=MAX_LEN,
                warmup_ratio=0.0, seed=0, show_progress=False, pad_id=0)
    return TrainArgs(**{**base, **kw})


def test_only_the_answer_is_supervised(tiny_tokenizer, sample_pairs):
    p = sample_pairs[0]
    ex = encode_continuation(tiny_tokenizer, p.prompt, p.chosen, 4096, eos_ids(tiny_tokenizer), p.id)
    sup = [t for t, m in zip(ex.input_ids, ex.mask) if m]
    assert tiny_tokenizer.decode(sup) == p.chosen[0]["content"] + "<|im_end|>"
    # a multi-turn prompt: its earlier assistant turn is context, not supervised
    prompt = p.prompt + p.chosen + [{"role": "user", "content": "Say that again, shorter."}]
    ex2 = encode_continuation(tiny_tokenizer, prompt, p.rejected, 4096, eos_ids(tiny_tokenizer), p.id)
    assert tiny_tokenizer.decode([t for t, m in zip(ex2.input_ids, ex2.mask) if m]) == \
        p.rejected[0]["content"] + "<|im_end|>"


def test_dpo_raises_heldout_accuracy_and_keeps_the_reference(tiny_model_dir, split):
    train, held_out = split
    model = lora_model(tiny_model_dir)
    base_w = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight.detach().clone()
    args, pargs = _args(), PreferenceArgs("dpo", beta=0.1)
    out = train_preference(model, train, held_out, args, pargs)
    before, after = out.eval_before, out.eval_after
    # at step 0 the adapter is zero: policy == reference, every margin is 0 (no pair counts as won)
    assert before["rewards/margins"] == pytest.approx(0, abs=1e-5) and before["rewards/accuracies"] == 0
    assert after["rewards/accuracies"] >= 0.8 and after["rewards/margins"] > 0.05
    assert after["likelihood_accuracy"] >= before["likelihood_accuracy"]
    assert after["logps/rejected"] < before["logps/rejected"]
    assert out.history[-1]["loss"] < out.history[0]["loss"]
    for k in ("loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected", "lr"):
        assert k in out.history[0]
    # the reference is the base with the adapter off: recomputed after training, unchanged
    again = reference_logps(model, [d.chosen for d in held_out], args)
    assert again == pytest.approx([d.ref_chosen for d in held_out], abs=1e-4)
    assert torch.equal(model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight, base_w)
    print(f"DPO held-out: before {before}\n after {after}")


def test_orpo_needs_no_reference_and_separates_the_answers(tiny_model_dir, split):
    train, held_out = split
    out = train_preference(lora_model(tiny_model_dir), train, held_out, _args(), PreferenceArgs("orpo"))
    assert out.eval_after["log_odds_ratio"] > out.eval_before["log_odds_ratio"]
    assert out.eval_after["likelihood_accuracy"] >= 0.8 and out.eval_after["loss"] < out.eval_before["loss"]


def test_kto_from_unpaired_labels(tiny_model_dir, tiny_tokenizer, sample_pairs):
    items = unpair(sample_pairs)
    random.Random(1).shuffle(items)
    data, dropped = encode_kto(tiny_tokenizer, items, MAX_LEN, eos_ids(tiny_tokenizer))
    assert not dropped
    n_eval = len(data) // 5
    out = train_preference(lora_model(tiny_model_dir), data[n_eval:], data[:n_eval], _args(), PreferenceArgs("kto"))
    before, after = out.eval_before, out.eval_after
    assert after["rewards/chosen"] - after["rewards/rejected"] > before["rewards/chosen"] - before["rewards/rejected"]
    assert after["loss"] < before["loss"]
