"""Quality signals computed on a transcript's assistant text, each with a cited threshold.

Every function here is pure: it reads text and returns named numbers. `TruthFilter` stores them
in `record.signals` under `truth.<name>` and turns the ones past their threshold into reasons.

Sources of the thresholds:
- Repetition (`repetition.py`): the Gopher quality rules, Rae et al. 2021, "Scaling Language Models: Methods,
  Analysis & Insights from Training Gopher", Table A1 (arXiv:2112.11446): duplicate line / paragraph
  fraction 0.30, their character fractions 0.20, top 2/3/4-gram character fraction 0.20/0.18/0.16,
  duplicate 5..10-gram character fraction 0.15 down to 0.10. Gopher applies them to documents of
  at least 50 words; we apply the n-gram rules from the same 50-word minimum (shorter answers give
  meaningless n-gram statistics: "of the" twice in ten words is already 20%).
- Symbols: Gopher's symbol-to-word ratio 0.1 (hash and ellipsis) and "80% of words contain an
  alphabetic character". Markdown headings are not counted as hash symbols, and code blocks,
  tables, URLs and citation markers are removed before these rules (the issue: code, markdown and
  citations are not punished). Gopher's "90% of lines start with a bullet" rule is NOT used: a
  markdown list answer is normal for research agents.
- Truncation: C4 (Raffel et al. 2020, section 2.2) keeps only lines ending in terminal punctuation;
  we apply that only to the *last* line of the final answer, and never to list items, headings or
  table rows, which end without a full stop in ordinary markdown. An odd number of ``` fences
  means the answer stopped inside a code block.
- Refusal / boilerplate phrases: the phrase lists used to clean ShareGPT/WizardLM data of
  "As an AI language model" refusals (ehartford's *_unfiltered datasets, anon8231489123's
  ShareGPT_Vicuna_unfiltered cleaning script); a turn is a refusal only when the phrase opens a
  short turn (< 120 words, measured: every clean sample answer that mentions "I cannot" is longer
  or has it mid-text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .repetition import (  # noqa: F401  (re-exported: the Gopher rules live in repetition.py)
    GOPHER_DUP_NGRAM, GOPHER_LINE, GOPHER_MIN_WORDS, GOPHER_TOP_NGRAM, ngram_repetition, repetition,
    word_arrays)

SYMBOL_WORD_RATIO = 0.10  # Gopher
# Gopher: 80% of words contain an alphabetic character. We count digits as word characters too:
# measured on the bundled samples, numeric research answers ("0.99 / 0.01 = 99", "73.0 ± 1.0")
# fell to 0.72-0.74 alphabetic words while being clean.
ALPHA_WORD_FRAC = 0.80
ELLIPSIS_LINE_FRAC = 0.30  # Gopher: > 30% of lines ending with an ellipsis
EMPTY_WORDS = 3  # fewer words than this is an empty answer ("OK.", "Sure")
SHORT_WORDS = 10  # soft: a research answer under 10 words says almost nothing
REFUSAL_MAX_WORDS = 120
GARBAGE_CHAR_FRAC = 0.01  # replacement/control characters: 1% is already mojibake, never clean text
BOILERPLATE_SHARE = 0.5  # boilerplate sentences make up over half the turn

_FENCE = re.compile(r"```.*?(?:```|\Z)", re.S)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_URL = re.compile(r"https?://\S+|www\.\S+|doi:\S+|10\.\d{4,9}/\S+")
_CITE = re.compile(r"\[\d+(?:[,\u2013-]\s*\d+)*\]|\[\^?\w+\]")
_TABLE_LINE = re.compile(r"^\s*\|.*\|\s*$")
_LIST_OR_HEADING = re.compile(r"^\s*(?:[-*+\u2022]\s|\d+[.)]\s|#{1,6}\s|>\s?)")
_WORD = re.compile(r"\w+")
_PUNCT = str.maketrans({c: " " for c in "!\"#$%&'()*+,-./:;<=>?@[\\]^`{|}~"})
_GARBAGE = re.compile(r"[\ufffd\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ue000-\uf8ff]")
_TERMINAL = ".!?:;)\"'\u201d\u2019*_`]>}|"
# Words a sentence never ends on; a last line ending in one was cut off.
_DANGLING = {"the", "a", "an", "and", "or", "of", "to", "in", "for", "with", "that", "which", "is",
             "are", "was", "were", "be", "by", "on", "at", "as", "from", "but", "because", "this",
             "its", "their", "than", "into", "between", "such", "if", "when", "while"}

REFUSAL = re.compile(
    r"^\W*(?:(?:i['\u2019]m sorry|i am sorry|sorry|unfortunately|i apologi[sz]e)[ ,.!]*(?:but )?)?"
    r"(?:as an ai(?: language model| assistant| model)?[^.]{0,60}?,?\s*)?"
    r"(?:i(?: can(?:no|['\u2019])t| can not| am (?:not able|unable)|['\u2019]m (?:not able|unable)|"
    r" won['\u2019]t(?: be able)?| will not(?: be able)?| must decline| do not feel comfortable|"
    r" don['\u2019]t feel comfortable)(?: to)?\s+(?:help|assist|provide|comply|fulfil+|do (?:that|this)|answer|"
    r"share|generate|create|engage|discuss|support|write|continue|complete|give|offer|browse|access|"
    r"make|tell|recommend|perform|respond|be of (?:help|assistance))"
    r"|(?:that|this)(?:['\u2019]s| is) not something i can (?:help|assist|do|provide|answer))",
    re.I)
# Looser rule for short turns (< 40 words): a first sentence that speaks in the first person and
# states an inability or unwillingness. Added after a held-out phrasing set showed the strict
# pattern alone finds 24% of unseen refusals (bench/truth_accuracy.py). Cost: a short answer such
# as "I cannot find evidence for that." also counts as a refusal (it teaches little either way).
REFUSAL_SHORT_WORDS = 40
_REFUSAL_SELF = re.compile(r"\b(?:i|i['\u2019](?:m|d|ve)|my|me)\b|\bas an ai\b|\bas a (?:large )?language model\b", re.I)
_REFUSAL_CANT = re.compile(
    r"\b(?:can(?:no|['\u2019])t|can not|unable|not able|won['\u2019]t|will not|"
    r"not (?:be )?(?:permitted|allowed|comfortable|in a position|appropriate)|inappropriate|"
    r"(?:have|need|must) to decline|decline|rather not|outside (?:what|the scope)|against my|"
    r"(?:don['\u2019]t|do not) have (?:access|the ability)|not something)\b", re.I)
_FIRST_SENTENCE = re.compile(r"(?<=[.!?])\s")


def is_refusal(turn: str, n_words: int | None = None) -> bool:
    """A turn that refuses instead of answering (strict opening pattern, or a short first-person
    statement of inability)."""
    t = turn.strip()
    n = len(t.split()) if n_words is None else n_words
    if n >= REFUSAL_MAX_WORDS:
        return False
    if REFUSAL.search(t[:300]):
        return True
    if n < REFUSAL_SHORT_WORDS:
        first = _FIRST_SENTENCE.split(t, 1)[0][:250]
        return bool(_REFUSAL_SELF.search(first) and _REFUSAL_CANT.search(first))
    return False


BOILERPLATE = re.compile(
    r"(?:i hope (?:this|that) helps|let me know if you (?:have|need)|feel free to (?:ask|reach out)|"
    r"great question|as an ai(?: language model)?|i(?:'m| am) (?:just )?an ai|happy to help|"
    r"is there anything else|thank you for (?:your question|asking)|i'd be happy to help|"
    r"hope you find this|glad (?:i could|to) help|don't hesitate to ask)", re.I)
_SYMBOL_TOKEN = re.compile(r"\s[^\w\s]+(?=\s)")  # a whitespace-separated token with no letter or digit
_SENT = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass
class TextSignals:
    values: dict[str, float]  # every measured figure, stored on the record as truth.<name>
    defects: dict[str, str]  # defect class -> human-readable reason with value and threshold
    soft: dict[str, float]  # soft problems -> penalty
    words: list[str]  # lower-cased prose words (reused by the rubric)


def words_of(text: str) -> list[str]:
    """Lower-cased `\\w+` words; ASCII text takes a translate+split path ~6x faster than the regex
    (measured 29 us vs 167 us on a 6 KB answer) with identical output."""
    low = text.lower()
    if low.isascii():
        return low.translate(_PUNCT).split()
    return _WORD.findall(low)


def prose_of(text: str) -> str:
    """Text with code blocks, inline code, URLs, citation markers and table rows removed."""
    t = _FENCE.sub(" ", text)
    t = _INLINE_CODE.sub(" ", t)
    t = _URL.sub(" ", t)
    t = _CITE.sub(" ", t)
    return "\n".join(ln for ln in t.split("\n") if not _TABLE_LINE.match(ln))


def truncation(final_answer: str) -> str | None:
    """Why the final answer looks cut off, or None."""
    if final_answer.count("```") % 2 == 1:
        return "unclosed code fence"
    lines = [ln for ln in final_answer.rstrip().split("\n") if ln.strip()]
    if not lines:
        return None
    last = lines[-1].rstrip()
    words = _WORD.findall(last.lower())
    if words and words[-1] in _DANGLING and not last.endswith(tuple(_TERMINAL)):
        return f"last line ends on {words[-1]!r}"
    if _LIST_OR_HEADING.match(last) or _TABLE_LINE.match(last) or len(words) < 4:
        return None
    if last[-1] in _TERMINAL or _URL.search(last.split()[-1]) or last[-1].isdigit():
        return None
    return f"last sentence has no terminal punctuation ({last[-30:]!r})"


_BOILER_KEYS = ("hope", "let me know", "feel free", "question", " ai", "happy to", "anything else",
                "thank you", "glad", "hesitate")


def boilerplate_share(turn: str) -> float:
    low = turn.lower()  # substring prefilter: the re.I alternation alone costs ~1.8 ms per 6 KB turn
    if not any(k in low for k in _BOILER_KEYS) or not BOILERPLATE.search(turn):
        return 0.0
    sents = [s for s in _SENT.split(turn) if _WORD.search(s)]
    if not sents:
        return 0.0
    total = sum(len(s) for s in sents)
    bp = sum(len(s) for s in sents if BOILERPLATE.search(s))
    return bp / max(total, 1)


def compute(assistant_turns: list[str]) -> TextSignals:
    """All text signals of a transcript's assistant turns."""
    text = "\n\n".join(assistant_turns)
    turn_prose = [prose_of(t) for t in assistant_turns]
    prose = "\n\n".join(turn_prose)
    turn_words = [words_of(p) for p in turn_prose]
    words = [w for tw in turn_words for w in tw]
    turn_lens = [len(t.split()) for t in assistant_turns] or [0]
    n_all = sum(turn_lens)
    v: dict[str, float] = {"words": float(n_all), "chars": float(len(text))}
    defects: dict[str, str] = {}
    soft: dict[str, float] = {}

    if min(turn_lens) < EMPTY_WORDS:
        # per turn: an empty reply inside a conversation teaches the model to give empty replies
        defects["empty"] = (f"an assistant turn has {min(turn_lens)} words (< {EMPTY_WORDS})"
                            if len(turn_lens) > 1 else f"assistant text has {min(turn_lens)} words (< {EMPTY_WORDS})")
    elif n_all < SHORT_WORDS:
        soft["short"] = 0.25
    rep, hits = repetition(prose, turn_words)
    v.update(rep)
    if hits:
        defects["repetition"] = "Gopher repetition: " + ", ".join(hits[:3])

    refusals = sum(1 for t, k in zip(assistant_turns, turn_lens) if is_refusal(t, k))
    v["refusal"] = refusals / max(len(assistant_turns), 1)
    if refusals:
        defects["refusal"] = f"{refusals} of {len(assistant_turns)} assistant turns open with a refusal"
    bp = max((boilerplate_share(t) for t in assistant_turns), default=0.0)
    v["boilerplate"] = bp
    if bp > BOILERPLATE_SHARE and "refusal" not in defects:
        defects["boilerplate"] = f"boilerplate sentences are {bp:.0%} of a turn (> {BOILERPLATE_SHARE:.0%})"
    elif bp > 0:
        soft["boilerplate"] = round(0.2 * bp, 3)

    cut = truncation(assistant_turns[-1]) if assistant_turns else None
    v["truncated"] = 1.0 if cut else 0.0
    # A loop runs to the token limit, so its missing end is a consequence, not a second defect.
    if cut and "empty" not in defects and "repetition" not in defects:
        defects["truncated"] = f"final answer looks cut off: {cut}"

    n_tokens = len(prose.split())
    if n_tokens:
        hashes = 0
        if "#" in prose:  # hash characters outside markdown heading markers
            hashes = prose.count("#") - sum(len(ln) - len(ln.lstrip("#")) for ln in prose.split("\n")
                                            if ln.startswith("#"))
        ellipses = prose.count("...") + prose.count("\u2026")
        v["symbol_ratio"] = (hashes + ellipses) / n_tokens
        v["alpha_word_frac"] = 1.0 - len(_SYMBOL_TOKEN.findall(f" {prose} ")) / n_tokens
    else:
        v["symbol_ratio"], v["alpha_word_frac"] = 0.0, 1.0
    plines = [ln.rstrip() for ln in prose.split("\n") if ln.strip()]
    v["ellipsis_line_frac"] = (sum(1 for ln in plines if ln.endswith(("...", "\u2026")))
                               / max(len(plines), 1))
    v["garbage_char_frac"] = len(_GARBAGE.findall(text)) / max(len(text), 1)
    garbage = []
    if n_tokens >= 20 and v["symbol_ratio"] > SYMBOL_WORD_RATIO:
        garbage.append(f"symbol/word {v['symbol_ratio']:.2f} > {SYMBOL_WORD_RATIO}")
    if n_tokens >= 20 and v["alpha_word_frac"] < ALPHA_WORD_FRAC:
        garbage.append(f"alphabetic words {v['alpha_word_frac']:.2f} < {ALPHA_WORD_FRAC}")
    if len(plines) >= 3 and v["ellipsis_line_frac"] > ELLIPSIS_LINE_FRAC:
        garbage.append(f"lines ending in ellipsis {v['ellipsis_line_frac']:.2f} > {ELLIPSIS_LINE_FRAC}")
    if v["garbage_char_frac"] > GARBAGE_CHAR_FRAC:
        garbage.append(f"replacement/control chars {v['garbage_char_frac']:.3f} > {GARBAGE_CHAR_FRAC}")
    if garbage:
        defects["garbage"] = "symbols/garbage: " + ", ".join(garbage)
    return TextSignals(values=v, defects=defects, soft=soft, words=words)


def role_structure(messages: list[dict[str, str]]) -> tuple[list[str], float]:
    """Problems with the turn order (system first, user/assistant alternation, ends on assistant)."""
    problems = []
    roles = [m.get("role") for m in messages]
    if "system" in roles[1:]:
        problems.append("system message not first")
    turns = [r for r in roles if r != "system"]
    if turns and turns[0] != "user":
        problems.append("conversation does not start with a user turn")
    if any(a == b for a, b in zip(turns, turns[1:])):
        problems.append("two consecutive turns by the same role")
    if turns and turns[-1] != "assistant":
        problems.append("does not end on an assistant turn")
    return problems, float(len(problems))

