"""DPO / ORPO / KTO on iceburg-tiny with the bundled pairs: held-out preference accuracy rises, the
reference (base with the adapter disabled) does not move, and every exporter takes the result.

Sizes: 128-token sequences, batches of 8 pairs, lr 2e-3 (the tiny model's SFT rate in the e2e
test). Measured on a loaded 2-core machine (load 8), one thread: DPO 2 epochs 36 s, held-out reward
accuracy 0 -> 0.79, margin 0 -> 0.20; ORPO 1 epoch; KTO 15 steps (held-out reward gap 0.13)."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from iceburg.preference.data import unpair
from iceburg.training.preference import (PreferenceArgs, encode_continuation, encode_kto, encode_pairs,
                                        reference_logps, train_preference)
from iceburg.training.encoding import eos_ids
from iceburg.training.trainer import TrainArgs

MAX_LEN = 128  # answers are cut at the end like TRL's keep_start; enough to tell refusals and loops apart


@pytest.fixture(scope="module")
def split(tiny_tokenizer, sample_pairs):
    data, dropped = encode_pairs(tiny_tokenizer, sample_pairs, MAX_LEN, eos_ids(tiny_tokenizer))
    # the synthesist's long briefs fill 128 tokens before the answer starts: dropped, and counted
    assert len(data) + len(dropped) == len(sample_pairs) and len(data) >= 60
    idx = list(range(len(data)))
    random.Random(0).shuffle(idx)
    n_eval = len(data) // 5
    return [data[i] for i in idx[n_eval:]], [data[i] for i in idx[:n_eval]]


def _args(**kw):
    base = dict(epochs=1, learning_rate=2e-3, micro_batch_size=8, grad_accum=1, max_length=MAX_LEN,
                warmup_ratio=0.0, seed=0, show_progress=False, pad_id=0)
    return TrainArgs(**{**base, **kw})


def _q_proj(model):
    return model.base_model.model.model.layers[0].self_attn.q_proj


@pytest.fixture(scope="module")
def dpo_run(make_lora, split):
    train, held_out = split
    model = make_lora()
    base_w = _q_proj(model).base_layer.weight.detach().clone()
    args = _args(epochs=2)
    out = train_preference(model, train, held_out, args, PreferenceArgs("dpo", beta=0.1))
    return model, out, args, base_w


def test_only_the_answer_is_supervised(tiny_tokenizer, sample_pairs):
    p = sample_pairs[0]
    eos = eos_ids(tiny_tokenizer)
    ex = encode_continuation(tiny_tokenizer, p.prompt, p.chosen, 4096, eos, p.id)
    assert tiny_tokenizer.decode([t for t, m in zip(ex.input_ids, ex.mask) if m]) == p.chosen[0]["content"] + "<|im_end|>"
    # a multi-turn prompt: its earlier assistant turn is context, not supervised
    prompt = p.prompt + p.chosen + [{"role": "user", "content": "Say that again, shorter."}]
    ex2 = encode_continuation(tiny_tokenizer, prompt, p.rejected, 4096, eos, p.id)
    assert tiny_tokenizer.decode([t for t, m in zip(ex2.input_ids, ex2.mask) if m]) == \
        p.rejected[0]["content"] + "<|im_end|>"
    # truncation keeps the start; a prompt that fills max_length leaves nothing to compare
    assert encode_continuation(tiny_tokenizer, p.prompt, p.chosen, 8, eos, p.id) is None


def above_chance(n: int, alpha: float = 0.05) -> int:
    """The fewest successes of n that a one-sided binomial test calls above chance (p = 0.5) at alpha."""
    return next(k for k in range(n + 1) if sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n < alpha)


def test_above_chance_counts():
    assert above_chance(14) == 11 and above_chance(6) == 6 and above_chance(20) == 15


def test_dpo_raises_heldout_accuracy(dpo_run, split):
    _, out, _, _ = dpo_run
    before, after = out.eval_before, out.eval_after
    # at step 0 the adapter is zero: policy == reference, every margin is exactly 0
    assert before["rewards/margins"] == 0 and before["rewards/accuracies"] == 0 and before["loss"] == pytest.approx(
        0.6931, abs=1e-4)
    # Above chance with enough pairs to say so: the smallest count of correctly ranked held-out
    # pairs whose one-sided binomial p-value against chance (0.5) is below 0.05 (11 of 14). Measured
    # 11/14 on the AMD EPYC (margin 0.20, loss 0.61) and 12/14 on the 2-core Xeon (margin 0.31,
    # loss 0.558). Mean margin above 0 and loss below ln 2 (the loss at margin 0): the pair-averaged
    # figures moved the right way.
    n = len(split[1])
    correct = round(after["rewards/accuracies"] * n)
    assert correct >= above_chance(n), (correct, n, after)
    assert after["rewards/margins"] > 0 and after["loss"] < math.log(2)
    assert after["logps/rejected"] < before["logps/rejected"]
    assert after["likelihood_accuracy"] >= before["likelihood_accuracy"]
    for k in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
              "logps/chosen", "logps/rejected", "lr"):
        assert all(k in h for h in out.history)


def test_reference_does_not_move(dpo_run, split):
    """The reference is the base with the adapter off: recomputed after training, it equals the
    log-probs computed before; the base weights are bit-identical and the adapter did move."""
    model, _, args, base_w = dpo_run
    _, held_out = split
    again = reference_logps(model, [d.chosen for d in held_out], args)
    assert again == pytest.approx([d.ref_chosen for d in held_out], abs=1e-4)
    assert torch.equal(_q_proj(model).base_layer.weight, base_w)
    assert _q_proj(model).lora_B["default"].weight.abs().max() > 0


def test_orpo_without_reference(make_lora, split):
    train, held_out = split
    out = train_preference(make_lora(), train, held_out, _args(), PreferenceArgs("orpo"))
    assert out.eval_after["loss"] < out.eval_before["loss"]
    assert out.eval_after["nll_loss"] < out.eval_before["nll_loss"]
    assert all("log_odds_ratio" in h for h in out.history)


def test_kto_separates_heldout_answers(make_lora, tiny_tokenizer, sample_pairs):
    """KTO on the bundled pairs unpaired (118 labelled answers), held out by pair so no held-out
    prompt was trained on: after 15 steps the implicit reward of desirable held-out answers is above
    that of undesirable ones. Measured (scratch sweep, lr / steps -> held-out reward gap): 5e-3 / 15
    -> 0.13, 5e-3 / 30 -> 0.44, 2e-3 / 45 -> 0.36, 2e-3 / 90 -> 0.60."""
    pairs = list(sample_pairs)
    random.Random(0).shuffle(pairs)
    n_eval = len(pairs) // 5
    eos = eos_ids(tiny_tokenizer)
    train, _ = encode_kto(tiny_tokenizer, unpair(pairs[n_eval:]), MAX_LEN, eos, batch_size=8)
    held_out, _ = encode_kto(tiny_tokenizer, unpair(pairs[:n_eval]), MAX_LEN, eos, batch_size=8)
    assert {d.id for d in train}.isdisjoint({d.id for d in held_out})
    out = train_preference(make_lora(), train, held_out, _args(epochs=1, learning_rate=5e-3), PreferenceArgs("kto"))
    before, after = out.eval_before, out.eval_after
    assert out.steps == 15
    assert before["rewards/chosen"] == before["rewards/rejected"] == 0 and before["loss"] == 0.5
    # held-out reward gap after 15 steps: measured 0.13 on the AMD EPYC and 0.197 on the 2-core
    # Xeon (28 held-out answers); the bound is half the smaller machine's figure. (30 steps gave
    # 0.44 on the EPYC, where the old bound was 0.2; the test runs 15 to stay under 10 s.)
    assert after["rewards/chosen"] - after["rewards/rejected"] > 0.065
    assert after["loss"] < before["loss"]
    assert all("kl" in h for h in out.history)


@pytest.mark.slow
def test_every_exporter_takes_the_dpo_model(dpo_run, tiny_model_dir, tmp_path):
    """Merged like an SFT run, then the exporters, unchanged, with their own proofs on."""
    from transformers import AutoTokenizer

    from iceburg.config import ModelType
    from iceburg.export import ExportContext, export_model

    model, _, _, _ = dpo_run
    merged = model.merge_and_unload()
    folder = tmp_path / "merged"
    merged.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    formats = ["huggingface", "gguf", "ollama", "onnx"]
    ctx = ExportContext(model_type=ModelType.SURVEYOR, name="dpo-test", quantization=["f16"])
    results = export_model(folder, tmp_path / "exports", formats, ctx)
    assert sorted(results) == sorted(formats)
    for fmt, res in results.items():
        assert res.files and all(p.exists() for p in res.files), fmt
    text = json.dumps({f: r.report for f, r in results.items()}, default=str)
    assert "passed" in text or "max_abs" in text
