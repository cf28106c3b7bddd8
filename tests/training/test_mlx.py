"""MLX backend (mlx[cpu] on Linux): same data, loss and schedule as the torch trainer, from the same
initial LoRA weights; its adapter, converted to PEFT and merged on torch, equals MLX's fused model."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from iceburg.training.trainer import TrainArgs

pytest.importorskip("mlx_lm")

R, ALPHA, STEPS = 4, 8, 3


@pytest.fixture(scope="module")
def data(tiny_model_dir):
    from iceburg.data.loader import read_records
    from iceburg.training.encoding import encode_all, eos_ids
    from iceburg.training.model import generation_config, load_tokenizer
    from iceburg.config import TrainingConfig

    tok = load_tokenizer(tiny_model_dir, TrainingConfig())
    eos = eos_ids(tok, generation_config(tiny_model_dir))
    sample = Path(__file__).resolve().parents[2] / "iceburg" / "data" / "sample" / "surveyor.jsonl"
    records = list(itertools.islice(read_records([sample]), 10))
    enc = encode_all(tok, records, 192, eos)
    examples = enc.examples
    for i, e in enumerate(examples):
        e.weight = 0.5 + 0.1 * i  # curriculum weights reach the loss in both backends
    return examples[:6], examples[6:], tok.pad_token_id


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir, data):
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    from iceburg.training.mlx_backend import apply_lora_mlx, load_mlx_model, load_peft_weights, train_mlx
    from iceburg.training.trainer import evaluate, train

    train_ex, eval_ex, pad = data
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    args = TrainArgs(epochs=1, max_steps=STEPS, learning_rate=2e-2, warmup_ratio=0.0, micro_batch_size=1,
                     grad_accum=2, max_length=192, packing=False, pad_id=pad, show_progress=False)
    order = lambda epoch: list(range(len(train_ex)))  # noqa: E731
    torch.manual_seed(0)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                          LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=targets,
                                     task_type=TaskType.CAUSAL_LM))
    # PEFT initialises B to zero; give it a seeded non-zero start so both backends start from the
    # same non-trivial adapter
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    init = {k.replace('.default', ''): v.detach().numpy().copy()
            for k, v in peft.named_parameters() if "lora_" in k}
    work = tmp_path_factory.mktemp("mlx")
    mlx_model = apply_lora_mlx(load_mlx_model(tiny_model_dir, work), R, ALPHA, targets, 0.0)
    load_peft_weights(mlx_model, init)
    from iceburg.training.mlx_backend import evaluate_mlx

    before = (evaluate(peft, eval_ex, args), evaluate_mlx(mlx_model, eval_ex, args))
    torch_out = train(peft, train_ex, order, eval_ex, args)
    mlx_out = train_mlx(mlx_model, train_ex, order, eval_ex, args)
    return dict(before=before, torch=torch_out, mlx=mlx_out, mlx_model=mlx_model, work=work, targets=targets)


def test_same_init_same_eval_loss(trained):
    t, m = trained["torch"], trained["mlx"]
    print("eval before (torch, mlx):", trained["before"], "after:", t.eval_history[-1][1], m.eval_history[-1][1],
          "train loss:", t.train_loss, m.train_loss)
    assert abs(trained["before"][0] - trained["before"][1]) < 1e-4
    assert abs(t.eval_history[-1][1] - trained["before"][0]) > 2e-2  # training moved the loss
    # measured: 1.5e-7 apart after 3 steps (fp32 both; summation order differs)
    assert abs(t.eval_history[-1][1] - m.eval_history[-1][1]) < 1e-3
    assert abs(t.train_loss - m.train_loss) < 1e-3 and t.supervised_tokens == m.supervised_tokens


def test_peft_merge_of_mlx_adapter_equals_mlx_fused_model(trained, tiny_model_dir, data):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from iceburg.training.mlx_backend import fused_logits, save_peft_adapter

    adapter = save_peft_adapter(trained["mlx_model"], trained["work"] / "adapter", R, ALPHA,
                                trained["targets"], False, Path(tiny_model_dir))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    ids = data[1][0].input_ids[:64]
    with torch.no_grad():
        hf = merged(input_ids=torch.tensor([ids])).logits[0].numpy()
    diff = np.abs(hf - fused_logits(trained["mlx_model"], ids)).max()
    print("merged-through-PEFT vs MLX fused, max |logit diff|:", diff)
    assert diff < 1e-4  # measured 7.6e-6


def test_finetuner_with_backend_mlx(tmp_path, tiny_model_dir):
    """The whole recipe on --backend mlx: same run folder, adapter in PEFT format, merged model."""
    import json

    from iceburg.config import TrainingConfig
    from iceburg.training.finetuner import ICEBURGFineTuner

    cfg = TrainingConfig(model_type="surveyor", output_dir=str(tmp_path), output_name="m", backend="mlx",
                         max_steps=2, max_seq_length=256, num_threads=2, export_formats=[])
    result = ICEBURGFineTuner(cfg).train()
    run = tmp_path / "m"
    assert json.loads((run / "plan.json").read_text())["backend"] == "mlx"
    for name in ("adapter/adapter_model.safetensors", "adapter/adapter_config.json", "merged/model.safetensors",
                 "metrics.jsonl", "result.json"):
        assert (run / name).exists(), name
    assert not (run / "mlx-work").exists()
    assert result.steps == 2 and result.supervised_tokens > 0
    assert result.eval_loss_after != result.eval_loss_before


def test_backend_mlx_refuses_torch_only_options():
    from iceburg.config import TrainingConfig
    from iceburg.errors import ConfigError

    with pytest.raises(ConfigError, match="--qlora runs on torch only"):
        TrainingConfig(backend="mlx", use_qlora=True).validate()
    assert TrainingConfig(use_qlora=True).resolved_backend() == "torch"
