"""GRPO on MLX (mlx[cpu] on Linux): on a fixed batch of prompts, completions and rewards, and the
same LoRA weights in both backends, the MLX log-probabilities, loss (grpo, dr_grpo, dapo; KL off and
on) and LoRA gradients equal iceburg's torch GRPO ones (which equal TRL 1.16's, tests/grpo/test_loss.py).
Then `--backend mlx --objective grpo` through the library path on iceburg-tiny: per-reward metrics in
metrics.jsonl, a stop after step 3 and a resume that reproduces step 3, the SFT exports."""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest
import torch

from callbacks import StopAt

from iceburg.training.grpo import GrpoArgs, answer_mask, combine_rewards, completion_logps, group_advantages, grpo_loss, left_pad
from iceburg.training.mlx_backend import preload_openblas

preload_openblas()  # before mlx_lm imports mlx (the importorskip below), as the backend does
pytest.importorskip("mlx_lm")

from tests.preference.conftest import lora_model  # noqa: E402

G, C = 4, 12  # group size, completion width (as tests/grpo/test_loss.py)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # PEFT "all-linear" here
# fp32 in both backends; only the order of the sums differs (BLAS matmuls, logsumexp, the loss sums).
# Measured on the 2-core Xeon (1 thread), 2026-12-06: log-probabilities max |diff| 6.2e-6; losses
# max |diff| 2.2e-7 (losses 0.03-0.12; the torch/TRL test's bound is 1e-5); KL relative 2.3e-6; LoRA
# gradients max |diff| 3.4e-7 against a largest gradient of 0.12-0.23 (1.5e-6 relative). The bounds sit
# 4-7x above those and far below any real difference (a wrong mask, normalisation or reference
# moves the loss by > 1e-2).
LOGP_TOL, LOSS_TOL, KL_REL_TOL, GRAD_REL_TOL = 3e-5, 1e-6, 1e-5, 1e-5


@pytest.fixture(scope="module")
def batch(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    eos = tok.eos_token_id
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True,
                                       return_dict=False) for q in ("What causes tides?", "Summarise the evidence.")]
    assert len(prompts[0]) != len(prompts[1])  # torch's batch is left-padded; MLX runs one group at a time
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    prompt_ids, prompt_mask = left_pad([p for p in prompts for _ in range(G)], pad)
    comp = torch.randint(10, min(len(tok), 200), (2 * G, C), generator=torch.Generator().manual_seed(0))
    for i, at in enumerate([3, 11, 5, 7, 20, 2, 9, 0]):  # answers of varied length; 20: never stops
        if at < C:
            comp[i, at] = eos
            comp[i, at + 1:] = pad
    rpf = torch.tensor([[1.0, 0.5], [0.0, 0.2], [0.5, 0.9], [1.0, 0.1],
                        [0.3, float("nan")], [0.3, float("nan")], [0.9, float("nan")], [0.0, float("nan")]])
    adv = group_advantages(combine_rewards(rpf, torch.tensor([1.0, 0.5])), G)
    return dict(prompts=prompts, prompt_ids=prompt_ids, prompt_mask=prompt_mask, comp=comp,
                mask=answer_mask(comp, {eos}), adv=adv)


@pytest.fixture(scope="module")
def models(tiny_model_dir, tmp_path_factory):
    """The torch PEFT model (non-zero LoRA B, so policy != reference) and an mlx-lm model holding
    the same LoRA weights (r 8, alpha 16, every projection)."""
    from iceburg.training.mlx_backend import apply_lora_mlx, load_mlx_model, load_peft_weights

    peft = lora_model(tiny_model_dir, random_b=True)
    init = {k.replace(".default", ""): v.detach().numpy().copy() for k, v in peft.named_parameters() if "lora_" in k}
    mlx_model = apply_lora_mlx(load_mlx_model(tiny_model_dir, tmp_path_factory.mktemp("mlx")), 8, 16, TARGETS, 0.0)
    load_peft_weights(mlx_model, init)
    peft.eval()
    mlx_model.eval()
    return peft, mlx_model


def _mlx_logps(mlx_model, batch, ref=False):
    import mlx.core as mx

    from iceburg.training.mlx_grpo import completion_logps_mlx, reference_logps_mlx

    comp = mx.array(batch["comp"].numpy().astype(np.int32))
    if ref:
        return reference_logps_mlx(mlx_model, batch["prompts"], G, comp, GrpoArgs())
    return completion_logps_mlx(mlx_model, batch["prompts"], G, comp)


