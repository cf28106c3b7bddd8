"""Held-out GRPO rewards, greedy and sampled (`held_out_rewards(samples=K)`, `--grpo-eval-samples`):
K answers per prompt drawn from seeds fixed per prompt batch, each reward's mean over a prompt's K
answers (answers it does not apply to left out), the same numbers again for the same model and
seed, and the greedy path unchanged. On iceburg-tiny with a random (non-zero) LoRA B."""

from __future__ import annotations

import pytest

from iceburg.training.grpo import (EVAL_SEED_STEP, GrpoArgs, GrpoPrompt, generate, held_out_rewards,
                                   sample_seed)

K, C = 3, 8


class Rewards:
    """`vowels`: the answer's share of vowels; `odd`: applies only to prompts whose source is odd
    (None elsewhere), so the per-prompt mean must skip what does not apply."""

    names = ["vowels", "odd"]
    weights = [1.0, 1.0]

    def score(self, sources, completions):
        vowels = [sum(ch in "aeiou" for ch in c.text) / max(1, len(c.text)) for c in completions]
        return {"vowels": vowels, "odd": [c.tokens / C if s % 2 else None for s, c in zip(sources, completions)]}


@pytest.fixture
def setup(make_lora, tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = make_lora(random_b=True)
    questions = ("What causes tides?", "Summarise the evidence.", "Name one open problem.")
    prompts = [GrpoPrompt(f"p{i}", tok.apply_chat_template([{"role": "user", "content": q}],
                                                           add_generation_prompt=True, tokenize=True,
                                                           return_dict=False), source=i)
               for i, q in enumerate(questions)]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return tok, model, prompts, pad, {tok.eos_token_id}, GrpoArgs(max_completion_length=C, temperature=1.0)


def test_sampled_held_out_rewards_are_the_mean_over_k_seeded_answers(setup):
    tok, model, prompts, pad, eos, gargs = setup
    texts: list[str] = []
    got = held_out_rewards(model, tok, prompts, gargs, Rewards(), eos, pad, batch=6, samples=K, seed=5, texts=texts)
    assert got == held_out_rewards(model, tok, prompts, gargs, Rewards(), eos, pad, batch=6, samples=K, seed=5)
    assert len(texts) == K * len(prompts)
    # batch 6 rows / K = 2 prompts per call: prompts 0-1 from the seed of index 0, prompt 2 from index 2
    want = {"vowels": [], "odd": []}
    for i in (0, 2):
        r = generate(model, tok, prompts[i:i + 2], K, gargs, eos, pad, sample_seed(5, EVAL_SEED_STEP, i))
        assert [c.text for c in r.completions] == texts[i * K:(i + 2) * K]
        scored = Rewards().score(r.sources, r.completions)
        for j in range(0, len(r.completions), K):
            want["vowels"].append(sum(scored["vowels"][j:j + K]) / K)
            odd = scored["odd"][j:j + K]
            want["odd"].append(None if odd[0] is None else sum(odd) / K)
    assert got["vowels"] == pytest.approx(want["vowels"], abs=1e-12)
    assert got["odd"][0] is None and got["odd"][2] is None and got["odd"][1] == pytest.approx(want["odd"][1])
    # really sampled: a prompt's K answers are not one answer repeated
    assert any(len(set(texts[i * K:(i + 1) * K])) > 1 for i in range(len(prompts)))
    # another seed draws other answers
    other: list[str] = []
    held_out_rewards(model, tok, prompts, gargs, Rewards(), eos, pad, batch=6, samples=K, seed=6, texts=other)
    assert other != texts


def test_greedy_held_out_rewards_score_the_one_greedy_answer(setup):
    tok, model, prompts, pad, eos, gargs = setup
    texts: list[str] = []
    got = held_out_rewards(model, tok, prompts, gargs, Rewards(), eos, pad, texts=texts)
    r = generate(model, tok, prompts, 1, gargs, eos, pad, None)
    assert texts == [c.text for c in r.completions]
    assert got == Rewards().score(r.sources, r.completions)
