"""Our GRPO advantages and losses against TRL 1.16.0's `GRPOTrainer._compute_loss` on the same
fixed batch of prompts, completions and rewards (iceburg-tiny with a non-zero LoRA adapter, so
policy and reference differ and the KL term is not 0)."""

from __future__ import annotations

import pytest
import torch

from iceburg.training.grpo import (GrpoArgs, answer_mask, combine_rewards, completion_logps, group_advantages,
                                   grpo_loss, left_pad)

trl = pytest.importorskip("trl", reason="TRL is in the dev extra: pip install trl==1.16.0 datasets==5.2.0")

G, C = 4, 12  # group size, completion width


def _trl_advantages(rpf: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """TRL 1.16 grpo_trainer.py `_generate_and_score_completions`, sum_then_normalize, scale_rewards
    "group" (its defaults), line for line with TRL's own nanstd."""
    from trl.trainer.utils import nanstd

    unscorable = torch.isnan(rpf).all(dim=1)
    rewards = (rpf * weights.unsqueeze(0)).nansum(dim=1)
    rewards[unscorable] = torch.nan
    mean = torch.nanmean(rewards.view(-1, G), dim=1).repeat_interleave(G, dim=0)
    std = nanstd(rewards.view(-1, G), dim=1).repeat_interleave(G, dim=0)
    return torch.nan_to_num((rewards - mean) / (std + 1e-4), nan=0.0)


def _trl_mask(completion_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """TRL's completion mask: up to and including the first EOS."""
    is_eos = completion_ids == eos_id
    eos_idx = torch.full((is_eos.size(0),), is_eos.size(1), dtype=torch.long)
    eos_idx[is_eos.any(dim=1)] = is_eos.int().argmax(dim=1)[is_eos.any(dim=1)]
    seq = torch.arange(is_eos.size(1)).expand(is_eos.size(0), -1)
    return (seq <= eos_idx.unsqueeze(1)).int()


@pytest.fixture(scope="module")
def batch(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    eos = tok.eos_token_id
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True,
                                       return_dict=False) for q in ("What causes tides?", "Summarise the evidence.")]
    rows = [p for p in prompts for _ in range(G)]
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    prompt_ids, prompt_mask = left_pad(rows, pad)
    g = torch.Generator().manual_seed(0)
    comp = torch.randint(10, min(len(tok), 200), (len(rows), C), generator=g)
    for i, at in enumerate([3, 11, 5, 7, 20, 2, 9, 0]):  # answers of varied length; 20: never stops
        if at < C:
            comp[i, at] = eos
            comp[i, at + 1:] = pad
    # two reward functions; the second does not apply to the second prompt (None -> NaN)
    rpf = torch.tensor([[1.0, 0.5], [0.0, 0.2], [0.5, 0.9], [1.0, 0.1],
                        [0.3, float("nan")], [0.3, float("nan")], [0.9, float("nan")], [0.0, float("nan")]])
    return dict(tok=tok, eos=eos, prompt_ids=prompt_ids, prompt_mask=prompt_mask, comp=comp,
                mask=_trl_mask(comp, eos), rpf=rpf, weights=torch.tensor([1.0, 0.5]))


def test_mask_and_advantages_equal_trl(batch):
    assert torch.equal(answer_mask(batch["comp"], {batch["eos"]}), batch["mask"].long())
    ours = group_advantages(combine_rewards(batch["rpf"], batch["weights"]), G)
    theirs = _trl_advantages(batch["rpf"], batch["weights"])
    assert ours.abs().max() > 0.5  # real spread within each group, not all zeros
    assert torch.allclose(ours, theirs, atol=1e-6)


def _trainer(tmp_path, model, tok, loss_type: str, beta: float):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=G, num_generations=G,
                      max_completion_length=C, use_cpu=True, bf16=False, report_to=[], beta=beta,
                      loss_type=loss_type, epsilon=0.2, gradient_checkpointing=False, logging_steps=1)
    data = Dataset.from_list([{"prompt": "What causes tides?"}] * G)
    trainer = GRPOTrainer(model=model, reward_funcs=[lambda completions, **kw: [0.0] * len(completions)],
                          args=args, train_dataset=data, processing_class=tok)
    if "ref" in model.peft_config:  # our reference: the base with the adapter disabled (as the DPO test)
        model.delete_adapter("ref")
    model.set_adapter("default")
    trainer.current_gradient_accumulation_steps = 1
    return trainer


@pytest.mark.parametrize("loss_type,beta", [("grpo", 0.0), ("dr_grpo", 0.04), ("dapo", 0.04), ("grpo", 0.5), ("dapo", 0.0)])
def test_loss_equals_trl(tmp_path, make_lora, batch, loss_type, beta):
    model = make_lora(random_b=True)  # policy != reference: the KL term is not 0
    trainer = _trainer(tmp_path, model, batch["tok"], loss_type, beta)
    model.eval()
    adv = _trl_advantages(batch["rpf"], batch["weights"])
    p_ids, p_mask, comp, mask = batch["prompt_ids"], batch["prompt_mask"], batch["comp"], batch["mask"]
    with torch.no_grad():
        logps = completion_logps(model, p_ids, p_mask, comp, mask)
        with model.disable_adapter():
            ref = completion_logps(model, p_ids, p_mask, comp, mask)
    # an "old" policy apart from the current one, so the clipped branch is exercised in both
    old = logps + torch.linspace(-0.4, 0.4, logps.numel()).view_as(logps)
    inputs = {"prompt_ids": p_ids, "prompt_mask": p_mask, "completion_ids": comp, "completion_mask": mask,
              "advantages": adv, "num_items_in_batch": mask.sum(), "old_per_token_logps": old,
              "ref_per_token_logps": ref}
    with torch.no_grad():
        theirs = trainer._compute_loss(trainer.model, inputs).item()
        gargs = GrpoArgs(group=G, loss_type=loss_type, beta=beta, max_completion_length=C)
        ours, m = grpo_loss(logps, old, ref if beta else None, adv, mask, gargs, mask.sum())
        full = torch.cat([p_ids, comp], 1)
        trl_logps = trainer._get_per_token_logps_and_entropies(model, full, torch.cat([p_mask, mask], 1), C)[0]
    # the same per-token log-probabilities as TRL's fused head (fp32 on CPU: equal to float rounding)
    assert torch.allclose(trl_logps[mask.bool()], logps[mask.bool()], atol=1e-6)
    assert m["clip_ratio/region_mean"] > 0  # the clip did bite on some tokens
    assert abs(theirs) > 1e-3  # a real loss, not 0 = 0
    assert ours.item() == pytest.approx(theirs, abs=1e-5)
    if beta:  # TRL's kl metric: the (ratio-corrected) per-token KL's masked mean
        assert m["kl"] > 0.01
        assert m["kl"] == pytest.approx(trainer._metrics["eval"]["kl"][-1], rel=1e-4)
