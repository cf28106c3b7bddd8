"""The exported Ollama TEMPLATE renders a conversation with reasoning the way the model was
trained (Go text/template, the engine Ollama uses, as in the export proof), for the families whose
templates keep a turn's reasoning in its content: SmolLM3 (`<think>`) and Ministral 3 Reasoning
(`[THINK]`). The model's reply, as Ollama hands it back in the history (the trained turn without
its end-of-turn token: these TEMPLATEs do not use `.Thinking`, so Ollama leaves the trace in the
content), followed by the next user turn, must render byte for byte as training's context for the
next turn, generation prompt included; and that text tokenizes to exactly the tokens training
put before the next supervised turn. Real templates (llama-cpp-python sdist) on the family fixtures'
tokenizers."""

from __future__ import annotations

import shutil

import pytest

from iceburg.records import Record
from iceburg.testing.family_matrix import supervised_segments
from iceburg.training.encoding import encode_record
from iceburg.training.reasoning import prepare_messages, reasoning_format

SYSTEM = "You are ICEBURG Surveyor. Cite your sources."  # the Modelfile SYSTEM, and the record's
CHAT = [{"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Is 91 prime?"},
        {"role": "assistant", "content": "No: 91 = 7 x 13.", "reasoning": "Try 7: 7 x 13 = 91."},
        {"role": "user", "content": "And 97?"},
        {"role": "assistant", "content": "Yes, 97 is prime.", "reasoning": "No divisor up to 9."}]


@pytest.mark.skipif(shutil.which("go") is None, reason="the Go proof needs go (apt-get install golang-go)")
@pytest.mark.parametrize("name,family", [("smollm3", "chatml-block"), ("ministral3", "ministral3")])
def test_ollama_template_renders_the_reasoning_history_as_trained(name, family):
    from transformers import AutoTokenizer

    from iceburg.export.chat_templates import go_render
    from iceburg.export.ollama import translate_chat_template
    from iceburg.testing.families import family_tokenizer_dir

    folder = family_tokenizer_dir(name)
    tok = AutoTokenizer.from_pretrained(folder)
    match = translate_chat_template(folder, SYSTEM)
    assert match.family == family
    eos = {tok.eos_token_id}
    (ex,) = encode_record(tok, Record(messages=CHAT), 4096, eos)  # one example: no history rewrite
    first = supervised_segments(ex)[0]
    # training's context for turn 2: everything before its supervised tokens
    second_start = [t for t in range(1, len(ex.mask)) if ex.mask[t] and not ex.mask[t - 1]][1]
    prepared, _ = prepare_messages(CHAT, reasoning_format(tok), "keep")
    reply = prepared[2]["content"]  # what the model was trained to write for turn 1, before its end of turn
    assert reply.startswith(reasoning_format(tok).open) and "Try 7: 7 x 13 = 91." in reply
    assert first == tok(reply + tok.eos_token, add_special_tokens=False)["input_ids"]
    context = tok.apply_chat_template(prepared[:4], tokenize=False, add_generation_prompt=True)
    assert tok(context, add_special_tokens=False)["input_ids"] == ex.input_ids[:second_start]
    if tok.bos_token and context.startswith(tok.bos_token) and not match.bos_in_template:
        context = context[len(tok.bos_token):]  # the runtime adds BOS (llama.cpp), not the TEMPLATE
    request = [{"role": "user", "content": CHAT[1]["content"]}, {"role": "assistant", "content": reply},
               {"role": "user", "content": CHAT[3]["content"]}]
    [result] = go_render([{"template": match.go_template, "system": SYSTEM, "messages": request}])
    assert result["error"] == "" and result["output"] == context
