"""Our DPO / ORPO losses against TRL 1.16.0's on the same batch (TRL's own collator and trainer)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from iceburg.preference import losses
from iceburg.training.preference import masked_logps

trl = pytest.importorskip("trl", reason="TRL is in the dev extra: pip install trl==1.16.0 datasets==5.2.0")


def _trl_dataset(pairs):
    from datasets import Dataset

    return Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs])


def test_dpo_loss_equals_trl_on_the_same_batch(tmp_path, make_lora, tiny_tokenizer, sample_pairs):
    from trl import DPOConfig, DPOTrainer

    model = make_lora(random_b=True)  # policy != reference, so the loss is not log 2
    args = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, use_cpu=True, bf16=False,
                     report_to=[], beta=0.1, max_length=192, gradient_checkpointing=False)
    trainer = DPOTrainer(model=model, args=args, train_dataset=_trl_dataset(sample_pairs[:4]),
                         processing_class=tiny_tokenizer)
    # Given a model that already has an adapter, TRL keeps a frozen copy of it as the reference
    # ("ref" adapter). Our reference is the base with the adapter disabled, which is what TRL uses
    # for a fresh adapter; dropping the copy makes TRL take that path on our non-zero adapter.
    if "ref" in model.peft_config:
        model.delete_adapter("ref")
    model.set_adapter("default")
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    model.eval()
    with torch.no_grad():
        trl_loss = trainer._compute_loss(trainer.model, batch, False).item()
        ids, attn, comp = batch["input_ids"], batch["attention_mask"], batch["completion_mask"].bool()

        def logps():
            logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits[:, :-1].float()
            return masked_logps(logits, ids[:, 1:], comp[:, 1:])[0].chunk(2)

        pc, pr = logps()
        with model.disable_adapter():
            rc, rr = logps()
    ours, cr, rj = losses.dpo_loss(pc, pr, rc, rr, beta=0.1)
    assert abs(trl_loss - 0.6931) > 1e-3  # a real preference signal, not the untrained log 2
    assert ours.mean().item() == pytest.approx(trl_loss, abs=1e-5)
    m = trainer._metrics["train" if model.training else "eval"]
    assert (cr - rj).mean().item() == pytest.approx(m["rewards/margins"][-1], abs=1e-5)
    assert pc.mean().item() == pytest.approx(m["logps/chosen"][-1], rel=1e-5)


def test_orpo_loss_equals_trl():
    from trl.experimental.orpo import ORPOTrainer

    g = torch.Generator().manual_seed(0)
    c = -torch.rand(8, generator=g) * 3  # mean per-token log-probs
    r = -torch.rand(8, generator=g) * 3
    fake = SimpleNamespace(beta=0.1, accelerator=SimpleNamespace(device="cpu"))
    trl_losses, *_ = ORPOTrainer.odds_ratio_loss(fake, c, r)
    nll = -c
    ours, log_odds = losses.orpo_loss(c, r, nll, beta=0.1)
    # TRL: loss = policy_nll_loss - losses.mean()
    assert ours.mean().item() == pytest.approx((nll.mean() - trl_losses.mean()).item(), abs=1e-6)


def test_kto_loss_matches_the_formula():
    """TRL computes KTO inline in `_compute_loss`; this pins the same terms (kto_trainer.py 1443-1480)."""
    pol = torch.tensor([-5.0, -7.0, -6.0])
    ref = torch.tensor([-6.0, -6.0, -6.5])
    labels = torch.tensor([True, False, True])
    kl_pol, kl_ref = torch.tensor([-9.0, -8.0, -7.0]), torch.tensor([-9.5, -8.5, -7.5])
    out, z0 = losses.kto_loss(pol, ref, labels, kl_pol, kl_ref, beta=0.1)
    assert z0.item() == pytest.approx(0.5)
    expect = [1 - torch.sigmoid(torch.tensor(0.1 * (1.0 - 0.5))), 1 - torch.sigmoid(torch.tensor(0.1 * (0.5 - 0.5))),
              1 - torch.sigmoid(torch.tensor(0.1 * (0.5 - (-1.0))))]
    assert out.tolist() == pytest.approx([e.item() for e in expect])
