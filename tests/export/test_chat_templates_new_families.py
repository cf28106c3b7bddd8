"""Ollama TEMPLATEs for the issue-32 families, on their real Jinja templates from llama.cpp's sdist
(iceburg.testing.llama_cpp_assets, cached): Qwen3.5 and SmolLM3 (`chatml-block`: ChatML with a
learned system block / generation prompt), gpt-oss (`harmony`), Granite 4 (`granite`) and
Ministral 3 (`ministral3`). transformers' renderer renders the Jinja side, Go's text/template the
Ollama side; no weights are needed.
"""

from __future__ import annotations

import shutil

import pytest
from transformers.utils.chat_template_utils import render_jinja_template

from iceburg.errors import ExportError
from iceburg.export import chat_templates as ct
from iceburg.testing.llama_cpp_assets import template_path

needs_go = pytest.mark.skipif(shutil.which("go") is None, reason="go is not installed (make go)")

# template (sdist models/templates/<name>.jinja), bos, eos, runtime adds BOS, expected family, a text
# only that template writes (what the family learned from it)
CASES = {
    "qwen3.5": ("Qwen3.5-4B", None, "<|im_end|>", False, "chatml-block", "<|im_start|>assistant\n<think>\n"),
    "smollm3": ("HuggingFaceTB-SmolLM3-3B", None, "<|im_end|>", False, "chatml-block", "Reasoning Mode: /think"),
    "gpt-oss": ("openai-gpt-oss-120b", None, "<|return|>", False, "harmony", "<|start|>developer<|message|>"),
    "granite4": ("ibm-granite-granite-4.0", None, "<|end_of_text|>", False, "granite",
                 "You are a helpful assistant. Please ensure responses are professional"),
    "ministral3": ("mistralai-Ministral-3-14B-Reasoning-2512", "<s>", "</s>", True, "ministral3",
                   "[SYSTEM_PROMPT]# HOW YOU SHOULD THINK AND ANSWER"),
}
SYSTEM = 'You are ICEBURG. Never write """ in answers.'


def _match(name: str) -> ct.TemplateMatch:
    template, bos, eos, adds_bos, *_ = CASES[name]
    text = template_path(template).read_text(encoding="utf-8")

    def render(messages):
        return render_jinja_template([messages], chat_template=text, add_generation_prompt=True,
                                     bos_token=bos or "", eos_token=eos or "")[0][0]

    return ct.match_family(render, {"bos": bos, "eos": eos}, SYSTEM, adds_bos)


@pytest.mark.parametrize("name", list(CASES))
def test_new_family_identified(name):
    *_, eos, _adds, family, learned = CASES[name]
    m = _match(name)
    assert (m.family, m.system_supported, len(m.probes)) == (family, True, 12)
    assert eos in m.stops
    assert any(learned in m.params[k] for k in ("sys_open", "default", "gen")), m.params  # learned, not assumed
    # with and without the Modelfile SYSTEM, single and multi-turn
    assert {p.name for p in m.probes} == {"single-turn", "single-turn+system", "multi-turn", "multi-turn+system",
                                          "reasoning-history", "reasoning-history+system"}


@pytest.mark.go
@needs_go
@pytest.mark.parametrize("name", list(CASES))
def test_new_family_go_template_renders_like_jinja(name):
    """The proof: Go's text/template output equals the Jinja rendering byte for byte."""
    m = _match(name)
    check = ct.verify_template(m.go_template, m.probes)
    assert check["verified"] and check["cases"] == 12 and not check["mismatches"], check


@pytest.mark.go
@needs_go
def test_a_wrong_learned_block_fails_the_go_proof():
    """The Go proof judges the learned parts too: SmolLM3's template with its metadata block edited
    ("Reasoning Mode: /no_think") fails against the family learned from the real one."""
    m = _match("smollm3")
    wrong = m.go_template.replace("Reasoning Mode: /think", "Reasoning Mode: /no_think")
    assert wrong != m.go_template
    check = ct.verify_template(wrong, m.probes)
    assert not check["verified"] and len(check["mismatches"]) == 12  # every probe carries the block


def test_plain_chatml_keeps_its_family():
    """The new ChatML variant comes after plain ChatML: Qwen3's template still reads `chatml`."""
    text = template_path("Qwen-Qwen3-0.6B").read_text(encoding="utf-8")

    def render(messages):
        return render_jinja_template([messages], chat_template=text, add_generation_prompt=True,
                                     bos_token="", eos_token="<|im_end|>")[0][0]

    assert ct.match_family(render, {"bos": None, "eos": "<|im_end|>"}, SYSTEM, False).family == "chatml"


def test_a_template_of_no_family_is_still_refused():
    """A turn format none of the families writes (Cohere Command R7B's; Gemma 4's was the example until
    Gemma 4 got its own Go-proven family) is refused by name, never guessed."""
    text = template_path("CohereForAI-c4ai-command-r7b-12-2024-tool_use").read_text(encoding="utf-8")

    def render(messages):
        return render_jinja_template([messages], chat_template=text, add_generation_prompt=True,
                                     bos_token="<bos>", eos_token="<eos>")[0][0]

    with pytest.raises(ExportError, match="matches none of the chat families"):
        ct.match_family(render, {"bos": "<bos>", "eos": "<eos>"}, SYSTEM, True)
