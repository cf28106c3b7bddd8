"""Shared fixtures: the bundled preference pairs encoded for iceburg-tiny, and a fresh LoRA model."""

from __future__ import annotations

import pytest
import torch

from iceburg.data import SAMPLE_DIR
from iceburg.preference.data import read_preferences


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def sample_pairs():
    """Every bundled pair: mined (refusal / loop / truncated / vague) and hand-written, all types."""
    pairs = list(read_preferences(sorted((SAMPLE_DIR / "preference").glob("*_mined.jsonl")) +
                                  sorted((SAMPLE_DIR / "preference").glob("*_pairs.jsonl"))))
    assert len(pairs) >= 60
    return pairs


@pytest.fixture(scope="session")
def make_lora(tiny_model_dir):
    """A factory: `make_lora(random_b=False)` -> a fresh iceburg-tiny LoRA model."""
    return lambda **kw: lora_model(tiny_model_dir, **kw)


@pytest.fixture(scope="session")
def lora_on():
    """`lora_on(model_dir)`: the same LoRA setup on another base (SmolLM2)."""
    return lora_model


def lora_model(model_dir, seed: int = 0, random_b: bool = False):
    """iceburg-tiny with a LoRA adapter on every linear layer (r 8). `random_b` gives the adapter
    non-zero weights so policy and reference differ from the first step."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(model, cfg)
    if random_b:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.05)
    return model