def test_log_probabilities_and_reference_equal_torch(models, batch):
    peft, mlx_model = models
    args = (batch["prompt_ids"], batch["prompt_mask"], batch["comp"], batch["mask"])
    with torch.no_grad():
        logps = completion_logps(peft, *args)
        with peft.disable_adapter():
            ref = completion_logps(peft, *args)
    m = batch["mask"].bool()
    ours, ours_ref = np.array(_mlx_logps(mlx_model, batch)), np.array(_mlx_logps(mlx_model, batch, ref=True))
    assert np.abs(ours[m.numpy()] - logps[m].numpy()).max() < LOGP_TOL
    assert np.abs(ours_ref[m.numpy()] - ref[m].numpy()).max() < LOGP_TOL
    assert (logps - ref)[m].abs().max() > 0.05  # the adapter really changes the policy: the KL is not 0 = 0


def _torch_loss_and_grads(peft, batch, gargs, offset):
    args = (batch["prompt_ids"], batch["prompt_mask"], batch["comp"], batch["mask"])
    with torch.no_grad(), peft.disable_adapter():
        ref = completion_logps(peft, *args)
    peft.zero_grad(set_to_none=True)
    logps = completion_logps(peft, *args)
    loss, m = grpo_loss(logps, logps.detach() + offset, ref if gargs.beta else None, batch["adv"], batch["mask"],
                        gargs, batch["mask"].sum())
    loss.backward()
    grads = {k.replace(".default", ""): p.grad.numpy().copy() for k, p in peft.named_parameters() if "lora_" in k}
    return loss.item(), m, grads


def _mlx_loss_and_grads(mlx_model, batch, gargs, offset):
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    from iceburg.training.mlx_grpo import completion_logps_mlx, grpo_loss_mlx

    comp, ref = mx.array(batch["comp"].numpy().astype(np.int32)), _mlx_logps(mlx_model, batch, ref=True)
    mask, adv = (mx.array(batch[k].numpy()) for k in ("mask", "adv"))
    off = mx.array(offset.numpy())

    def fn(model):
        logps = completion_logps_mlx(model, batch["prompts"], G, comp)
        return grpo_loss_mlx(logps, mx.stop_gradient(logps) + off, ref if gargs.beta else None, adv, mask, gargs,
                             float(batch["mask"].sum()))

    (loss, kl, clip), g = nn.value_and_grad(mlx_model, fn)(mlx_model)
    grads = {}
    for name, arr in tree_flatten(g):  # mlx-lm's lora_a (in, r) / lora_b (r, out) -> PEFT's transposes
        module, leaf = name.rsplit(".", 1)
        grads[f"base_model.model.{module}.{'lora_A' if leaf == 'lora_a' else 'lora_B'}.weight"] = np.array(arr).T
    return float(loss), float(kl), float(clip), grads


@pytest.mark.parametrize("loss_type,beta", [("grpo", 0.0), ("dr_grpo", 0.04), ("dapo", 0.04), ("grpo", 0.5),
                                            ("dapo", 0.0), ("dr_grpo", 0.0)])
def test_loss_and_gradients_equal_torch(models, batch, loss_type, beta):
    peft, mlx_model = models
    gargs = GrpoArgs(group=G, loss_type=loss_type, beta=beta, max_completion_length=C)
    # an "old" policy apart from the current one, so the clipped branch is exercised (as test_loss.py)
    offset = torch.linspace(-0.4, 0.4, batch["comp"].numel()).view_as(batch["comp"])
    t_loss, t_m, t_grads = _torch_loss_and_grads(peft, batch, gargs, offset)
    m_loss, m_kl, m_clip, m_grads = _mlx_loss_and_grads(mlx_model, batch, gargs, offset)
    assert abs(t_loss) > 1e-3 and t_m["clip_ratio/region_mean"] > 0  # a real loss; the clip bites
    assert m_loss == pytest.approx(t_loss, abs=LOSS_TOL)
    assert m_clip == pytest.approx(t_m["clip_ratio/region_mean"], abs=1e-7)  # a count ratio: exact but rounding
    if beta:
        assert t_m["kl"] > 0.01 and m_kl == pytest.approx(t_m["kl"], rel=KL_REL_TOL)
    assert sorted(m_grads) == sorted(t_grads)
    scale = max(np.abs(g).max() for g in t_grads.values())
    assert scale > 1e-4  # the loss reaches the LoRA weights
    worst = max(np.abs(m_grads[k] - t_grads[k]).max() for k in t_grads)
    assert worst < GRAD_REL_TOL * scale, (worst, scale)


