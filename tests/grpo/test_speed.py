"""The GRPO step's speed-ups compute what the plain computation computes (docs/grpo.md "Speed"):
each prompt run once with its KV cache shared by the G answers (loss forward and sampling
prefill), and sampling through LoRA merged into swapped-in weights that are put back bit-exactly.
Equality is checked in float64 on iceburg-tiny, where only the order of float operations differs
between the paths, so a real difference (a wrong position, mask or cache row) cannot hide under
float32 rounding."""

from __future__ import annotations

import pytest
import torch

from iceburg.training.grpo import (GrpoArgs, GrpoPrompt, GumbelSampler, completion_logps, generate, left_pad,
                                   merged_lora, prefill_once, prompt_groups, sampling_copy_kept, shared_prefix_logps)

G, C = 4, 10


@pytest.fixture
def setup(make_lora, tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = make_lora(random_b=True).double()  # non-zero B: merged != base, policy != reference
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True,
                                       return_dict=False) for q in ("What causes tides?", "Summarise the evidence now.")]
    assert len(prompts[0]) != len(prompts[1])  # left padding is exercised
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    p_ids, p_mask = left_pad([p for p in prompts for _ in range(G)], pad)
    g = torch.Generator().manual_seed(1)
    comp = torch.randint(10, min(len(tok), 200), (2 * G, C), generator=g)
    mask = torch.ones_like(comp)
    for i, at in enumerate([3, 9, 5, 12, 0, 2, 7, 12]):  # ragged answers (12: never ends)
        if at < C:
            comp[i, at + 1:] = pad
            mask[i, at + 1:] = 0
    return dict(tok=tok, model=model, prompts=prompts, pad=pad, p_ids=p_ids, p_mask=p_mask, comp=comp, mask=mask)


def _unpadded_full_forward(model, b, temperature):
    """The plain full forward per prompt group with its left padding cut: the same sequences at the
    same positions as the shared-prefix path (a padded row's positions are shifted by its padding,
    and RoPE's angles are computed in float32 even in a float64 model, so the padded batch differs
    from it by float32 rounding: checked separately below)."""
    out = []
    for a, e in prompt_groups(b["p_ids"], b["p_mask"]):
        keep = b["p_mask"][a].bool()
        out.append(completion_logps(model, b["p_ids"][a:e][:, keep], b["p_mask"][a:e][:, keep], b["comp"][a:e],
                                    b["mask"][a:e], temperature))
    return torch.cat(out)


def test_shared_prefix_logps_and_gradients_equal_the_full_forward(setup):
    model, b = setup["model"], setup
    assert prompt_groups(b["p_ids"], b["p_mask"]) == [(0, G), (G, 2 * G)]
    model.eval()  # no dropout: both paths see the same function
    weights = torch.linspace(-1.0, 1.0, b["comp"].numel(), dtype=torch.float64).view_as(b["comp"]) * b["mask"]
    grads, logps = [], []
    for fn in (lambda: _unpadded_full_forward(model, b, 0.7),
               lambda: shared_prefix_logps(model, b["p_ids"], b["p_mask"], b["comp"], b["mask"], 0.7)):
        model.zero_grad()
        lp = fn()
        (lp * weights).sum().backward()
        logps.append(lp.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad]))
    m = b["mask"].bool()
    # 1e-10: float64 rounding of a differently ordered sum; a wrong position or mask moves log-probs by >1e-2
    assert (logps[0][m] - logps[1][m]).abs().max() < 1e-10
    assert grads[0].abs().max() > 1e-3  # a real gradient, not 0 = 0
    # 1e-5: measured 1.6e-6 (2026-12-06): the LoRA gradients agree to float32 level, not float64's,
    # although the log-probabilities agree to 1e-10; where float32 enters the backward (suspected: a
    # CPU attention backward kernel, full causal vs queries on a cache) was not traced. A wrong
    # position, mask or cache row moves log-probabilities by > 1e-2 and the gradients with them.
    assert (grads[0] - grads[1]).abs().max() < 1e-5
    with torch.no_grad():  # the left-padded batch (TRL's and the old path's positions): float32 RoPE rounding
        padded = completion_logps(model, b["p_ids"], b["p_mask"], b["comp"], b["mask"], 0.7)
    # 1e-4: float32 angles (rel. 6e-8) times positions ~20 and logits ~20 give ~1e-5; measured 2.9e-6 here
    assert (padded[m] - logps[1][m]).abs().max() < 1e-4


