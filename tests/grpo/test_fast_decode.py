"""GRPO's flat decode loop (`iceburg.training.fast_decode`) returns what `model.generate` returns:
the same tokens for the same seed, through left padding, GQA, q/k/v biases, an end-of-turn token
met mid-answer and greedy decoding; and it steps aside for what it does not compute."""

from __future__ import annotations

import pytest
import torch

from iceburg.training import fast_decode
from iceburg.training.grpo import GrpoArgs, GrpoPrompt, generate, merged_lora, prefill_once, sampling_copy_kept

G, C = 4, 12


@pytest.fixture
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _prompts(tok, questions):
    return [GrpoPrompt(f"p{i}", tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                                        tokenize=True, return_dict=False))
            for i, q in enumerate(questions)]


def _random_lora(model):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05)
    return model


def _both(monkeypatch, model, tok, prompts, n, eos, seed, kept=True):
    """(flat loop's answers, generate's answers) for the same call; asserts the flat loop ran."""
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    gargs = GrpoArgs(group=n, max_completion_length=C)
    ran = []
    real = fast_decode.decode
    with monkeypatch.context() as mp, sampling_copy_kept(model, keep=kept):
        mp.setattr(fast_decode, "decode", lambda *a, **k: ran.append(1) or real(*a, **k))
        got = generate(model, tok, prompts, n, gargs, eos, pad, seed=seed).completion_ids
        mp.setattr(fast_decode, "supports", lambda *a: False)
        want = generate(model, tok, prompts, n, gargs, eos, pad, seed=seed).completion_ids
    assert ran == [1]
    return got, want


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])  # float32: the product's
@pytest.mark.parametrize("kept", [True, False])  # True: q/k/v and gate/up as one product over the kept buffer
def test_flat_loop_samples_what_generate_samples(monkeypatch, make_lora, tok, dtype, kept):
    model = make_lora(random_b=True).to(dtype)
    prompts = _prompts(tok, ["What causes tides?", "Summarise the evidence on sleep and memory now."])
    assert len(prompts[0].prompt_ids) != len(prompts[1].prompt_ids)  # left padding
    got, want = _both(monkeypatch, model, tok, prompts, G, {tok.eos_token_id}, seed=7, kept=kept)
    assert len({tuple(r) for r in want.tolist()}) > 1 and torch.equal(got, want)
    one, want_one = _both(monkeypatch, model, tok, prompts[:1], G, {tok.eos_token_id}, seed=8, kept=kept)
    assert torch.equal(one, want_one)  # no padding: transformers passes no mask, GQA inside SDPA


def test_an_end_token_mid_answer_pads_the_row_and_greedy_matches(monkeypatch, make_lora, tok):
    model = make_lora(random_b=True).double()
    prompts = _prompts(tok, ["What causes tides?"])
    free, _ = _both(monkeypatch, model, tok, prompts, G, {tok.eos_token_id}, seed=3)
    stop = int(free[0, 2])  # a token the first answer samples third: made the end of turn
    got, want = _both(monkeypatch, model, tok, prompts, G, {stop}, seed=3)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    assert got[0, 2] == stop and (got[0, 3:] == pad).all() and torch.equal(got, want)
    greedy, want_greedy = _both(monkeypatch, model, tok, prompts, G, {tok.eos_token_id}, seed=None)
    assert torch.equal(greedy, want_greedy)


def test_qwen2_and_llama_biases_and_mistral_window(monkeypatch, tok):
    """Qwen2's q/k/v biases go into the one product (and Llama's `attention_bias` adds o_proj's); Mistral without a window is Llama's arithmetic,
    and a window shorter than the sequence (attention would be cut) makes the flat loop step aside."""
    from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
                              Qwen2ForCausalLM)

    shape = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    torch.manual_seed(0)
    qwen = _random_lora(Qwen2ForCausalLM(Qwen2Config(**shape)).double())
    assert qwen.get_base_model().model.layers[0].self_attn.q_proj.bias is not None
    prompts = _prompts(tok, ["What causes tides?", "Summarise the evidence now."])
    got, want = _both(monkeypatch, qwen, tok, prompts, G, {tok.eos_token_id}, seed=5)
    assert torch.equal(got, want)
    llama_bias = _random_lora(LlamaForCausalLM(LlamaConfig(attention_bias=True, **shape)).double())
    assert llama_bias.get_base_model().model.layers[0].self_attn.o_proj.bias is not None
    got, want = _both(monkeypatch, llama_bias, tok, prompts, G, {tok.eos_token_id}, seed=4)
    assert torch.equal(got, want)  # q/k/v biases in the one product, o_proj's bias after attention
    mistral = _random_lora(MistralForCausalLM(MistralConfig(sliding_window=None, **shape)).double())
    got, want = _both(monkeypatch, mistral, tok, prompts, G, {tok.eos_token_id}, seed=6)
    assert torch.equal(got, want)
    windowed = _random_lora(MistralForCausalLM(MistralConfig(sliding_window=16, **shape)))
    with torch.no_grad(), merged_lora(windowed):
        cache = prefill_once(windowed, prompts[:1], G, 0, "cpu", room=C + 1)
        assert not fast_decode.supports(windowed, cache, len(prompts[0].prompt_ids) + C)  # 16 < prompt + answer


def test_it_steps_aside_for_other_models_and_caches(make_lora, tok):
    from transformers import GemmaConfig, GemmaForCausalLM

    model = make_lora()
    prompts = _prompts(tok, ["What causes tides?"])
    with torch.no_grad(), merged_lora(model):  # sampling swaps the LoRA layers for plain Linear ones
        cache = prefill_once(model, prompts, G, 0, "cpu", room=C + 1)
        plain = prefill_once(model, prompts, G, 0, "cpu", room=0)  # no room: DynamicCache layers
        assert fast_decode.supports(model, cache, 64) and not fast_decode.supports(model, plain, 64)
        assert not fast_decode.supports(model, None, 64)
    assert not fast_decode.supports(model, cache, 64)  # PEFT's LoRA layers in place: not plain products
    gemma = GemmaForCausalLM(GemmaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2, head_dim=16))
    assert not fast_decode.supports(gemma, cache, 64)  # (1 + w) RMSNorm, scaled embeddings, GELU: not this loop
