"""GRPO fixtures: a fresh iceburg-tiny LoRA model (the preference tests' factory)."""

from __future__ import annotations

import pytest

from tests.preference.conftest import lora_model


@pytest.fixture(scope="session")
def make_lora(tiny_model_dir):
    """`make_lora(random_b=False)` -> a fresh iceburg-tiny LoRA model (r 8, every linear layer)."""
    return lambda **kw: lora_model(tiny_model_dir, **kw)
