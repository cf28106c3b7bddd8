"""Assistant-only masks on the real tiny tokenizer: supervised tokens decode to the assistant text."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from iceburg.errors import IceburgError
from iceburg.records import Record
from iceburg.testing.family_matrix import supervised_segments
from iceburg.training.encoding import assistant_spans, encode, ensure_chat_template, eos_ids

CONV = [
    {"role": "system", "content": "You are ICEBURG Surveyor."},
    {"role": "user", "content": "What is the evidence on sleep and memory?"},
    {"role": "assistant", "content": "Several studies (Walker, 2017) suggest consolidation.\n\n- point one"},
    {"role": "user", "content": "And the counter-evidence?"},
    {"role": "assistant", "content": "Effect sizes shrink in preregistered replications."},
]


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)




def test_supervised_tokens_decode_to_assistant_turns_plus_eos(tok):
    ex = encode(tok, Record(messages=CONV), 4096, eos_ids(tok))
    segs = supervised_segments(ex)
    expected = [m["content"] + "<|im_end|>" for m in CONV if m["role"] == "assistant"]
    assert [tok.decode(s) for s in segs] == expected
    # every turn ends with the EOS the model must learn to emit
    assert all(s[-1] == tok.eos_token_id for s in segs)
    # the full sequence is exactly what the chat template renders
    assert tok.decode(ex.input_ids) == tok.apply_chat_template(CONV, tokenize=False)


def test_truncation_keeps_the_start_and_drops_examples_without_assistant_tokens(tok):
    full = encode(tok, Record(messages=CONV), 4096, eos_ids(tok))
    first = full.mask.index(True)
    ex = encode(tok, Record(messages=CONV), first + 3, eos_ids(tok))
    assert ex is not None and len(ex.input_ids) == first + 3 and ex.truncated
    assert ex.input_ids == full.input_ids[: first + 3] and sum(ex.mask) == 3
    assert encode(tok, Record(messages=CONV), first, eos_ids(tok)) is None  # only system/user fit


def test_template_without_eos_gets_eos_appended(tok, tiny_model_dir):
    t = AutoTokenizer.from_pretrained(tiny_model_dir)
    t.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}" \
                      "{% if add_generation_prompt %}assistant: {% endif %}"
    ex = encode(t, Record(messages=CONV[1:3]), 4096, eos_ids(t))
    segs = supervised_segments(ex)
    assert len(segs) == 1 and segs[0][-1] == t.eos_token_id
    # the token straddling "assistant: " + "Several" carries the boundary space
    assert t.decode(segs[0][:-1]).strip() == CONV[2]["content"]


def test_missing_template_falls_back_to_chatml(tiny_model_dir):
    t = AutoTokenizer.from_pretrained(tiny_model_dir)
    t.chat_template = None
    assert ensure_chat_template(t) is True
    text, spans = assistant_spans(t, CONV[1:3])
    assert text.endswith("<|im_start|>assistant\n" + CONV[2]["content"] + "<|im_end|>\n")
    assert text[spans[0][0]:spans[0][1]] == CONV[2]["content"] + "<|im_end|>"


def test_template_that_rewrites_history_is_refused(tiny_model_dir):
    t = AutoTokenizer.from_pretrained(tiny_model_dir)
    # renders only the last two messages: not prefix-consistent
    t.chat_template = "{% for m in messages[-2:] %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
    with pytest.raises(IceburgError, match="prefix-consistently"):
        assistant_spans(t, CONV)
