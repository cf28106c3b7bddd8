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


@pytest.mark.parametrize("offset", [-2, 3, 11])
def test_split_overflow_keeps_every_supervised_token_once(tok, offset):
    """overflow="split": consecutive windows of `length` tokens whose concatenation is the whole
    conversation (windows without an assistant token left out), where truncation keeps one."""
    from iceburg.training.encoding import encode_all, encode_record

    eos = eos_ids(tok)
    full = encode(tok, Record(messages=CONV), 4096, eos)
    length = full.mask.index(True) + offset  # offset < 0: the first window holds no assistant token
    rec = Record(messages=CONV, source="r", line=1)
    parts = encode_record(tok, rec, length, eos, "split")
    assert len(parts) > 1 and all(len(p.input_ids) <= length and any(p.mask) for p in parts)
    assert [p.part for p in parts] == sorted(p.part for p in parts) and (parts[0].part == 1) == (offset > 0)
    assert all(p.id == ("r:1" if p.part == 1 else f"r:1#part{p.part}") for p in parts)
    assert not any(p.truncated for p in parts)
    windows = {(p.part - 1) * length: p for p in parts}
    for a in range(0, len(full.input_ids), length):  # each window is the full example's slice
        if a in windows:
            assert windows[a].input_ids == full.input_ids[a:a + length]
            assert windows[a].mask == full.mask[a:a + length]
        else:
            assert not any(full.mask[a:a + length])  # only system/user tokens were left out
    assert sum(p.supervised for p in parts) == full.supervised
    # truncation (the default) keeps the first window only, and says so
    cut = encode_record(tok, rec, length, eos)
    if offset > 0:
        assert len(cut) == 1 and cut[0].truncated and cut[0].supervised == offset < full.supervised
    else:
        assert cut == []  # nothing supervised fits: encode_all rejects the record with that reason
    # encode_all: every window maps back to its record, and the windows are counted
    enc = encode_all(tok, [rec, Record(messages=CONV[:3], source="r", line=2)], length, eos, overflow="split")
    assert enc.kept == [0] * len(parts) + [1] * (len(enc.examples) - len(parts))
    assert enc.split == sum(p.part > 1 for p in enc.examples) and enc.truncated == 0
    with pytest.raises(ValueError, match="overflow"):
        encode_record(tok, rec, length, eos, "wrap")


def test_overflow_is_validated_with_the_config():
    from iceburg.config import TrainingConfig
    from iceburg.errors import ConfigError

    assert TrainingConfig().overflow == "split"  # measured better than truncation (docs/training.md)
    TrainingConfig(overflow="truncate").validate()
    with pytest.raises(ConfigError, match="overflow"):
        TrainingConfig(overflow="wrap").validate()


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