# -- the recipe on --backend mlx -----------------------------------------------------------------

@pytest.fixture
def user_rewards(tmp_path, monkeypatch):
    """A reward with spread inside each group (the tiny model's answers never pass the truth filter
    nor stop in 16 tokens, so the built-ins alone give zero advantages), as tests/grpo/test_run.py."""
    (tmp_path / "tiny_rewards_mlx.py").write_text(textwrap.dedent("""
        def vowels(prompt, completion, record):
            return sum(ch in "aeiou" for ch in completion) / max(1, len(completion))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("tiny_rewards_mlx", None)


def _cfg(out, **kw):
    from iceburg.config import TrainingConfig

    # 5 steps of 1 prompt x 4 answers of <= 16 tokens, checkpoint every 2, KL on, LoRA dropout 0.05
    # (the default, so the per-step dropout seed matters on resume); no exports beyond the merge
    settings = dict(model_type="surveyor", objective="grpo", backend="mlx", output_dir=str(out), output_name="r",
                    max_steps=5, save_steps=2, batch_size=4, gradient_accumulation_steps=1, max_seq_length=640,
                    max_completion_length=16, grpo_beta=0.04, learning_rate=5e-3, num_threads=1,
                    reward=["tiny_rewards_mlx:vowels"], export_formats=[])
    return TrainingConfig(**{**settings, **kw})


def _numbers(m: dict) -> dict:
    return {k: v for k, v in m.items()
            if k not in ("elapsed_s", "peak_rss_mib", "supervised_tokens", "supervised_tokens_per_s")}


@pytest.mark.slow
def test_grpo_on_mlx_runs_resumes_and_reports_every_reward(tmp_path, tiny_model_dir, user_rewards):
    from iceburg.training.finetuner import ICEBURGFineTuner

    stopper = StopAt(3)
    with pytest.raises(KeyboardInterrupt):
        ICEBURGFineTuner(_cfg(tmp_path, grpo_eval_samples=2), callbacks=[stopper]).train()
    run = tmp_path / "r"
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state == {"step": 2, "format": "mlx"}
    resumed = StopAt(-1)
    # --grpo-eval-samples 2: the sampled held-out rewards on MLX's sampler too
    result = ICEBURGFineTuner(_cfg(tmp_path, resume=True, grpo_eval_samples=2), callbacks=[resumed]).train()
    assert result.resumed_from_step == 2 and result.steps == 5 and sorted(resumed.steps) == [3, 4, 5]
    # step 3 sampled, scored and trained exactly as the interrupted run did (sampling key and dropout
    # seed from (seed, step), adapter and AdamW state from the checkpoint); 1e-5: fp32 rounding only
    assert stopper.batches[2] == resumed.batches[0]
    assert _numbers(resumed.steps[3]) == pytest.approx(_numbers(stopper.steps[3]), rel=1e-5, abs=1e-6)

    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = {x["step"]: x for x in lines if x.get("type") == "train"}
    assert sorted(train)[-3:] == [3, 4, 5]
    for s in (3, 4, 5):  # every reward reported on its own, beside the KL and the answer lengths
        assert {"rewards/truth/mean", "rewards/format/mean", "rewards/vowels/mean", "reward", "reward_std", "kl",
                "clip_ratio/region_mean", "completions/mean_length"} <= set(train[s]), s
    assert any(train[s]["kl"] > 1e-6 for s in (3, 4, 5))  # the policy moved off the reference
    assert json.loads((run / "plan.json").read_text())["backend"] == "mlx"
    out = json.loads((run / "result.json").read_text())
    assert out["objective"] == "grpo" and out["success"] and (run / "merged" / "model.safetensors").exists()
    assert set(out["preference"]["after"]) >= {"format", "vowels"}
    sampled, greedy = out["preference"]["sampled"], out["preference"]["per_prompt"]
    assert sampled["samples"] == 2 and set(sampled["before"]) == set(out["preference"]["before"])
    for side in ("before", "after"):
        assert len(sampled["per_prompt"][side]["vowels"]) == len(greedy[side]["vowels"]) > 0
    assert not (run / "mlx-work").exists()
