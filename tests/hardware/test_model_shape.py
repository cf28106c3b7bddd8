"""The meta-device reading of a model against the same model built for real."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from iceburg.errors import IceburgError
from iceburg.hardware import read_model_shape
from iceburg.hardware.model_shape import activation_probe


def _real_saved_bytes(model_dir, r, targets, batch, seq, dropout):
    """Bytes autograd saves in a real CPU forward pass (parameters excluded)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=dropout, target_modules=targets))
    model.train()
    resident = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    seen: dict[int, int] = {}

    def pack(t):
        key = t.untyped_storage().data_ptr()
        if key not in resident:
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        return t

    ids = torch.randint(0, model.config.vocab_size, (batch, seq))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids)
    return sum(seen.values()), sum(p.numel() for p in model.parameters())


def test_param_count_and_names_match_the_real_model(small_qwen_dir, gpt2_dir):
    shape = read_model_shape(small_qwen_dir)
    real = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(small_qwen_dir))
    assert shape.param_count == sum(p.numel() for p in real.parameters())  # tied lm_head counted once
    assert shape.linear_names == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert shape.num_layers == 2 and shape.hidden_size == 128 and shape.vocab_size == 512
    gpt2 = read_model_shape(gpt2_dir)  # Conv1D projections with other names
    assert gpt2.linear_names == ["c_attn", "c_proj", "c_fc"]
    assert gpt2.lora_params(8, ["c_attn"]) == 2 * 8 * (128 + 3 * 128)


@pytest.mark.parametrize("dropout", [0.0, 0.05])
def test_activation_probe_equals_real_cpu_saved_tensors(small_qwen_dir, dropout):
    shape = read_model_shape(small_qwen_dir)
    per_layer, outside = activation_probe(shape, torch.float32, 2, 64, 8, shape.linear_names, dropout)
    real, _ = _real_saved_bytes(small_qwen_dir, 8, shape.linear_names, 2, 64, dropout)
    estimate = shape.num_layers * per_layer + outside
    assert abs(estimate - real) / real < 0.02, (estimate, real)


def test_activation_probe_is_linear_in_batch(small_qwen_dir):
    shape = read_model_shape(small_qwen_dir)
    one = activation_probe(shape, torch.float32, 1, 128, 8, shape.linear_names)
    four = activation_probe(shape, torch.float32, 4, 128, 8, shape.linear_names)
    assert abs(four[0] - 4 * one[0]) / four[0] < 0.02


def test_missing_config(tmp_path):
    with pytest.raises(IceburgError, match="no config.json"):
        read_model_shape(tmp_path)


def test_untied_embeddings_counted(tmp_path, small_qwen_dir):
    cfg = AutoConfig.from_pretrained(small_qwen_dir)
    cfg.tie_word_embeddings = False
    cfg.save_pretrained(tmp_path)
    shape = read_model_shape(tmp_path)
    assert shape.embedding_params == 2 * 512 * 128


def test_embedded_tiny_model_counted_without_loading(tiny_model_dir):
    shape = read_model_shape(tiny_model_dir)
    real = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert shape.param_count == sum(p.numel() for p in real.parameters())
    assert set(shape.linear_names) == {name.rsplit(".", 1)[-1] for name, m in real.named_modules()
                                       if isinstance(m, torch.nn.Linear) and m is not real.get_output_embeddings()}


def test_activation_probe_models_iceburgs_loop(small_qwen_dir):
    """With `kept_positions`, the probe equals what autograd saves in iceburg's own loss
    (training/trainer._forward_loss: logits only at supervised positions), not HF's full loss."""
    from peft import LoraConfig, get_peft_model

    from iceburg.training.encoding import Example
    from iceburg.training.packing import collate, pack
    from iceburg.training.trainer import TrainArgs, _forward_loss, weighted_token_loss

    shape = read_model_shape(small_qwen_dir)
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(small_qwen_dir)),
                           LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=shape.linear_names))
    model.train()
    resident = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    seen: dict[int, int] = {}

    def keep(t):
        if t.untyped_storage().data_ptr() not in resident:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    # both rows supervise their last 32 of 64 tokens: logits at 32 positions per row
    examples = [Example(list(range(10 + i, 74 + i)), [t >= 32 for t in range(64)], f"e{i}") for i in range(2)]
    batch = collate(pack(examples, 64, packing=False), 0)
    model._iceburg_head_apart = False  # the general path (`logits_to_keep`), which the probe models
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        _forward_loss(model, batch, TrainArgs(), weighted_token_loss)
    real = sum(seen.values())
    # single-process CPU runs call the head apart and fuse it into the loss: they save less
    model._iceburg_head_apart, seen = None, {}
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        _forward_loss(model, batch, TrainArgs(), weighted_token_loss)
    assert sum(seen.values()) < real
    per_layer, outside = activation_probe(shape, torch.float32, 2, 64, 8, shape.linear_names, 0.0,
                                          kept_positions=32)
    full_layer, full_outside = activation_probe(shape, torch.float32, 2, 64, 8, shape.linear_names, 0.0)
    full = shape.num_layers * full_layer + full_outside
    estimate = shape.num_layers * per_layer + outside
    assert abs(estimate - real) / real < 0.02, (estimate, real)
    assert estimate < full  # fewer logits than HF's loss keeps
