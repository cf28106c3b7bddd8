"""Ollama export of a model trained on tool calls: the Modelfile TEMPLATE handles .Tools, proven with Go;
a model whose template has no tool format is exported without it and the report says so."""

from __future__ import annotations

import shutil

import pytest

from iceburg.config import ModelType
from iceburg.export import ollama
from iceburg.export.base import ExportContext
from iceburg.training.tool_render import HERMES_CHATML_TEMPLATE

pytestmark = pytest.mark.skipif(shutil.which("go") is None, reason="needs go (apt-get install golang-go)")


def test_hermes_model_gets_a_tool_template(tiny_model_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "chat_template.jinja").write_text(HERMES_CHATML_TEMPLATE)  # what training on tool data saves
    ctx = ExportContext(model_type=ModelType.SURVEYOR, name="iceburg-surveyor", max_seq_length=512)
    result = ollama.export(model, tmp_path / "out", ctx)
    tools = result.report["tools"]
    assert tools["supported"] and tools["status"].startswith("verified"), tools
    template = dict(ollama.parse_modelfile((tmp_path / "out" / "Modelfile").read_text()))["template"]
    assert "{{ range .Tools }}" in template and "<tool_response>" in template
    assert "tools: verified" in (tmp_path / "out" / "README.ollama.md").read_text()


def test_model_without_tool_format_is_exported_without_and_says_so(tiny_model_dir, tmp_path):
    ctx = ExportContext(model_type=ModelType.SURVEYOR, name="iceburg-surveyor", max_seq_length=512)
    result = ollama.export(tiny_model_dir, tmp_path, ctx)
    assert not result.report["tools"]["supported"]
    assert "no tool format" in result.report["tools"]["status"]
    assert ".Tools" not in dict(ollama.parse_modelfile((tmp_path / "Modelfile").read_text()))["template"]