def test_merged_sampling_restores_the_weights_bit_exactly(setup):
    model = setup["model"]
    before = {n: (p, p.detach().clone()) for n, p in model.named_parameters()}
    ids = torch.tensor([setup["prompts"][0]])
    from peft.tuners.lora.layer import Linear as LoraLinear

    lora_before = {n: m for n, m in model.named_modules() if isinstance(m, LoraLinear)}
    model.eval()
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with merged_lora(model):
            merged = model(input_ids=ids).logits
            swapped = [n for n, p in model.named_parameters() if p is not before.get(n, (None,))[0]]
            inside = [n for n, m in model.named_modules() if isinstance(m, LoraLinear)]
        base = model.get_base_model()
        with model.disable_adapter():
            reference = base(input_ids=ids).logits
    assert swapped  # the base weights were really replaced while sampling
    assert (plain - reference).abs().max() > 1e-3  # the adapter changes the logits, so merging is tested
    assert (plain - merged).abs().max() < 1e-10  # float64: W x + s B A x = (W + s B A) x up to rounding
    for n, p in model.named_parameters():  # the very same tensors, unchanged to the bit
        assert p is before[n][0] and torch.equal(p, before[n][1]), n
    assert lora_before and not inside  # sampling ran through plain Linear layers, no LoRA layer in the tree
    assert {n: m for n, m in model.named_modules() if isinstance(m, LoraLinear)} == lora_before  # the same modules back


def test_roomy_cache_writes_in_place_and_equals_concatenation(setup):
    """The sampling cache preallocates room for the answer: a decode step writes its key and value
    into the buffer (no new tensor), and what attention sees equals DynamicLayer's concatenation."""
    from transformers.cache_utils import DynamicLayer

    model, pad = setup["model"], setup["pad"]
    prompts = [GrpoPrompt(f"p{i}", ids) for i, ids in enumerate(setup["prompts"])]
    model.eval()
    cache = prefill_once(model, prompts, G, pad, "cpu", room=3)
    plain = prefill_once(model, prompts, G, pad, "cpu")
    layer, ref = cache.layers[0], plain.layers[0]
    assert type(layer) is not DynamicLayer and type(ref) is DynamicLayer
    buf = layer.keys.data_ptr()
    for step in range(4):  # room for 3: the 4th update falls back to concatenation
        k, v = torch.randn_like(ref.keys[:, :, :1]), torch.randn_like(ref.values[:, :, :1])
        got, want = layer.update(k, v), ref.update(k, v)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert (layer.keys.data_ptr() == buf) == (step < 3)


@pytest.mark.parametrize("kept", [False, True])  # True: the merged weights in the kept huge-page buffer
@pytest.mark.parametrize("temperature", [1.0, 0.6])  # 1: TRL's default; 0.6: a --grpo-temperature below it
def test_generate_samples_what_plain_generate_samples(setup, temperature, kept):
    """The prompt prefilled once and its cache repeated G times, sampling through merged weights:
    the same answers as `model.generate` on G left-padded copies with the adapter unmerged and the
    same sampler (float64, so no sampled token flips on rounding), at the sampling temperature asked for."""
    tok, model, pad = setup["tok"], setup["model"], setup["pad"]
    prompts = [GrpoPrompt(f"p{i}", ids) for i, ids in enumerate(setup["prompts"])]
    gargs = GrpoArgs(group=G, max_completion_length=C, temperature=temperature)
    eos = {tok.eos_token_id}
    with sampling_copy_kept(model, keep=kept):
        got = generate(model, tok, prompts, G, gargs, eos, pad, seed=123)
        again = generate(model, tok, prompts, G, gargs, eos, pad, seed=123)  # kept: the buffer re-used
    ids, attn = left_pad([p.prompt_ids for p in prompts for _ in range(G)], pad)
    model.eval()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        want = model.generate(input_ids=ids, attention_mask=attn, max_new_tokens=C, eos_token_id=sorted(eos),
                              pad_token_id=pad, do_sample=False, top_k=None, top_p=None, temperature=None,
                              logits_processor=[GumbelSampler(temperature)])
    want = want[:, ids.size(1):]
    assert len({tuple(r) for r in want.tolist()}) > 1  # sampled, not one greedy answer repeated
    assert torch.equal(got.completion_ids, want) and torch.equal(again.completion_ids, want)


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_gumbel_sampler_draws_from_the_softmax_at_the_temperature(temperature):
    """argmax(logits / T + Gumbel noise) is a draw from softmax(logits / T): 40,000 draws from a fixed
    6-token distribution (one -inf) pass Pearson's chi-square against it and fail it against the
    softmax at the other temperature, so the test can tell a wrong temperature from a right one."""
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.5, float("-inf")])
    n = 40_000
    g = torch.random.fork_rng(devices=[])
    with g:
        torch.manual_seed(7)
        draws = GumbelSampler(temperature)(None, logits.expand(n, -1).clone()).argmax(-1)
    counts = torch.bincount(draws, minlength=6).double()
    assert counts[-1] == 0  # a masked token is never drawn

    def chi2(t):
        p = torch.softmax(logits[:-1].double() / t, -1)
        return (((counts[:-1] - n * p) ** 2) / (n * p)).sum().item()

    # 23.5: the chi-square quantile at 1 - 1e-4 with 4 degrees of freedom (scipy.stats.chi2.ppf), so a right
    # sampler fails one seed in 10,000; the fixed seed makes the outcome deterministic. The other temperature
    # (1 vs 0.6) moves the top token's share by ~0.1, a chi-square in the thousands at n = 40,000.
    assert chi2(temperature) < 23.5
    assert chi2(1.6 - temperature) > 500


