"""Ollama export on the real tiny model: Modelfile beside a GGUF, TEMPLATE proven with Go."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from iceburg.config import SYSTEM_PROMPTS, ModelType
from iceburg.errors import ExportError
from iceburg.export import chat_templates as ct
from iceburg.export import ollama
from iceburg.export.base import ExportContext

GO = shutil.which("go")
# User text that would break a naive Modelfile writer: a closing """ , quotes, a Go action, newlines.
NASTY_SYSTEM = 'You are ICEBURG.\nQuote sources as """source""" and say "I am unsure" when unsure.\n{{ .Prompt }}'


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ollama")
    ctx = ExportContext(model_type=ModelType.SURVEYOR, name="iceburg-surveyor", system_prompt=NASTY_SYSTEM,
                        max_seq_length=1536)
    return ollama.export(tiny_model_dir, out, ctx), out, ctx


def test_modelfile_points_at_gguf_beside_it(exported):
    result, out, ctx = exported
    cmds = ollama.parse_modelfile((out / "Modelfile").read_text())
    assert cmds[0] == ("model", "./iceburg-surveyor-q8_0.gguf")
    assert (out / "iceburg-surveyor-q8_0.gguf").read_bytes()[:4] == b"GGUF"
    assert {p.name for p in result.files} == {"Modelfile", "iceburg-surveyor-q8_0.gguf", "README.ollama.md"}


def test_modelfile_content(exported):
    result, out, ctx = exported
    cmds = ollama.parse_modelfile((out / "Modelfile").read_text())
    values = {}
    for name, value in cmds:
        values.setdefault(name, []).append(value)
    # iceburg-tiny is ChatML: its Ollama template, its end-of-turn token, the tokenizer's EOS.
    assert result.report["template"]["family"] == "chatml"
    assert values["template"] == [ct.FAMILIES[0].go({})]
    assert "<|im_end|>" in values["stop"]
    assert values["num_ctx"] == ["1536"]
    # The escaped SYSTEM reads back exactly (Ollama's parser rules), """ and all.
    assert values["system"] == [NASTY_SYSTEM]


def test_default_system_prompt_is_the_model_types(tiny_model_dir, tmp_path):
    # Reuses a GGUF already in out_dir instead of writing another.
    from iceburg.export.gguf import write_gguf

    gguf = write_gguf(tiny_model_dir, tmp_path / "iceburg-oracle-q8_0.gguf", "q8_0")
    ctx = ExportContext(model_type=ModelType.ORACLE, name="iceburg-oracle", verify=False)
    result = ollama.export(tiny_model_dir, tmp_path, ctx)
    assert result.report["gguf_reused"] and gguf.exists()
    cmds = dict(ollama.parse_modelfile((tmp_path / "Modelfile").read_text()))
    assert cmds["system"] == SYSTEM_PROMPTS[ModelType.ORACLE]
    assert result.report["template_check"]["status"] == "not verified: verification turned off"


@pytest.mark.go
@pytest.mark.skipif(GO is None, reason="go not found (apt-get install golang-go)")
def test_template_proven_with_go(exported, tiny_model_dir):
    """The built-in proof ran: Go's text/template == apply_chat_template on all probe chats."""
    result, out, ctx = exported
    check = result.report["template_check"]
    assert check["verified"] and check["cases"] == 12 and not check["mismatches"], check
    # And independently here: render the Modelfile's TEMPLATE and SYSTEM with Go, compare with
    # the tokenizer's own apply_chat_template on a fresh chat.
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    cmds = dict(ollama.parse_modelfile((out / "Modelfile").read_text()))
    chat = [{"role": "user", "content": "Is the claim supported?"}, {"role": "assistant", "content": "Partly."},
            {"role": "user", "content": "Which part is not?"}]
    go = ct.go_render([{"template": cmds["template"], "system": cmds["system"], "messages": chat}])[0]
    expected = tok.apply_chat_template([{"role": "system", "content": cmds["system"]}, *chat], tokenize=False,
                                       add_generation_prompt=True)
    assert go == {"output": expected, "error": ""}


def test_not_verified_says_why_without_go(monkeypatch):
    """Without Go on PATH the report says so plainly (PATH emptied; nothing else is replaced)."""
    monkeypatch.setenv("PATH", "")
    match = ct.match_family(lambda m: "".join(f"<|im_start|>{x['role']}\n{x['content']}<|im_end|>\n" for x in m)
                            + "<|im_start|>assistant\n", {"bos": None, "eos": "<|im_end|>"}, "S", False)
    check = ct.verify_template(match.go_template, match.probes)
    assert check == {"verified": False, "status": ct.NOT_VERIFIED_NO_GO, "cases": 12}
    assert "apt-get install golang-go" in check["status"]


def test_readme_has_commands(exported):
    result, out, ctx = exported
    text = (out / "README.ollama.md").read_text()
    assert "ollama create iceburg-surveyor -f Modelfile" in text and "ollama run iceburg-surveyor" in text


def test_adapter_variant(tiny_model_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(str(tmp_path / "adapter"))
    ctx = ExportContext(name="iceburg-base", adapter_dir=tmp_path / "adapter", base_model="qwen2.5:0.5b", verify=False)
    result = ollama.export(tiny_model_dir, tmp_path / "out", ctx)
    cmds = ollama.parse_modelfile((tmp_path / "out" / "Modelfile.adapter").read_text())
    assert cmds[:2] == [("model", "qwen2.5:0.5b"), ("adapter", "./iceburg-base-adapter")]
    assert {p.name for p in (tmp_path / "out" / "iceburg-base-adapter").iterdir()} == \
        {"adapter_config.json", "adapter_model.safetensors"}
    assert "ollama create iceburg-base-adapter -f Modelfile.adapter" in (tmp_path / "out" / "README.ollama.md").read_text()
    assert "adapter_variant" in result.report


def test_unknown_chat_template_refused_before_any_file(tiny_model_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "chat_template.jinja").write_text(  # Alpaca-style: no family iceburg translates
        "{% for m in messages %}### {{ m['role'] | capitalize }}:\n{{ m['content'] }}\n\n{% endfor %}"
        "{% if add_generation_prompt %}### Assistant:\n{% endif %}")
    with pytest.raises(ExportError, match="matches none of the chat families"):
        ollama.export(model, tmp_path / "out", ExportContext(name="x"))
    assert not any((tmp_path / "out").glob("*"))


@pytest.mark.parametrize("value", [
    'plain', 'He said "hi"', 'ends with a quote"', '"""starts with triple', 'a\nb """c""" d',
    'one line with """ inside', "tab\tinside", "  leading and trailing  ", 'a line ends with "\nthe last with """',
    'one line ending with """',
])
def test_modelfile_values_round_trip(value):
    text = ollama.render_modelfile([("model", "./m.gguf"), ("system", value), ("stop", value)], "header")
    assert ollama.parse_modelfile(text) == [("model", "./m.gguf"), ("system", value), ("stop", value)]


@pytest.mark.parametrize("value,why", [
    ('line one ends with """\nline two', "no escape"),
    ('line one ends with """  \nline two "', "no escape"),
    ("bell\x07", "characters Ollama drops"),
])
def test_unrepresentable_values_are_refused(value, why):
    with pytest.raises(ExportError, match=why):
        ollama.modelfile_value(value, "SYSTEM")
