"""`iceburg serve`: llama-cpp-python's server over a run's GGUF, on a loopback port."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from iceburg.errors import IceburgError, MissingDependencyError
from iceburg.serve import require
from iceburg.serve.server import resolve_serve_target

from serve_helpers import FORCE_SEARCH, TOOLS

pytestmark = pytest.mark.llama  # a real llama.cpp server (conftest skips without it)


def test_serve_answers_with_the_gguf_template_and_tools(served, client):
    models = client.get(served.url + "/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["iceburg-tiny-q8_0"]
    body = {"model": "anything", "messages": [{"role": "user", "content": "What do we know about sleep?"}],
            "max_tokens": 16, "temperature": 0}
    a = client.post(served.url + "/v1/chat/completions", json=body).json()
    b = client.post(served.url + "/v1/chat/completions", json=body).json()
    # greedy: the same answer twice; some text came back within the budget
    assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"] != ""
    assert a["usage"]["completion_tokens"] <= 16
    # the GGUF's own ChatML template renders the prompt: 13 template tokens around the question
    # would differ under llama-2's [INST] format; the prompt token count pins the template down
    from transformers import AutoTokenizer

    from iceburg.models.tiny import ensure_tiny_model

    tok = AutoTokenizer.from_pretrained(ensure_tiny_model())
    ids = tok.apply_chat_template(body["messages"], add_generation_prompt=True, tokenize=True, return_dict=False)
    assert a["usage"]["prompt_tokens"] == len(ids)
    call = client.post(served.url + "/v1/chat/completions",
                       json={**body, "max_tokens": 48, "tools": TOOLS, "tool_choice": FORCE_SEARCH}).json()
    calls = call["choices"][0]["message"]["tool_calls"]
    assert calls[0]["function"]["name"] == "search"
    assert json.loads(calls[0]["function"]["arguments"])["topic"] in ("sleep", "memory")


def test_run_folder_target_and_errors(tiny_gguf, tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "merged")
    (run / "config.json").write_text(json.dumps({"model_type": "iceburg-surveyor"}))
    with pytest.raises(IceburgError, match="export-only"):  # a run without a GGUF export
        resolve_serve_target(run)
    (run / "exports" / "gguf").mkdir(parents=True)
    shutil.copy(tiny_gguf, run / "exports" / "gguf" / "surveyor-q8_0.gguf")
    target = resolve_serve_target(run)
    assert (target.gguf.name, target.name, target.run_dir) == ("surveyor-q8_0.gguf", "iceburg-surveyor", run)
    assert resolve_serve_target(tiny_gguf, name="x").name == "x"
    with pytest.raises(IceburgError, match="no such"):
        resolve_serve_target(tmp_path / "missing")
    with pytest.raises(IceburgError, match="not a .gguf"):
        resolve_serve_target(run / "config.json")
    with pytest.raises(MissingDependencyError, match=r"pip install 'iceburg\[serve\]'"):
        require(("iceburg_no_such_module",), "iceburg collect", "pip install 'iceburg[serve]'")
    proc = subprocess.run([sys.executable, "-m", "iceburg.app", "serve", str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.splitlines()[-1].startswith("error: ")


def test_template_check_reads_the_header_and_warns_only_without_a_template(caplog):
    """`iceburg serve` warns when the GGUF has no tokenizer.chat_template (llama.cpp would fall back to
    llama-2's format); a real vocab-only GGUF from llama.cpp has none, the embedded SmolLM2 GGUF has one."""
    import logging

    from iceburg.base_models.embedded import embedded_gguf_path
    from iceburg.serve.server import ServeTarget, _check_template
    from iceburg.testing.llama_cpp_assets import vocab_path

    with caplog.at_level(logging.WARNING, logger="iceburg.serve.server"):
        _check_template(ServeTarget(gguf=embedded_gguf_path("smollm2-135m"), name="smollm2"))
        assert "no tokenizer.chat_template" not in caplog.text
        _check_template(ServeTarget(gguf=vocab_path("llama-bpe"), name="vocab"))
    assert "no tokenizer.chat_template" in caplog.text
