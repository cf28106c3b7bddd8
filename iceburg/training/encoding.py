"""Render conversations with the tokenizer's own chat template and mark the assistant tokens.

Loss is computed on assistant turns only. Most real chat templates (Llama 3, Qwen2.5, Mistral)
carry no `{% generation %}` markers, so `return_assistant_tokens_mask` cannot be used. Instead
(written by hand, because no library does this for arbitrary templates) we find each assistant
turn's characters by prefix rendering: the text of `messages[:i]` with the generation prompt is a
prefix of the text of `messages[:i+1]`; the difference is the assistant turn as the template
writes it (content plus end-of-turn marker). Trailing whitespace after the end-of-turn marker
(ChatML's newline) is not supervised. Tokens are mapped to characters through the fast
tokenizer's offsets, so the supervised tokens decode to exactly the assistant text + EOS.

If a template does not emit an end-of-turn token after the assistant content, the tokenizer's
EOS is appended (and supervised) so the model learns to stop. When the end-of-turn token is
followed by text the template writes only at the end of a conversation (Phi-3.5 appends its
`<|endoftext|>` when no generation prompt follows), the turn ends at the first end-of-turn token.

Real templates that need more (docs/families.md):
- templates that rewrite history: Qwen3 writes `<think>\n\n</think>\n\n` only into the last
  assistant turn and drops it from earlier ones; Mistral v0.3 / Nemo put the system text into the
  last user turn only (and leave it out once an assistant turn ends the chat). No single rendering
  holds every turn as the model produces it, so such a record becomes one example per assistant
  turn (`encode_record`): example i is the inference prompt for turn i (`messages[:i]` + generation
  prompt) followed by turn i as the template writes it, with only turn i supervised (earlier turns
  are context). That is exactly the text the model sees and writes at inference. Cost: the context
  of turn i is encoded again in each later example.
- templates whose generation prompt ends with text the written turn lacks (Gemma 4's empty thought
  channel `<|channel>thought\\n<channel|>` after `<|turn>model\\n`): the turn is trained as the model
  produces it after that prompt, the written turn after its header (`_after_prompt`), one example
  per turn.
- templates without a system role (Gemma 2 raises "System role not supported"): the system text
  opens the first user message ("system\n\nuser"), as Gemma 3's own template and Ollama's Gemma
  template do.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace

from ..errors import IceburgError
from ..data.tool_calls import has_parallel_calls
from ..data.tool_calls import split_parallel_calls as split_parallel_calls_of
from ..records import Reason, Record, fold_system_text
from .reasoning import FIELDS, bind_vars, channel_turn, forced_turn, prepare_messages, reasoning_format, text_diff
from .tool_render import bind_tools, call_hole, check_calls_rendered, render_with_tools

logger = logging.getLogger(__name__)

# Used only when the base model has no chat template (original design's format).
CHATML_FALLBACK = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@dataclass
class Example:
    """One tokenised conversation: ids, per-token supervision mask, and its origin."""

    input_ids: list[int]
    mask: list[bool]  # True = assistant token that carries loss
    id: str
    weight: float = 1.0
    truncated: bool = False
    part: int = 1  # window of a longer conversation (overflow="split"; split_overflow)

    @property
    def supervised(self) -> int:
        return sum(self.mask)


def ensure_chat_template(tokenizer) -> bool:
    """Give the tokenizer ChatML when it has no template. Returns True if one was added."""
    if getattr(tokenizer, "chat_template", None):
        return False
    special = ["<|im_start|>", "<|im_end|>"]
    missing = [t for t in special if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    tokenizer.chat_template = CHATML_FALLBACK
    logger.warning("base tokenizer has no chat template: using ChatML%s",
                   f" (added tokens {missing}; embeddings will be resized)" if missing else "")
    return True


def eos_ids(tokenizer, generation_config=None) -> set[int]:
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if generation_config is not None and generation_config.eos_token_id is not None:
        e = generation_config.eos_token_id
        ids.update(int(x) for x in (e if isinstance(e, (list, tuple)) else [e]))
    return ids


def _render(tokenizer, messages, add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


class HistoryRewriteError(IceburgError):
    """The template renders an earlier turn differently once later turns follow (see module doc)."""


def fold_system(tokenizer, messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """`messages`, with the system text moved into the first user message when the template has
    no system role (it raises on one); unchanged otherwise."""
    from jinja2.exceptions import TemplateError

    if not messages or messages[0]["role"] != "system":
        return messages
    try:
        _render(tokenizer, messages[:2], False)
        return messages
    except TemplateError as e:
        if "system" not in str(e).lower():
            raise
    return fold_system_text(messages)


def _turn_end(tokenizer, upto: str, content_end: int, eos_texts: list[str]) -> int:
    """End of an assistant turn in `upto`: just after the first end-of-turn token that follows the
    content, else the rendered text without trailing whitespace."""
    hits = [upto.find(t, content_end) + len(t) for t in eos_texts if t and upto.find(t, content_end) >= 0]
    return min(hits) if hits else len(upto.rstrip())


def _eos_texts(tokenizer, eos: set[int] | None) -> list[str]:
    ids = set(eos or ()) | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())
    return [t for t in tokenizer.convert_ids_to_tokens(sorted(ids)) if t]


def _turn_span(tokenizer, messages: list[dict[str, str]], i: int, eos_texts: list[str]) -> tuple[str, int, int]:
    """(text, start, end) of assistant turn i as the conversation's end: the prompt the model sees
    at inference (`messages[:i]` + generation prompt) followed by the turn as the template writes it.

    The turn's own text is what `messages[:i+1]` adds to the prompt. Templates that put the system
    text into the last user turn (Mistral v0.3 / Nemo) drop it once an assistant turn follows;
    their turn text is then taken from the same conversation without the system message.
    """
    prefix = _render(tokenizer, messages[:i], True)
    upto = _render(tokenizer, messages[: i + 1], False)
    if not upto.startswith(prefix) and messages and messages[0]["role"] == "system":
        alt_prefix = _render(tokenizer, messages[1:i], True)
        alt_upto = _render(tokenizer, messages[1: i + 1], False)
        if alt_upto.startswith(alt_prefix):
            upto = prefix + alt_upto[len(alt_prefix):]
    upto = channel_turn(prefix, upto, messages[i])  # Gemma 4 thinking on: reasoning before the turn (reasoning.py)
    if not upto.startswith(prefix):  # R1 distills: the prompt opens a think block (reasoning.py)
        upto = forced_turn(prefix, upto, messages[i]) or upto
    if not upto.startswith(prefix):  # Gemma 4 thinking off: the prompt ends with an empty thought channel
        upto = _after_prompt(tokenizer, messages, i, prefix, upto) or upto
    if not upto.startswith(prefix):  # gpt-oss: a later turn rewrites an earlier one (below)
        upto = _rewritten_turn(tokenizer, messages, i, prefix) or upto
    if not upto.startswith(prefix):
        raise HistoryRewriteError(
            "the chat template does not render conversations prefix-consistently: the generation prompt "
            "differs from the start of the assistant turn that follows it, so assistant turns cannot be located "
            "for assistant-only loss; pass a tokenizer whose template writes `<assistant header>` + content + "
            "`<end of turn>` for each assistant message")
    content = messages[i]["content"].strip()
    after = _after_reasoning(upto, len(prefix), messages[i])
    at = upto.find(content, after) if content else after
    if at < 0:
        raise IceburgError("the chat template changes or leaves out assistant content when rendering (e.g. "
                           "text beside a tool call, which Llama 3.x does not write); assistant-only masking "
                           "needs the content verbatim")
    return upto, len(prefix), _turn_end(tokenizer, upto, _after_calls(upto, at + len(content), messages[i]), eos_texts)


def _after_calls(upto: str, start: int, message: dict) -> int:
    """The end of the turn's last written call name after `start` (or `start`): the turn ends at the
    first end-of-turn token after it, not at one that closes a message before the calls (gpt-oss
    writes its analysis message, `<|end|>`, before the call, which ends with `<|call|>`)."""
    for call in message.get("tool_calls") or ():
        name = call.get("function", call).get("name") or ""
        at = upto.find(name, start) if name else -1
        start = at + len(name) if at >= 0 else start
    return start


_TURN_PROBE = "iceburg-turn-probe-3"


def _rewritten_turn(tokenizer, messages: list[dict], i: int, prefix: str) -> str | None:
    """Turn i under a template whose rendering of earlier turns changes once turn i follows (gpt-oss
    writes a tool call's analysis message only while no final answer follows it): the inference
    prompt `prefix` (history as the template writes it then), followed by turn i as the template
    writes it at the end of the conversation. The turn starts at the generation prompt's text before
    the point where the conversation and the same one ending in a probe answer part. None when the
    generation prompt is not simply appended to the history."""
    bare = _render(tokenizer, messages[:i], False)
    gen = prefix[len(bare):] if prefix.startswith(bare) else ""
    if not gen:
        return None
    upto = _render(tokenizer, messages[: i + 1], False)
    probe = _render(tokenizer, [*messages[:i], {"role": "assistant", "content": _TURN_PROBE}], False)
    at = upto.rfind(gen, 0, len(os.path.commonprefix([upto, probe])))
    return prefix + upto[at + len(gen):] if at >= 0 else None


def _after_prompt(tokenizer, messages: list[dict], i: int, prefix: str, upto: str) -> str | None:
    """Turn i under a template whose generation prompt ends with text the written turn lacks (Gemma 4
    with thinking off appends the empty thought channel `<|channel>thought\\n<channel|>` to
    `<|turn>model\\n`; the history turn is `<|turn>model\\n` + answer): the model reads the whole
    prompt and writes what follows the turn's header, so the turn is trained as the prompt followed
    by the written turn after its header (issue 25: trained as the model produces it, not refused).
    The header is where two probe answers part; the prompt must hold it and then more. None when the
    history as written differs or the prompt does not extend the header."""
    bare = _render(tokenizer, messages[:i], False)
    probes = [_render(tokenizer, [*messages[:i], {"role": "assistant", "content": c + _TURN_PROBE}], False)
              for c in "AB"]
    cut = len(os.path.commonprefix(probes))
    head = probes[0][len(bare):cut]
    if cut < len(bare) or not (prefix.startswith(bare + head) and upto.startswith(bare + head)):
        return None
    return prefix + upto[cut:] if len(prefix) > cut else None


def _after_reasoning(upto: str, start: int, message: dict) -> int:
    """Where to look for a turn's answer: after its reasoning when the template wrote it (an answer
    that also occurs inside the reasoning must not end the turn there)."""
    for key in FIELDS:
        text = message.get(key)
        at = upto.find(text.strip(), start) if isinstance(text, str) and text.strip() else -1
        if at >= 0:
            return at + len(text.strip())
    return start


def assistant_spans(tokenizer, messages: list[dict[str, str]], eos: set[int] | None = None,
                    holes: list[tuple[int, int]] | None = None, tool_calls: str = "all"
                    ) -> tuple[str, list[tuple[int, int]]]:
    """Full rendered text and the [start, end) character span of each assistant turn; with a
    `holes` list, the call characters `--supervise-tool-calls tool_calls` leaves unsupervised are
    appended to it (`_turn_holes`).

    Raises HistoryRewriteError when the template rewrites earlier turns (use `encode_record`)."""
    messages = fold_system(tokenizer, messages)
    eos_texts = _eos_texts(tokenizer, eos)
    full = _render(tokenizer, messages, False)
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        upto, start, end = _turn_span(tokenizer, messages, i, eos_texts)
        if not full.startswith(upto[:end]):
            raise HistoryRewriteError(
                "the chat template does not render conversations prefix-consistently (it rewrites earlier "
                "turns), so one example per assistant turn is needed (encoding.encode_record)")
        spans.append((start, end))
        if holes is not None:
            holes += _turn_holes(tokenizer, messages, i, eos_texts, upto, (start, end), tool_calls)
    return full, spans


OVERFLOW = ("truncate", "split")
TOOL_CALLS = ("all", "name", "none")


def _call_variants(message: dict, mode: str) -> list[dict]:
    """The assistant message with its calls changed so that rendering shows where they are written:
    "none" without its calls (the whole call text moves), "name" with call j's arguments emptied
    (only that call's arguments move), one variant per call."""
    if mode == "none":
        return [{k: v for k, v in message.items() if k != "tool_calls"}]
    out = []
    for j, call in enumerate(message["tool_calls"]):
        calls = list(message["tool_calls"])
        calls[j] = dict(call, function=dict(call["function"], arguments={}))
        out.append(dict(message, tool_calls=calls))
    return out


def _turn_holes(tokenizer, messages: list[dict], i: int, eos_texts: list[str], upto: str,
                span: tuple[int, int], mode: str) -> list[tuple[int, int]]:
    """The characters of assistant turn i's tool calls that `--supervise-tool-calls mode` leaves
    unsupervised: where the turn's rendering (`_turn_span`, as trained) changes when its calls are
    removed ("none") or one call's arguments are emptied ("name": the arguments as written, braces
    and the token that opens them included), cut at token starts where the cut is ambiguous
    (`tool_render.call_hole`), clipped to the turn before its end-of-turn token (gpt-oss ends a call
    turn with `<|call|>`, which must still be learned)."""
    if mode == "all" or not messages[i].get("tool_calls"):
        return []
    if mode not in TOOL_CALLS:
        raise ValueError(f"supervise_tool_calls must be one of {TOOL_CALLS}, got {mode!r}")
    start, end = span
    end -= next((len(t) for t in eos_texts if upto[:end].endswith(t)), 0)
    starts = [s for s, _ in tokenizer(upto, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]]
    holes = []
    for variant in _call_variants(messages[i], mode):
        other = _turn_span(tokenizer, [*messages[:i], variant], i, eos_texts)[0]
        a, b = text_diff(upto, other)
        if a < b:
            a, b = call_hole(upto, other, (a, b), starts, mode)
        a, b = max(a, start), min(b, end)
        if a < b:
            holes.append((a, b))
    return holes


TRAIN_ON = ("all", "last", "final")


def trained_turns(messages: list[dict], train_on: str = "all") -> list[int]:
    """Which assistant turns carry loss (positions among the assistant turns, from 0): "all"; "last"
    (the last one; earlier turns are context); "final" (answers only, not the turns that call tools)."""
    if train_on not in TRAIN_ON:
        raise ValueError(f"train_on must be one of {TRAIN_ON}, got {train_on!r}")
    turns = [m for m in messages if m["role"] == "assistant"]
    if train_on == "last":
        return [len(turns) - 1] if turns else []
    return [k for k, m in enumerate(turns) if train_on == "all" or not m.get("tool_calls")]


def encode(tokenizer, record: Record, max_length: int, eos: set[int], overflow: str = "truncate",
           train_on: str = "all", supervise_tool_calls: str = "all") -> Example | None:
    """Tokenise one record; None when no assistant token fits within `max_length`.

    `overflow="split"` returns the whole conversation, however long (`split_overflow` cuts it).
    `train_on` picks the supervised turns (`trained_turns`); `supervise_tool_calls` ("all" | "name" |
    "none") which characters of their tool calls carry loss (`_turn_holes`).
    Raises HistoryRewriteError for templates that rewrite history: `encode_record` handles those."""
    holes: list[tuple[int, int]] = []
    text, spans = render_with_tools(lambda tok, msgs: assistant_spans(tok, msgs, eos, holes, supervise_tool_calls),
                                    tokenizer, record)
    spans = [spans[k] for k in trained_turns(record.messages, train_on)]
    limit = max_length if overflow == "truncate" else None
    return _encode_text(tokenizer, text, spans, record, record.id, limit, eos, holes)


def split_overflow(ex: Example, max_length: int) -> list[Example]:
    """A conversation longer than `max_length` as consecutive windows of `max_length` tokens (TRL's
    "bfd_split"): the first keeps the example's id, window k > 1 is `<id>#part<k>`; windows without
    a supervised token are left out. Each window trains as its own sequence (attention restarts),
    so a continuation sees its own window only. Every supervised token lands in exactly one window,
    where truncation would drop the ones past `max_length`."""
    if len(ex.input_ids) <= max_length:
        return [ex]
    out = []
    for k, a in enumerate(range(0, len(ex.input_ids), max_length)):
        mask = ex.mask[a:a + max_length]
        if any(mask):
            out.append(Example(input_ids=ex.input_ids[a:a + max_length], mask=mask,
                               id=ex.id if k == 0 else f"{ex.id}#part{k + 1}", weight=ex.weight,
                               part=k + 1))
    return out


def encode_record(tokenizer, record: Record, max_length: int, eos: set[int],
                  overflow: str = "truncate", reasoning: str = "keep", train_on: str = "all",
                  supervise_tool_calls: str = "all") -> list[Example]:
    """One example per record, or one per assistant turn when the template rewrites history.

    Per-turn examples are `<record id>#turn<k>` (k counts assistant turns from 1) and carry the
    record's weight; examples without a supervised token within `max_length` are left out.
    `overflow`: "truncate" cuts a conversation at `max_length`; "split" keeps the rest as further
    examples (`split_overflow`). `reasoning` ("keep" | "drop"): each turn's reasoning as the
    template writes it, or none (`reasoning.py`); `train_on`: the supervised turns (`trained_turns`);
    `supervise_tool_calls`: "all" (a call's name and arguments carry loss), "name" (its arguments are
    context), "none" (the whole call text is context; the turn's text, reasoning and end still train).
    """
    if overflow not in OVERFLOW:
        raise ValueError(f"overflow must be one of {OVERFLOW}, got {overflow!r}")
    fmt = reasoning_format(tokenizer)
    messages, _ = prepare_messages(record.messages, fmt, reasoning)
    opts = {"overflow": overflow, "train_on": train_on, "tool_calls": supervise_tool_calls}
    tok = bind_vars(tokenizer, fmt, messages)
    if messages is record.messages:
        return _encode_prepared(tok, record, max_length, eos, **opts)
    prepared = replace(record, messages=messages)
    examples = _encode_prepared(tok, prepared, max_length, eos, **opts)
    for ex in examples:  # a record without a source is named by its content hash: keep the input's
        ex.id = record.id + ex.id[len(prepared.id):]
    return examples


def _encode_prepared(tokenizer, record: Record, max_length: int, eos: set[int], overflow: str,
                     train_on: str, tool_calls: str) -> list[Example]:
    limit = max_length if overflow == "truncate" else None  # None: whole, then split_overflow

    def windows(ex: Example | None) -> list[Example]:
        return [] if ex is None else [ex] if limit is not None else split_overflow(ex, max_length)

    try:
        return windows(encode(tokenizer, record, max_length, eos, overflow, train_on, tool_calls))
    except HistoryRewriteError:
        pass
    tok = bind_tools(tokenizer, record.tools)  # each turn's prompt offers the record's tools too
    messages = fold_system(tok, record.messages)
    eos_texts = _eos_texts(tokenizer, eos)
    out: list[Example] = []
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    trained = set(trained_turns(messages, train_on))
    for k, i in enumerate(turns, 1):
        if k - 1 not in trained:
            continue
        text, start, end = _turn_span(tok, messages, i, eos_texts)
        check_calls_rendered(text, [(start, end)], [messages[i]], f"{record.id} (turn {k})")
        holes = _turn_holes(tok, messages, i, eos_texts, text, (start, end), tool_calls)
        out.extend(windows(_encode_text(tokenizer, text, [(start, end)], record, f"{record.id}#turn{k}", limit,
                                        eos, holes)))
    return out


def _starts_in(a: int, b: int, holes: list[tuple[int, int]]) -> bool:
    """A token [a, b) belongs to a hole when its first character does (a token ending the text before
    a call, Qwen's ".\n" before `<tool_call>`, stays the text's)."""
    return b > a and any(h0 <= a < h1 for h0, h1 in holes)


def _encode_text(tokenizer, text: str, spans: list[tuple[int, int]], record: Record, ex_id: str,
                 max_length: int | None, eos: set[int], holes: list[tuple[int, int]] | None = None) -> Example | None:
    """Tokenise `text`, supervising the tokens of `spans` (an end of turn added where a span does not
    end with one) except the tokens that start inside `holes` (tool calls left out of the loss,
    `_turn_holes`): they stay in the sequence as context."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    offsets = enc["offset_mapping"]
    mask = [False] * len(ids)
    hidden = [bool(holes) and _starts_in(a, b, holes or []) for a, b in offsets]
    # A token is supervised when it overlaps an assistant span; a token straddling the boundary
    # (e.g. " Se" after a template's "assistant: ") carries the first characters of the answer.
    si = 0
    for t, (a, b) in enumerate(offsets):
        while si < len(spans) and a >= spans[si][1]:
            si += 1
        if si < len(spans) and b > spans[si][0] and a < spans[si][1] and b > a:
            mask[t] = True
    # Ensure every assistant turn ends with an end-of-turn token the model can learn to emit.
    if eos:
        out_ids, out_mask, out_hidden = [], [], []
        for t in range(len(ids)):
            out_ids.append(ids[t])
            out_mask.append(mask[t])
            out_hidden.append(hidden[t])
            turn_ends = mask[t] and (t + 1 == len(ids) or not mask[t + 1])
            if turn_ends and ids[t] not in eos:
                out_ids.append(min(eos))
                out_mask.append(True)
                out_hidden.append(False)
        ids, mask, hidden = out_ids, out_mask, out_hidden
    mask = [m and not h for m, h in zip(mask, hidden)]
    truncated = max_length is not None and len(ids) > max_length
    if truncated:
        ids, mask = ids[:max_length], mask[:max_length]
    if not any(mask):
        return None
    return Example(input_ids=ids, mask=mask, id=ex_id, weight=record.weight, truncated=truncated)


@dataclass
class EncodedSet:
    examples: list[Example]
    kept: list[int]  # index into the input records of each example (repeated for per-turn examples)
    truncated: int
    split: int = 0  # examples that are a later window of a longer conversation (overflow="split")
    refused: int = 0  # records the chat template refused (rejects.jsonl, code template_refused)
    reasoning_dropped: int = 0  # records whose reasoning the template cannot write (--reasoning keep)
    split_calls: int = 0  # records trained with parallel calls split into single ones


def encode_all(tokenizer, records: list[Record], max_length: int, eos: set[int], rejects=None,
               weights: list[float] | None = None, skip=None, overflow: str = "truncate",
               strict: bool = False, reasoning: str = "keep", train_on: str = "all",
               split_parallel_calls: bool = False, supervise_tool_calls: str = "all") -> EncodedSet:
    """Encode every record (with its curriculum weight); a record with no assistant token within
    `max_length`, one `skip(record)` gives a reason for, or one the chat template refuses is
    dropped through `rejects` (stage "encode", codes too_long / no_tool_format / template_refused),
    never silently and never stopping the run; `strict=True` (`--strict`) raises on a refusal
    instead. A record under a template that rewrites history gives one example per assistant turn
    (`encode_record`); with `overflow="split"` a conversation longer than `max_length` gives one
    per window. `reasoning` and `train_on`: see `encode_record` (a record `train_on` leaves no
    turn of is dropped with code no_target_turn), `supervise_tool_calls` too. `split_parallel_calls`:
    a record the template refuses for its parallel calls is tried again with them as consecutive
    single calls."""
    out = EncodedSet([], [], 0)
    opts = {"overflow": overflow, "reasoning": reasoning, "train_on": train_on,
            "supervise_tool_calls": supervise_tool_calls}
    cannot_write = reasoning == "keep" and reasoning_format(tokenizer).kind == "none"
    for i, rec in enumerate(records):
        if weights is not None:
            rec.weight = float(weights[i])
        examples, was_split = _split_or_reason(tokenizer, rec, max_length, eos, skip, opts, strict,
                                               split_parallel_calls)
        out.split_calls += was_split
        if isinstance(examples, Reason):
            out.refused += examples.code == "template_refused"
            if rejects is not None:
                rejects.drop("encode", rec, [examples])
            continue
        out.reasoning_dropped += cannot_write and any(m.get("reasoning") for m in rec.messages)
        for ex in examples:
            out.truncated += ex.truncated
            out.split += ex.part > 1
            out.examples.append(ex)
            out.kept.append(i)
    if out.refused:
        logger.warning("the chat template refused %d of %d record(s): written to rejects.jsonl (stage encode, "
                       "code template_refused); --strict stops at the first instead", out.refused, len(records))
    if out.reasoning_dropped:
        logger.warning("%d record(s) carry reasoning the base's chat template cannot write: trained without it "
                       "(docs/data.md; a base whose template renders reasoning keeps it)", out.reasoning_dropped)
    return out


def _split_or_reason(tokenizer, rec: Record, max_length: int, eos: set[int], skip, opts: dict[str, str],
                     strict: bool, split: bool) -> tuple[list[Example] | Reason, bool]:
    """`_encode_or_reason`, and with `split` a record refused for its parallel calls once more with
    them as consecutive single calls; True when that split made it trainable."""
    parallel = split and has_parallel_calls(rec.messages)
    examples = _encode_or_reason(tokenizer, rec, max_length, eos, skip, opts, strict and not parallel)
    if not (parallel and isinstance(examples, Reason) and examples.code == "template_refused"):
        return examples, False
    single = replace(rec, messages=split_parallel_calls_of(rec.messages))
    examples = _encode_or_reason(tokenizer, single, max_length, eos, skip, opts, strict)
    if isinstance(examples, Reason):
        return examples, False
    for ex in examples:  # named after the input record, not the split copy's content hash
        ex.id = rec.id + ex.id[len(single.id):]
    return examples, True


def _encode_or_reason(tokenizer, rec: Record, max_length: int, eos: set[int], skip, opts: dict[str, str],
                      strict: bool) -> list[Example] | Reason:
    """The record's examples, or the reason it cannot train (`Reason`, for rejects.jsonl)."""
    from jinja2.exceptions import TemplateError

    reason = skip(rec) if skip is not None else None  # e.g. tool calls the template cannot write
    if reason:
        return Reason("no_tool_format", reason)
    if not trained_turns(rec.messages, opts["train_on"]):
        return Reason("no_target_turn", f"--train-on {opts['train_on']} selects no assistant turn of this "
                                        "record (every assistant turn calls tools)")
    try:
        examples = encode_record(tokenizer, rec, max_length, eos, **opts)
    except (TemplateError, IceburgError) as e:
        # a template's own raise_exception (Llama 3.x: "only supports single tool-calls at once"),
        # a call it does not write, a turn it rewrites: that record cannot be rendered as trained
        message = str(e) if isinstance(e, IceburgError) else f"{rec.id}: the chat template refuses this record: {e}"
        if strict:
            raise IceburgError(f"{message} (--strict is on; drop --strict to write such records to "
                               "rejects.jsonl and train on the rest)") from e
        return Reason("template_refused", message)
    return examples or Reason("too_long", f"no assistant token within max_seq_length={max_length}")
