"""Gemma 4 under its REAL chat template (llama.cpp's copy of google-gemma-4-31B-it, on the gemma4
family fixture's tokenizer): trained on each turn as the model produces it, not refused (issue 25).

- Thinking off (the template's default, and the mode of the exported Ollama template): the
  generation prompt `<|turn>model\\n<|channel>thought\\n<channel|>` ends with an empty thought
  channel that the written history turn (`<|turn>model\\n` answer `<turn|>\\n`) lacks. The example
  is the inference prompt, then the answer and `<turn|>` the model writes after it.
- A record with reasoning renders with thinking on (`<|think|>` in the system turn; the prompt ends
  at `<|turn>model\\n`) and the turn is `<|channel>thought\\n` reasoning `\\n<channel|>` answer
  `<turn|>`: the markers as the template itself writes a kept reasoning (a tool-calling turn).
Every example's context is exactly what `apply_chat_template(..., add_generation_prompt=True)`
gives at inference, and the supervised tokens decode exactly to the turn as Gemma 4 writes it."""

from __future__ import annotations

import pytest

from iceburg.records import Record
from iceburg.testing.family_matrix import supervised_segments
from iceburg.training.encoding import encode_record
from iceburg.training.reasoning import reasoning_format

SYSTEM = {"role": "system", "content": "Answer in one line."}
CHAT = [SYSTEM, {"role": "user", "content": "Is 91 prime?"},
        {"role": "assistant", "content": "No: 91 = 7 x 13.", "reasoning": "Try 7: 7 x 13 = 91."},
        {"role": "user", "content": "And 97?"},
        {"role": "assistant", "content": "Yes, 97 is prime."}]


@pytest.fixture(scope="module")
def gemma4():
    from transformers import AutoTokenizer

    from iceburg.testing.families import family_tokenizer_dir

    return AutoTokenizer.from_pretrained(family_tokenizer_dir("gemma4"))


def _split(tok, ex) -> tuple[str, list[str]]:
    """(the context before the first supervised token, each supervised run decoded)."""
    first = ex.mask.index(True)
    return tok.decode(ex.input_ids[:first]), [tok.decode(s) for s in supervised_segments(ex)]


def _prompt(tok, messages, **template_vars) -> str:
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **template_vars)


def test_the_thought_channel_is_read_from_the_template(gemma4):
    fmt = reasoning_format(gemma4)
    assert (fmt.kind, fmt.open, fmt.close, fmt.toggle) == ("channel", "<|channel>thought\n", "\n<channel|>",
                                                           "enable_thinking")


def test_without_reasoning_each_turn_follows_the_empty_thought_channel(gemma4):
    """Today's refusal (HistoryRewriteError) is gone: turn k is trained after the inference prompt."""
    eos = {gemma4.convert_tokens_to_ids("<turn|>")}
    plain = [{k: v for k, v in m.items() if k != "reasoning"} for m in CHAT]
    exs = encode_record(gemma4, Record(messages=plain, source="g.jsonl", line=1), 4096, eos)
    assert [e.id for e in exs] == ["g.jsonl:1#turn1", "g.jsonl:1#turn2"]
    for ex, i in zip(exs, (2, 4)):
        context, supervised = _split(gemma4, ex)
        assert context == _prompt(gemma4, plain[:i])  # the prompt exactly as at inference
        assert context.endswith("<|turn>model\n<|channel>thought\n<channel|>")
        assert supervised == [plain[i]["content"] + "<turn|>"]
        # and the answer is the turn as the template writes it once the chat goes on
        written = gemma4.apply_chat_template(plain[:i + 1], tokenize=False)
        assert written.endswith("<|turn>model\n" + supervised[0] + "\n")


def test_reasoning_trains_in_the_thought_channel_with_thinking_on(gemma4):
    eos = {gemma4.convert_tokens_to_ids("<turn|>")}
    exs = encode_record(gemma4, Record(messages=CHAT, source="g.jsonl", line=2), 4096, eos)
    assert [_split(gemma4, e)[1] for e in exs] == [
        ["<|channel>thought\nTry 7: 7 x 13 = 91.\n<channel|>No: 91 = 7 x 13.<turn|>"],
        ["<|channel>thought\n<channel|>Yes, 97 is prime.<turn|>"]]  # no reasoning: the empty channel
    bare = [{k: v for k, v in m.items() if k != "reasoning"} for m in CHAT]
    for ex, i in zip(exs, (2, 4)):
        context = _split(gemma4, ex)[0]
        # thinking on: `<|think|>` opens the system turn, earlier reasoning is stripped, as at inference
        assert context == _prompt(gemma4, bare[:i], enable_thinking=True)
        assert context.startswith("<s><|turn>system\n<|think|>\n") and "Try 7" not in context
    # the markers are the template's own: a kept reasoning (a tool-calling turn after the last user)
    call = {"type": "function", "function": {"name": "f", "arguments": {}}}
    kept = gemma4.apply_chat_template([CHAT[1], {"role": "assistant", "content": "", "tool_calls": [call],
                                                 "reasoning_content": "Try 7: 7 x 13 = 91."}], tokenize=False)
    assert "<|turn>model\n<|channel>thought\nTry 7: 7 x 13 = 91.\n<channel|>" in kept


def test_reasoning_drop_trains_the_default_mode(gemma4):
    eos = {gemma4.convert_tokens_to_ids("<turn|>")}
    exs = encode_record(gemma4, Record(messages=CHAT, source="g.jsonl", line=3), 4096, eos, reasoning="drop")
    assert [_split(gemma4, e)[1] for e in exs] == [["No: 91 = 7 x 13.<turn|>"], ["Yes, 97 is prime.<turn|>"]]
    assert "<|think|>" not in _split(gemma4, exs[0])[0]