def test_kept_sampling_copy_is_one_buffer_rewritten_each_call_and_released(setup):
    """Inside `sampling_copy_kept` the merged weights and the output head's copy are views into buffers
    kept between calls (the same memory on the next call), hold W + BA*s of the current adapter, and the
    very same original tensors (a tied head's tie included) are back after each call; on exit the
    buffers are released."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    from iceburg.training import grpo

    model = setup["model"]
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    original_head = head.weight
    before = {n: (p, p.detach().clone()) for n, p in model.named_parameters()}
    bases = [m.base_layer for m in model.modules() if isinstance(m, LoraLinear)]
    ids = torch.tensor([setup["prompts"][0]])
    model.eval()
    with torch.no_grad():
        with merged_lora(model):
            fresh = model(input_ids=ids).logits
        ptrs = []
        with sampling_copy_kept(model):
            for _ in range(2):
                with merged_lora(model):
                    kept = model(input_ids=ids).logits
                    bufs = grpo._KEPT[model]
                    body, hbuf = bufs[torch.float64], bufs["head"]
                    ptrs.append([b.weight.data_ptr() for b in bases] + [head.weight.data_ptr()])
                    lo, hi = body.data_ptr(), body.data_ptr() + body.numel() * body.element_size()
                    assert all(lo <= b.weight.data_ptr() < hi for b in bases)  # views into the one buffer
                    assert head.weight.data_ptr() == hbuf.data_ptr() and torch.equal(head.weight, original_head)
                    assert body.data_ptr() % (2 << 20) == 0  # aligned for huge pages
                assert torch.equal(kept, fresh)  # the same merged values, only where they live differs
            lora_b = next(p for n, p in model.named_parameters() if "lora_B" in n)
            lora_b.add_(0.5)  # a changed adapter: the next call must rewrite the buffer, not reuse it stale
            with merged_lora(model):
                moved = model(input_ids=ids).logits
            lora_b.sub_(0.5)
            saved_head = original_head.detach().clone()
            original_head.add_(0.25)  # a head changed in place (trainable embeddings): copied again, not stale
            with merged_lora(model):
                assert torch.equal(head.weight, original_head) and head.weight.data_ptr() == ptrs[0][-1]
            original_head.copy_(saved_head)
        assert model not in grpo._KEPT  # released on exit
    assert ptrs[0] == ptrs[1]  # the second call wrote into the first call's memory
    assert (moved - fresh).abs().max() > 1e-3
    for n, p in model.named_parameters():
        assert p is before[n][0] and torch.equal(p, before[n][1]), n
    assert head.weight is original_head and (original_head is not emb.weight or head.weight is emb.weight)


def test_bf16_sampling_casts_the_body_keeps_float_logits_and_restores_every_tensor(setup):
    """`sample_dtype="bfloat16"` (opt-in): while sampling every weight but the output head's is a bf16
    copy (the LoRA delta merged in), the logits stay in the model's float dtype and close to the
    float logits; on exit the very same tensors are back, bit-exact; greedy answers never use it."""
    from iceburg.training.grpo import cast_for_sampling

    tok, model, pad = setup["tok"], setup["model"], setup["pad"]
    before = {n: (p, p.detach().clone()) for n, p in model.named_parameters()}
    ids = torch.tensor([setup["prompts"][0]])
    model.eval()
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with merged_lora(model, torch.bfloat16), cast_for_sampling(model, torch.bfloat16):
            cast = model(input_ids=ids).logits
            dtypes = {p.dtype for m in model.modules() if m is not model.get_output_embeddings()
                      for p in m.parameters(recurse=False)}
    assert dtypes == {torch.bfloat16} and cast.dtype == plain.dtype == torch.float64
    diff = (cast - plain).abs().max().item()
    # > 0: the body really ran in bf16; < 0.05 x the logits' spread: bf16 keeps 8 mantissa bits (rel. 4e-3 per
    # value), a few layers of it move tiny-model logits (spread ~2) by ~1e-2, a wrong cast or weight by ~1
    assert 0 < diff < 0.05 * (plain.max() - plain.min()).item()
    for n, p in model.named_parameters():
        assert p is before[n][0] and torch.equal(p, before[n][1]), n
    prompts = [GrpoPrompt("p0", setup["prompts"][0])]
    gargs = GrpoArgs(group=G, max_completion_length=C, sample_dtype="bfloat16")
    sampled = generate(model, tok, prompts, G, gargs, {tok.eos_token_id}, pad, seed=5)
    assert sampled.completion_ids.size(0) == G and all(c.tokens > 0 for c in sampled.completions)
    greedy = generate(model, tok, prompts, 1, gargs, {tok.eos_token_id}, pad, seed=None)
    want = generate(model, tok, prompts, 1, GrpoArgs(group=G, max_completion_length=C), {tok.eos_token_id}, pad, None)
    assert torch.equal(greedy.completion_ids, want.completion_ids)  # held-out answers stay in the model's dtype
