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


def test_kto_loss_and_kl_pairing_equal_trl_on_the_same_batch(tmp_path, make_lora, tiny_tokenizer, sample_pairs):
    """TRL's KTOTrainer on 4 labelled answers (one batch): its KL sequences rotate the batch's
    answers by one, and its loss equals ours on the same tokens. Our `kl_batches` builds the same
    pairing (prompt i with answer i-1 of its batch)."""
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    from iceburg.preference.data import unpair
    from iceburg.training.encoding import eos_ids
    from iceburg.training.preference import encode_kto

    items = unpair(sample_pairs[:2])
    items = [items[0], items[3], items[1], items[2]]  # mixed labels, no neighbour shares a prompt
    model = make_lora(random_b=True)
    args = KTOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, use_cpu=True, bf16=False,
                     report_to=[], beta=0.1, max_length=192, gradient_checkpointing=False)
    data = Dataset.from_list([{"prompt": k.prompt, "completion": k.completion, "label": k.label} for k in items])
    trainer = KTOTrainer(model=model, args=args, train_dataset=data, processing_class=tiny_tokenizer)
    if "ref" in model.peft_config:  # as in the DPO test: our reference is the adapter switched off
        model.delete_adapter("ref")
    model.set_adapter("default")
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    model.eval()
    with torch.no_grad():
        trl_loss = trainer._compute_loss(trainer.model, batch, False).item()

        def logps(prefix=""):
            ids, attn = batch[prefix + "input_ids"], batch[prefix + "attention_mask"]
            comp = batch[prefix + "completion_mask"].bool()
            logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits[:, :-1].float()
            return masked_logps(logits, ids[:, 1:], comp[:, 1:])[0]

        pol, pol_kl = logps(), logps("KL_")
        with model.disable_adapter():
            ref, ref_kl = logps(), logps("KL_")
    labels = torch.tensor([k.label for k in items])
    ours, z0 = losses.kto_loss(pol, ref, labels, pol_kl, ref_kl, beta=0.1)
    assert abs(trl_loss - 0.5) > 1e-4  # a real signal, not the untrained 1 - sigmoid(0)
    assert ours.mean().item() == pytest.approx(trl_loss, abs=1e-6)
    assert z0.item() == pytest.approx(trainer._metrics["eval"]["kl"][-1], abs=1e-6)

    def answer(ids, mask):
        return tiny_tokenizer.decode([t for t, m in zip(ids, mask) if m]).replace("<|im_end|>", "").strip()

    # the pairing: TRL's KL sequence i holds answer i-1 (rotation within the batch), as ours does;
    # both cut sequences at max_length (keep_start), so a KL answer is a prefix of the answer it took
    def took(kl_texts, sources):
        return all(len(k) > 20 and s.startswith(k.rstrip("\ufffd")) for k, s in zip(kl_texts, sources))

    texts = [k.completion[0]["content"].strip() for k in items]
    trl_kl = [answer(i, m) for i, m in zip(batch["KL_input_ids"].tolist(), batch["KL_completion_mask"].tolist())]
    assert took(trl_kl, [texts[i - 1] for i in range(4)]) and not took(trl_kl, texts)
    enc, _ = encode_kto(tiny_tokenizer, items, 192, eos_ids(tiny_tokenizer), batch_size=4, seed=0)
    assert len({e.group for e in enc}) == 1  # one batch of 4, in our seeded order
    ours_kl = [answer(e.kl.input_ids, e.kl.mask) for e in enc]
    ours_src = [e.source.completion[0]["content"].strip() for e in enc]
    assert took(ours_kl, [ours_src[i - 1] for i in range(4)]) and not took(ours_kl, ours_src)
