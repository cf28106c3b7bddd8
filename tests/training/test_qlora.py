"""QLoRA on CPU (bitsandbytes 0.50.2 runs NF4 there): train a 4-bit base + LoRA through the real
recipe, merge into the base reloaded in float32, export GGUF, and compare logits.

"The QLoRA model" is the 4-bit base with the saved adapter (NF4 quantisation is deterministic, so
reloading it gives the model that was trained). The merged model cannot equal it exactly: it adds
the same LoRA update to the unquantised weights. The bound is the quantisation error itself,
|logits(base fp32) - logits(base NF4)| on the same tokens, widened by the adapter's relative
effect (a first-order argument, in the test; figures in docs/training.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

pytest.importorskip("bitsandbytes")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def qlora_run(tmp_path_factory, tiny_model_dir):
    from iceburg.config import TrainingConfig
    from iceburg.training.finetuner import ICEBURGFineTuner

    out = tmp_path_factory.mktemp("qlora")
    cfg = TrainingConfig(model_type="surveyor", output_dir=str(out), output_name="q", use_qlora=True,
                         use_rslora=True, max_steps=6, learning_rate=3e-3, max_seq_length=256,
                         num_threads=2, export_formats=["gguf"], quantization=["f32"])
    return ICEBURGFineTuner(cfg).train()


def _probe_ids(tiny_model_dir) -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    chat = [{"role": "user", "content": "What does the evidence say about sea ice decline?"},
            {"role": "assistant", "content": "Satellite records since 1979 show a steady decline."}]
    return tok.apply_chat_template(chat, tokenize=True, return_dict=False)


def _logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float().numpy()


def test_plan_and_training_used_4bit_weights(qlora_run):
    assert qlora_run.plan["use_qlora"] and qlora_run.plan["device"] == "cpu"
    assert qlora_run.eval_loss_after < qlora_run.eval_loss_before, qlora_run
    adapter_cfg = json.loads((qlora_run.adapter_dir / "adapter_config.json").read_text())
    assert adapter_cfg["use_rslora"] is True and adapter_cfg["use_dora"] is False


def test_merged_checkpoint_is_full_precision_with_base_names(qlora_run, tiny_model_dir):
    with safe_open(str(Path(tiny_model_dir) / "model.safetensors"), "pt") as f:
        base_keys = set(f.keys())
    with safe_open(str(qlora_run.merged_dir / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        dtypes = {f.get_tensor(k).dtype for k in keys}
    assert keys == base_keys and dtypes == {torch.float32}  # no absmax / quant_map / packed uint8
    assert "quantization_config" not in json.loads((qlora_run.merged_dir / "config.json").read_text())


def test_merged_and_gguf_match_the_qlora_model_within_quantisation_error(qlora_run, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from iceburg.export.gguf_verify import _llama_logits, _load_llama
    from iceburg.training.model import qlora_load_kwargs

    ids = _probe_ids(tiny_model_dir)
    nf4 = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32,
                                               **qlora_load_kwargs("cpu", torch.float32))
    base_nf4 = _logits(nf4, ids)
    qlora = PeftModel.from_pretrained(nf4, qlora_run.adapter_dir).eval()
    l_qlora = _logits(qlora, ids)
    base32 = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    l_base32 = _logits(base32, ids)
    quant_err = np.abs(l_base32 - base_nf4).max()
    lora32 = PeftModel.from_pretrained(base32, qlora_run.adapter_dir).eval()
    l_lora32 = _logits(lora32, ids)
    merged = AutoModelForCausalLM.from_pretrained(qlora_run.merged_dir, dtype=torch.float32)
    l_merged = _logits(merged, ids)
    gguf = next(Path(p) for p in qlora_run.export_paths["gguf"] if p.endswith("f32.gguf"))
    l_gguf = _llama_logits(_load_llama(gguf, n_ctx=len(ids) + 8, n_threads=2), ids)

    merged_vs_qlora = np.abs(l_merged - l_qlora).max()
    # NF4's effect on the logits at the base (d0) and at the adapted point (d1 = merged - QLoRA). Both
    # come from the same weight perturbation E = W - dequant(NF4(W)) (the adapter is identical in
    # the two models), so to first order d1 = J(W + dW) E and d0 = J(W) E: their sizes may differ
    # only by the relative change the adapter makes to the network, r = |LoRA effect| / |logits|.
    # The bound |d1| <= (1 + r) |d0| (L2 over every logit) is that first-order argument, replacing
    # an empirical "2x the max-abs quantisation error" (measured: |d1|/|d0| = 0.999, r = 0.145).
    d0, d1 = l_base32 - base_nf4, l_merged - l_qlora
    r = float(np.linalg.norm(l_lora32 - l_base32) / np.linalg.norm(l_base32))
    figures = dict(quant_err=quant_err, merge_exact=np.abs(l_merged - l_lora32).max(),
                   merged_vs_qlora=merged_vs_qlora, gguf_vs_merged=np.abs(l_gguf - l_merged).max(),
                   gguf_vs_qlora=np.abs(l_gguf - l_qlora).max(),
                   argmax=(l_merged.argmax(-1) == l_qlora.argmax(-1)).mean(),
                   lora_effect=np.abs(l_qlora - base_nf4).max())
    figures.update(l2_d0=np.linalg.norm(d0), l2_d1=np.linalg.norm(d1), r=r)
    print("qlora logits:", {k: round(float(v), 5) for k, v in figures.items()})
    assert figures["lora_effect"] > 0.05  # the adapter changed the model, so the comparison means something
    assert figures["merge_exact"] < 1e-4  # folding B@A into fp32 weights is exact
    assert figures["gguf_vs_merged"] < 1e-3  # F32 GGUF limit (iceburg/export/gguf_verify.py)
    assert 0.02 < r < 0.5  # the adapter moved the logits, and little enough for a first-order argument
    assert (1 - r) * figures["l2_d0"] <= figures["l2_d1"] <= (1 + r) * figures["l2_d0"]
    # GGUF vs QLoRA <= |d1| + |GGUF - merged| (triangle inequality), so the two checks above cover it
    assert figures["argmax"] >= 0.9


def test_dora_and_rslora_reach_peft(tiny_model_dir):
    from iceburg.config import TrainingConfig
    from iceburg.hardware import plan_training
    from iceburg.training.model import apply_lora, load_model

    cfg = TrainingConfig(use_dora=True, use_rslora=True, lora_r=4, lora_alpha=8)
    plan = plan_training(tiny_model_dir, cfg)
    model = apply_lora(load_model(tiny_model_dir, cfg, plan), plan, cfg)
    q = model.base_model.model.model.layers[0].self_attn.q_proj
    assert "default" in q.lora_magnitude_vector  # DoRA's learned magnitude
    assert q.scaling["default"] == pytest.approx(8 / 4 ** 0.5)  # rsLoRA: alpha / sqrt(r), not alpha / r
