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
- Markdown (issue 13): `markdown.split_markdown` first sorts each turn into paragraphs, list items,
  code, tables and dropped markup; the Gopher n-gram rules read the paragraphs, the line rules all
  prose lines, and code and tables get light rules of their own (`block_repetition`). Measured on
  real READMEs (bench/truth_real_corpus.py) this took clean rejections from 10.9% to 2.8%.
- Symbols: Gopher's symbol-to-word ratio 0.1 (hash and ellipsis) and "80% of words contain an
  alphabetic character", per turn, on the prose only; `#123` references are not hashtags, inline
  code counts as a word, free-standing dashes and arrows are punctuation. Gopher's "90% of lines
  start with a bullet" rule is NOT used: a markdown list answer is normal for research agents.
- Truncation: C4 (Raffel et al. 2020, section 2.2) keeps only lines ending in terminal punctuation;
  we apply that only to the *last* line of the final answer, accept the legitimate markdown
  endings (closed code block, table row, heading, list item of a list without a consistent
  ending) and look for markdown cut-offs (unclosed fence or inline markup, bare list marker, cut
  table row); see `truncation`.
- Refusal / boilerplate phrases: the phrase lists used to clean ShareGPT/WizardLM data of
  "As an AI language model" refusals (ehartford's *_unfiltered datasets, anon8231489123's
  ShareGPT_Vicuna_unfiltered cleaning script); a turn is a refusal only when the phrase opens a
  short turn (< 120 words, measured: every clean sample answer that mentions "I cannot" is longer
  or has it mid-text). A calibrated "I cannot find evidence ..." is an answer, not a refusal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import regex

from .endings import DANGLING as _DANGLING
from .markdown import Blocks, clean_prose_line, split_markdown
from .repetition import (  # noqa: F401  (re-exported: the Gopher rules live in repetition.py)
    GOPHER_DUP_NGRAM, GOPHER_LINE, GOPHER_MIN_WORDS, GOPHER_TOP_NGRAM, ngram_repetition, repetition,
    word_arrays)

SYMBOL_WORD_RATIO = 0.10  # Gopher
# Gopher: 80% of words contain an alphabetic character. We count digits as word characters too:
# measured on the bundled samples, numeric research answers ("0.99 / 0.01 = 99", "73.0 ± 1.0")
# fell to 0.72-0.74 alphabetic words while being clean.
ALPHA_WORD_FRAC = 0.80
ELLIPSIS_LINE_FRAC = 0.30  # Gopher: > 30% of lines ending with an ellipsis
# Fewer words than this is an empty answer: the acknowledgements agents emit instead of an answer
# ("OK", "Sure.", "N/A", "Noted.", bench/truth_corpus.py EMPTY) have 1-2 words; the shortest clean
# assistant turn is 40 words on the real corpus (its selection floor) and 8 in the bundled samples.
EMPTY_WORDS = 3
# Soft only (-0.25): under 10 words a research answer states a bare verdict without support
# (the bundled samples' one such answer, 8 words, is kept when its rubric or producer score lifts it).
SHORT_WORDS = 10
# The strict refusal pattern only counts in turns under 120 words: every refusal in the three
# phrasing sets has <= 20 words, and on the real corpus no clean turn opens with the pattern at
# any length (bench/results/truth_real_corpus.md, "strict refusal opening"); 120 keeps a refusal
# followed by a short explanation while a long answer that merely starts "I can't stress enough"
# is not judged by its first words.
REFUSAL_MAX_WORDS = 120
# Replacement/control/private-use characters: 1% of a turn's characters. Clean real text peaks at
# 0.2% (emoji variation selectors and the odd control character in READMEs, measured), a decoder
# that gave up leaves 5-10%.
GARBAGE_CHAR_FRAC = 0.01
# Boilerplate sentences ("I hope this helps") over half a turn: then the turn is mostly filler.
# No clean real-corpus turn has any (max 0.0); below the limit it is a soft penalty of 0.2 x share.
BOILERPLATE_SHARE = 0.5
# Mojibake sequences per turn: none in clean real text (max 0); three rules out a single quoted
# example of mojibake in a text about encodings.
# Light rules for code and tables (markdown.py takes them out of the prose rules). Code repeats
# lines legitimately (imports, closing brackets, the same call in several examples), so only lines
# of 12+ characters count, from 4 of them. Table rows use Gopher's duplicate-line fraction 0.30.
CODE_MIN_CHARS = 12
CODE_MIN_LINES = 4
# Limits: clean code repeats at most 0.40 of its long lines (p99 0.29, real corpus); clean tables
# at most 0.13 of their rows; periodic repeats at most 4 in clean text, so 8 is twice that.
BLOCK_LIMITS = {"code_dup_line_frac": 0.5, "table_dup_row_frac": 0.30, "long_line_repetition": 1.0,
                "periodic_repeats": 7.0}
PERIODIC_MIN_REPEATS = 8
LONG_LINE_WORDS = GOPHER_MIN_WORDS
MOJIBAKE_MIN = 3  # see above

_FENCE_LINE = re.compile(r"^\s{0,3}(?:>\s?)*(?:```|~~~)")  # also inside a block quote
_URL = re.compile(r"https?://\S+|www\.\S+|doi:\S+|10\.\d{4,9}/\S+")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+\u2022]|\d{1,3}[.)])\s")
# Sentence marks of other scripts (docs/truth_filter.md "Other scripts"): the CJK full stop and
# full-width marks, the Devanagari danda (Hindi, Marathi, Bengali, ...), the Arabic question mark
# and Urdu full stop, and the Armenian, Ethiopic, Myanmar and Tibetan full stops.
SENTENCE_MARKS_OTHER = ("\u3002\uff01\uff1f\uff0e\uff61\u0964\u0965\u061f\u06d4\u0589\u1362\u1367\u104b\u0f0d"
                        "\u17d4\u17d5")  # ... and Khmer's khan and bariyoosan
_SENTENCE_END = frozenset(".!?" + SENTENCE_MARKS_OTHER)
_ITEM_ENDS = frozenset(".!?)]:;")  # endings that make a list style ("every item ends with one")
_LIST_MARKER_ONLY = re.compile(r"^\s*(?:[-*+\u2022]|\d{1,3}[.)])\s*$")
_NOT_PROSE_END = re.compile(r"^(?:(?:[-*_=]\s*){3,}|\[[^\]]+\]:\s*\S+.*)$")
_HEADING_LINE = re.compile(r"^\s{0,3}#{1,6}\s|^\s*(?:\*\*|__)[^*_]+(?:\*\*|__):?\s*$")
_WORD = re.compile(r"\w+")
# Words of non-ASCII text (docs/truth_filter.md "Other scripts"): `regex`'s \w keeps combining
# marks inside a word (re's \w splits Devanagari, Tamil or Thai words at every vowel sign and
# Arabic words at every haraka), and each Han, Hiragana or Katakana character is a word, since
# Chinese and Japanese do not space their words (the usual proxy where no segmenter runs).
_HAN_KANA = r"\p{Han}\p{Hiragana}\p{Katakana}"
_CJK = regex.compile(f"[{_HAN_KANA}]")
_WORD_U = regex.compile(f"[{_HAN_KANA}]|[^\\W{_HAN_KANA}]+")
# Thai, Lao, Khmer and Myanmar write words without spaces and without a per-character proxy: for the
# length rules only (`empty`, `short`), a run of them counts one word per UNSPACED_CHARS_PER_WORD code
# points (an approximation, not measured here: no segmenter runs; 4 code points is about a short Thai
# word with its vowel and tone marks). Thai and Lao end sentences with a space, not a mark, so a line
# ending in them is not judged by the terminal-punctuation rule.
_UNSPACED = regex.compile(r"[\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}]+")
_NO_SENTENCE_MARK = regex.compile(r"[\p{Thai}\p{Lao}]")
UNSPACED_CHARS_PER_WORD = 4
# Issue 13's truncation rules (truncation recall on the README corpus 0.856 -> 0.905 with clean
# rejections unchanged at 2.8%; on 4,157 held-out sections of Debian/site-packages markdown 0.879 ->
# 0.911 with clean flags 2.6% -> 2.4%; bench/truth_real_corpus.py, bench/truth_truncation_heldout.py,
# whose ablation rows give each rule's share).
# A markdown link or a bare URL ending a line, and the closing marks (code, emphasis, brackets,
# quotes) and emoji that may follow a sentence mark: "(see below.)" ends a sentence, "in the path
# `mlx_model`" does not.
_LINK_END = re.compile(r"\]\([^()\s]*\)$")
_CLOSERS = re.compile(r"[\s`*_)\"'\u201d\u2019\u00bb]+$|(?:\s*[^\x00-\x7f\w\s\u201d\u2019\u00bb"
                      + SENTENCE_MARKS_OTHER + "])+$")
_INLINE_CODE = re.compile(r"`[^`]*`")
# A line ending on a comma or a free-standing dash, ampersand or slash stops mid-sentence (clean
# real text: 0 of 284 README sections; 5 of 4,157 held-out sections, all changelog lines whose
# link the corpus builder had removed as HTML).
_CUT_PUNCT = re.compile(r"(?:,|\s[-\u2013\u2014&/])\s*$")
# Issue 31 (leave one source out, bench/truth_loso.py): endings that need what follows them. A
# free-standing `--`, `->`, `=>` or `=` (a definition line "'category' --", an example "<obj>.qsort
# ->", code "d[key] ="), a shell line continued with `\\` whose next line never comes, a bare
# prompt (`>>>`, `$`) whose command never comes. None ends a clean section of the four sources.
_CUT_OPERATOR = re.compile(r"\s(?:--|->|=>|=)\s*$")
_CONTINUED = re.compile(r"\s\\$")
_BARE_PROMPT = re.compile(r"^\s*(?:>>>|\$)\s*$")
# Issue 31, session 5: an answer whose raw text ends in a line break and the indentation of the
# next line ("...ValueError is raised.\n    ") started a line and stopped before its first word:
# a writer (or a sampler cut at max tokens, indentation being its own token) was not done. No clean
# section of the five bench/truth_loso.py sources ends so (they are stripped, as a finished answer
# is); 12 of the 97 cuts the learned default missed on the four training sources did.
_TRAILING_INDENT = re.compile(r"\n[ \t]+\Z")
# TeX/GNU quoting, `name' (a backtick closed by an apostrophe, older docstrings and man pages),
# is a quoted name, not an inline code span left open (Python: "`member' may be a filename").
# code (an assignment, a call or subscript) with an inline comment after two spaces (PEP 8)
_INLINE_COMMENT = re.compile(r"^(\s*\S.*?(?:[)\]]|\s=\s\S+))\s{2,}#\s")
_GNU_QUOTE = re.compile(r"`[\w./-]+'(?![\w`])")
# A version number ends a changelog line completely ("* Upgrade V8 to 2.3.0" after "(Author)"
# items; "Requires Python 3.11"): it is no sentence's dangling middle.
_VERSION_END = re.compile(r"\bv?\d+(?:\.\d+)+$")
# A last list item of <= 4 words after siblings of >= 8 words is cut ("- Support" after
# "- Extend the capability of explain=True when ..."). Swept on the held-out set: clean flags stay
# at 101 of 4,157 for 2, 3 or 4 words at >= 8 sibling words (108 at >= 5 sibling words), recall
# 0.910 -> 0.911; on the README corpus recall 0.891 (off) -> 0.912 (4 words), clean flags 4 throughout.
SHORT_ITEM_WORDS = 4
# Earlier items that must end alike (with a mark or a closing bracket) before a last item without
# that ending is a cut. Was 2: a two-item list ("- Support ... occur. (#726)\n- The networking
# backend ... previously private implementation") was never judged. At 1 (issue 31, session 5,
# bench/truth_loso.py with the learned default): 8 more of README's 281 planted cuts caught
# (truncation 0.890 -> 0.918), none more on the other three training sources, and no clean
# rejection added on any of the four.
SIBLINGS_MIN = 1
SHORT_ITEM_SIBLING_WORDS = 8
_PUNCT = str.maketrans({c: " " for c in "!\"#$%&'()*+,-./:;<=>?@[\\]^`{|}~"})
# replacement character, C0/C1 control characters (not tab/newline), private-use area
_GARBAGE = re.compile(r"[\ufffd\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ue000-\uf8ff]")
# UTF-8 decoded as Latin-1 or cp1252: a lead byte shown as Â/Ã/â followed by a continuation byte
# shown as a C1 control, Latin-1 symbol or cp1252 punctuation (the sequences ftfy's "badness"
# heuristic looks for, github.com/rspeer/python-ftfy, ftfy/badness.py)
_MOJIBAKE = re.compile(r"[\u00c2\u00c3][\u0080-\u00bf]|\u00e2[\u0080-\u00bf\u20ac\u201a-\u2122][\u0080-\u00bf\u0152-\u2122]?")
_HASH = re.compile(r"#(?!\d)")
# closing marks of CJK text (full-width colon/semicolon/paren, corner and angle brackets) and guillemets
_TERMINAL = (".!?:;)\"'\u201d\u2019*_`]>}|" + SENTENCE_MARKS_OTHER
             + "\uff1a\uff1b\uff09\u300d\u300f\u3011\u300b\u3009\u00bb\u061b")
# _DANGLING: words a sentence never ends on (endings.py, shared with structure.py)

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
# A calibrated statement of missing evidence is an answer, not a refusal (issue 13: "I cannot
# find any peer-reviewed evidence for that claim; treat it as unsupported." was flagged): the
# inability is about finding, confirming or verifying something, not about helping.
_CALIBRATED = re.compile(
    r"\b(?:can(?:no|['\u2019])t|can not|could(?:n['\u2019]t| not)|unable to|not able to|did(?:n['\u2019]t| not))\s+"
    r"(?:find|locate|confirm|verify|identify|see|trace|reproduce|corroborate|substantiate)\b", re.I)


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
        return bool(_REFUSAL_SELF.search(first) and _REFUSAL_CANT.search(first)
                    and not _CALIBRATED.search(first))
    return False


BOILERPLATE = re.compile(
    r"(?:i hope (?:this|that) helps|let me know if you (?:have|need)|feel free to (?:ask|reach out)|"
    r"great question|as an ai(?: language model)?|i(?:'m| am) (?:just )?an ai|happy to help|"
    r"is there anything else|thank you for (?:your question|asking)|i'd be happy to help|"
    r"hope you find this|glad (?:i could|to) help|don't hesitate to ask)", re.I)
# The same pattern, case-sensitive, for lower-cased text: re.I alone made each search ~10x slower
# (measured 744 vs 72 us per synthetic 2-8 KB answer).
_BOILERPLATE_LOW = re.compile(BOILERPLATE.pattern)
# Free-standing punctuation of technical prose ("`h2` - required by ...", "a -> b", "x / y") is
# punctuation, not a word without letters: Gopher's rule counts words, and these tokens took clean
# real list items to 0.70-0.79 (measured). Symbol soup is made of other tokens ("|>", "$%", "]]").
_PROSE_PUNCT = frozenset({"-", "\u2013", "\u2014", "--", "/", "&", "+", "=", "->", "=>", "<-", "\u2192",
                          "\u2190", "\u2194", "\u00b1", "\u00d7", "<", ">", "<=", ">=", "~", "|", ":", "*"})
_SYMBOL_TOKEN = re.compile(r"\s[^\w\s]+(?=\s)")  # a whitespace-separated token with no letter or digit
_SENT = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass
class TextSignals:
    values: dict[str, float]  # every measured figure, stored on the record as truth.<name>
    defects: dict[str, str]  # defect class -> human-readable reason with value and threshold
    soft: dict[str, float]  # soft problems -> penalty
    words: list[str]  # lower-cased prose words (reused by the rubric)
    # truncation as the line rules see it, and after the last-block review (structure mode): the
    # learned combination (`combine.py`) reads both
    line_cut: str | None = None
    block_cut: str | None = None


def words_of(text: str) -> list[str]:
    """Lower-cased words: ASCII text takes a translate+split path ~6x faster than the regex
    (measured 29 us vs 167 us on a 6 KB answer) with the `\\w+` words; other text `_WORD_U`'s."""
    low = text.lower()
    if low.isascii():
        return low.translate(_PUNCT).split()
    return _WORD_U.findall(low)


def count_words(turn: str) -> int:
    """Whitespace-separated words (Gopher's count), each Han, Hiragana or Katakana character
    counted as a word (`_WORD_U`) and Thai/Lao/Khmer/Myanmar runs by `UNSPACED_CHARS_PER_WORD`: a
    Chinese or Thai answer of 60 characters is not "1 word"."""
    if turn.isascii():
        return len(turn.split())
    cjk, unspaced = len(_CJK.findall(turn)), _UNSPACED.findall(turn)
    if not cjk and not unspaced:
        return len(turn.split())
    rest = _UNSPACED.sub(" ", _CJK.sub(" ", turn))
    return (cjk + sum(-(-len(run) // UNSPACED_CHARS_PER_WORD) for run in unspaced)
            + sum(1 for token in rest.split() if _WORD.search(token)))


def prose_of(text: str) -> str:
    """The prose of a markdown answer: code, tables, diagrams and markup removed (`markdown.py`)."""
    return split_markdown(text).prose


def _fence_lines(text: str) -> int:
    return sum(1 for ln in text.split("\n") if _FENCE_LINE.match(ln)) if "```" in text or "~~~" in text else 0


def _unbalanced(line: str) -> str | None:
    """Inline markup opened on the last line and never closed: the line was cut inside it."""
    if _GNU_QUOTE.sub("", line.replace("```", "")).count("`") % 2:
        return "an inline code span is not closed"
    if line.count("**") % 2:
        return "bold text is not closed"
    if line.count("[") > line.count("]") or line.count("(") > line.count(")"):
        return "a bracket or link is not closed"
    return None


def truncation(final_answer: str) -> str | None:
    """Why the final answer looks cut off, or None.

    Legitimate markdown endings are accepted: a closed code block, a table row, a heading, and a
    list item unless its list ends items with punctuation and this one does not. Cut-offs: an
    unclosed code fence, inline markup opened and not closed on the last line, a last word that no
    sentence ends on, a last line ending on a comma or a free-standing dash/ampersand/slash, a
    table row with fewer cells than its header, a paragraph line without a sentence mark before
    its closing markup, a list item without the ending shape (mark, link/URL) of its siblings, or
    a 1-4 word last item after sentence-length siblings. Issue 31 (session 3): a bare prompt, a
    line continued with a backslash, a free-standing `--`/`->`/`=>`/`=` at the end, or an
    announced list stopping inside its first item are cuts; a version or decimal number at the end
    and the last line of a backslash-continued command are complete. Session 5: `_open_end`."""
    if (why := _open_end(final_answer)) is not None:
        return why
    lines = [ln for ln in final_answer.rstrip().split("\n") if ln.strip()]
    if not lines:
        return None
    last = lines[-1].rstrip()
    if _FENCE_LINE.match(last):
        return None  # ends with a closed code block
    stripped = last.strip()
    if stripped.count("|") >= 2 or stripped.startswith("|"):
        return _table_cut(lines)
    if _BARE_PROMPT.match(last):
        return f"the answer ends on an empty prompt ({stripped!r})"
    if _CONTINUED.search(last):
        return "the last line continues (ends with a backslash) on a line that never comes"
    if (why := _unbalanced(last)) is not None:
        return why
    if last.endswith(":"):  # never a clean ending on the real corpus: what it announces is missing
        return "the last line announces content that never comes (ends with ':')"
    words = _WORD.findall(last.lower())
    if _CUT_PUNCT.search(last):
        return f"the last line ends on {last.rstrip()[-1]!r}, mid-sentence"
    if _CUT_OPERATOR.search(last):
        return f"the last line ends on {last.split()[-1]!r}, which needs what follows it"
    if words and words[-1] in _DANGLING and not last.endswith(tuple(_TERMINAL)):
        return f"last line ends on {words[-1]!r}"
    if len(lines) > 1 and _CONTINUED.search(lines[-2].rstrip()):
        return None  # the last line of a shell command continued with `\\`
    if _HEADING_LINE.match(last):
        return None
    if _LIST_ITEM.match(last):
        return _list_cut(lines)
    if last.startswith(("    ", "\t")) and _ends_in_code(final_answer):
        return None  # an indented code block
    if last.startswith((" ", "\t")) and any(_LIST_ITEM.match(ln) for ln in lines[-4:-1]):
        return _list_cut(lines, continuation=True)  # the continuation line of a list item
    if _LIST_MARKER_ONLY.match(last):
        return "the answer ends on an empty list item"
    # A paragraph line without terminal punctuation was cut, whatever its length, unless it is a
    # horizontal rule, a link definition, a bare URL or has no word at all (an emoji sign-off):
    # on the real corpus (bench/truth_real_corpus.py) those were every clean short unpunctuated
    # ending, while planted cuts left 1-3 word lines ("See", "To install") in 24% of cases.
    if not words or _URL.search(last.split()[-1]) or _NOT_PROSE_END.match(last.strip()):
        return None
    if _sentence_ended(last) or _commented_code(last):
        return None
    return f"last sentence has no terminal punctuation ({last[-30:]!r})"


def _open_end(final_answer: str) -> str | None:
    """Cuts seen in the raw text's end: an unclosed code fence; a line break followed by
    indentation (a new line stopped before its first word). Other session-5 changes: an item ending
    on a bare address is not judged by its siblings' ending, one earlier item sets a list's style,
    a code line with an inline `  # comment` and TeX/GNU `quotes' are complete."""
    if _fence_lines(final_answer) % 2 == 1:
        return "unclosed code fence"
    if _TRAILING_INDENT.search(final_answer):
        return "the answer ends on the indentation of a line that never comes"
    return None


def open_paragraph_share(text: str) -> float:
    """Share of the earlier prose paragraphs (blank-line-separated chunks before the last, outside
    code fences, indented code, doctests, tables and headings) whose last line has no sentence
    mark; 0.0 when fewer than structure.OPEN_PARA_MIN such paragraphs."""
    from . import structure as st

    ends, in_fence, chunk = [], False, []
    for line in text.rstrip().split("\n") + [""]:
        if _FENCE_LINE.match(line):
            in_fence, chunk = not in_fence, []
        elif in_fence:
            continue
        elif line.strip():
            chunk.append(line)
        elif chunk:
            ends.append(chunk)
            chunk = []
    prose = [c[-1] for c in ends[:-1] if not c[-1].startswith(("    ", "\t")) and not c[0].lstrip().startswith(">>>")
             and not c[-1].lstrip().startswith(("#", "|"))]
    if len(prose) < st.OPEN_PARA_MIN:
        return 0.0
    return sum(1 for ln in prose if not _sentence_ended(ln)) / len(prose)


def _end_shape(line: str) -> str:
    """How a line ends: a sentence mark, a markdown link, a bare URL, another closing mark
    (`)`, `]`, `:`, `;`), or a plain "word"."""
    line = line.rstrip()
    if line[-1] in _SENTENCE_END:
        return line[-1]
    if _LINK_END.search(line) or _URL.match(line.split()[-1].strip("<>")):
        return "link"  # a markdown link, a bare URL or an autolink `<https://...>`: a reference
    return line[-1] if line[-1] in _ITEM_ENDS else "word"


def _sentence_ended(line: str) -> bool:
    """A sentence mark before any closing markup, brackets, quotes or emoji: "(see below.)",
    "**Done.**" and "Really! \U0001f60a" end a sentence; "in the path `mlx_model`" and
    "an array (`.strides`)" do not."""
    line = line.rstrip()
    if line.endswith("]") or _LINK_END.search(line) or not _WORD.search(_INLINE_CODE.sub("", line)):
        return True  # a link, a bracketed list or a line of inline code only (a command)
    if _VERSION_END.search(line):
        return True  # "Upgrade V8 to 2.3.0"
    body = _CLOSERS.sub("", line)
    return bool(body) and (body[-1] in _SENTENCE_END or body[-1] == ":" or not _WORD.search(body[-1])
                           or bool(_NO_SENTENCE_MARK.match(body[-1])))


def _ends_in_code(text: str) -> bool:
    b = split_markdown(text)
    last = text.rstrip().split("\n")[-1]
    return bool(b.code) and any(ln == last for ln in b.code[-1][-3:])


def _table_cut(lines: list[str]) -> str | None:
    last = lines[-1].strip()
    rows = []
    for ln in reversed(lines):
        if "|" not in ln:
            break
        rows.append(ln.strip())
    header = rows[-1]
    if header.startswith("|") and not last.endswith("|"):
        return "the last table row is cut off"
    if len(rows) >= 3 and last.count("|") < header.count("|"):
        return f"the last table row has {last.count('|') - 1} of {header.count('|') - 1} cells"
    return None


def _list_cut(lines: list[str], continuation: bool = False) -> str | None:
    """A list item ends a list legitimately, unless the items before it all end alike - with
    punctuation or a closing bracket - and it does not: READMEs end their items either always or
    never with a full stop, and changelog items end with a `(#123)` or `[@user](...)` reference
    (measured on the real corpus). An item's end is its last continuation line. A continuation
    line ending the answer is judged like a paragraph line unless the items before it show a
    list style without final punctuation."""
    ends: list[str] = []  # last line of each earlier item, nearest first
    current_end = None
    for ln in reversed(lines[-16:-1]):
        if _LIST_ITEM.match(ln):
            ends.append(current_end or ln.rstrip())
            current_end = None
        elif ln.startswith((" ", "\t")):
            current_end = current_end or ln.rstrip()
        else:
            break
    last = lines[-1].rstrip()
    ends = ends[:5]
    styles = {_end_shape(e) for e in ends}
    if _VERSION_END.search(last):
        return None  # a changelog item ending on a version number is complete in any list style
    if not continuation and not ends and len(lines) > 1 and lines[-2].rstrip().endswith(":") \
            and _end_shape(last) == "word":
        return "the list its previous line announces stops inside its first item"
    if len(ends) >= SIBLINGS_MIN and "word" not in styles:
        if _end_shape(last) not in styles | _SENTENCE_END and _WORD.search(last) and not _bare_address_end(last):
            return f"the last list item lacks the ending its siblings have ({last[-30:]!r})"
        return None
    if (not continuation and ends and _end_shape(last) == "word"
            and len(_WORD.findall(_LIST_ITEM.sub("", last))) <= SHORT_ITEM_WORDS
            and min(len(_WORD.findall(e)) for e in ends) >= SHORT_ITEM_SIBLING_WORDS):
        return f"the last list item stops after {last.strip()[:30]!r}, its siblings are sentences"
    if continuation and last[-1] not in _TERMINAL:
        return f"last sentence has no terminal punctuation ({last[-30:]!r})"
    return None


def _commented_code(line: str) -> bool:
    """A line of code with an inline comment (PEP 8: code, two spaces, `# `, as in "dirs.remove('CVS')
    # don't visit CVS directories"): the comment runs to the line's end and takes no sentence mark,
    and the code before it is judged as code: complete unless a bracket is left open."""
    m = _INLINE_COMMENT.match(line)
    return bool(m) and _unbalanced(m.group(1)) is None


def _bare_address_end(line: str) -> bool:
    """The line ends on a bare address (`https://...`, `<https://...>`), not a markdown link: a
    complete reference that takes the place of a sentence mark (authors leave the full stop off so
    it is not read as part of the address) or follows an item's usual ending ("(Ben Noordhuis)
    <https://github.com/nodejs/node/pull/7195>"). Issue 31, session 5: 2 of Debian's 12 clean
    rejections were such changelog items judged by their siblings' `.` or `)`."""
    tail = line.split()[-1] if line.split() else ""
    return not _LINK_END.search(tail) and bool(_URL.match(tail.strip("<>")))


_BOILER_KEYS = ("hope", "let me know", "feel free", "question", " ai", "happy to", "anything else",
                "thank you", "glad", "hesitate")


def boilerplate_share(turn: str) -> float:
    low = turn.lower()  # substring prefilter: the re.I alternation alone costs ~1.8 ms per 6 KB turn
    if not any(k in low for k in _BOILER_KEYS) or not _BOILERPLATE_LOW.search(low):
        return 0.0
    sents = [s for s in _SENT.split(turn) if _WORD.search(s)]
    if not sents:
        return 0.0
    total = sum(len(s) for s in sents)
    bp = sum(len(s) for s in sents if _BOILERPLATE_LOW.search(s.lower()))
    return bp / max(total, 1)


# Structure mode (issue 31, `structure.py`): code repeated as a block 4+ times in a row is a loop
# (a sampling loop repeats; clean code repeats single lines, and an example's output line at most
# 3 times in a row on the four bench/truth_loso.py sources: "Hello, Click!" x 3), and a code block of
# which over 80% of the long lines repeat is one whatever the order (clean max 0.68, Node.js docs).
CODE_TANDEM_MIN = 4
CODE_DUP_LINE_FRAC_STRUCTURE = 0.8


def compute(assistant_turns: list[str], structure: bool = False) -> TextSignals:
    """All text signals of a transcript's assistant turns. `structure=True`: doctests and reST
    literal blocks are code, the code loop rule is the tandem rule, and a cut the line rules see
    is re-judged on the last markdown block (`structure.py`, issue 31)."""
    text = "\n\n".join(assistant_turns)
    if structure:
        from .structure import fence_literal_blocks

        blocks = [split_markdown(fence_literal_blocks(t)) for t in assistant_turns]
    else:
        blocks = [split_markdown(t) for t in assistant_turns]
    turn_prose = [b.prose for b in blocks]
    prose = "\n\n".join(turn_prose)
    words = words_of(prose)  # every prose word (the rubric reads them)
    running_words = [words_of(b.running) for b in blocks]  # paragraphs: the Gopher n-gram rules
    turn_lens = [count_words(t) for t in assistant_turns] or [0]
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
    hits = _repetition_hits(v, prose, running_words, blocks, assistant_turns, words, structure)
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

    line_cut = cut = truncation(assistant_turns[-1]) if assistant_turns else None
    if cut and structure:
        from . import structure as st

        cut = st.review_cut(assistant_turns[-1], cut)
        if cut and st.OPEN_PARA_HABIT is not None and cut.startswith(st.NO_MARK) \
                and open_paragraph_share(assistant_turns[-1]) >= st.OPEN_PARA_HABIT:
            cut = None  # the document's own habit: it ends its paragraphs without a sentence mark
    v["truncated"] = 1.0 if cut else 0.0
    # A loop runs to the token limit, so its missing end is a consequence, not a second defect.
    if cut and "empty" not in defects and "repetition" not in defects:
        defects["truncated"] = f"final answer looks cut off: {cut}"

    _garbage_values(v, turn_prose, assistant_turns)
    garbage = _garbage_reasons(v)
    if garbage:
        defects["garbage"] = "symbols/garbage: " + ", ".join(garbage)
    return TextSignals(values=v, defects=defects, soft=soft, words=words, line_cut=line_cut, block_cut=cut)


def _repetition_hits(v: dict[str, float], prose: str, running_words: list[list[str]], blocks: list[Blocks],
                     turns: list[str], words: list[str], structure: bool) -> list[str]:
    """The repetition rules broken (Gopher, light block rules, structure mode's tandem code rule);
    their values go into `v`."""
    rep, hits = repetition(prose, running_words, local=structure)
    v.update(rep)
    v.update(block_repetition(blocks, turns))
    v["periodic_repeats"] = float(periodic_repeats(words))
    limits = BLOCK_LIMITS
    if structure:
        from .structure import code_tandem

        v["code_tandem"] = float(code_tandem([c for b in blocks for c in b.code]))
        limits = {**BLOCK_LIMITS, "code_dup_line_frac": CODE_DUP_LINE_FRAC_STRUCTURE}
        if v["code_tandem"] >= CODE_TANDEM_MIN:
            hits.append(f"a code block repeated {int(v['code_tandem'])} times in a row (>= {CODE_TANDEM_MIN})")
    for key, limit in limits.items():
        if v[key] > limit:
            hits.append(f"{key} {v[key]:.2f} > {limit}")
    return hits


def _garbage_values(v: dict[str, float], turn_prose: list[str], turns: list[str]) -> None:
    """Gopher symbol rules and garbage characters per turn, each rule from its minimum size; the
    worst turn's value is stored (one garbage turn must not be averaged away by clean ones)."""
    per = [_turn_garbage(p, t) for p, t in zip(turn_prose, turns)]
    big = [t for t in per if t["prose_tokens"] >= 20]
    v["symbol_ratio"] = max((t["symbol_ratio"] for t in big), default=0.0)
    v["alpha_word_frac"] = min((t["alpha_word_frac"] for t in big), default=1.0)
    v["ellipsis_line_frac"] = max((t["ellipsis_line_frac"] for t in per if t["prose_lines"] >= 3), default=0.0)
    v["garbage_char_frac"] = max((t["garbage_char_frac"] for t in per), default=0.0)
    v["mojibake"] = max((t["mojibake"] for t in per), default=0.0)


def _turn_garbage(prose: str, text: str) -> dict[str, float]:
    v: dict[str, float] = {}
    n_tokens = len(prose.split())
    v["prose_tokens"] = float(n_tokens)
    if n_tokens:
        # hash characters (heading markers are gone with the markup); `#123` issue and PR
        # references are not hashtags: on the real corpus they alone gave changelog sections a
        # symbol ratio of 0.10-0.28
        hashes = len(_HASH.findall(prose)) if "#" in prose else 0
        ellipses = prose.count("...") + prose.count("\u2026")
        v["symbol_ratio"] = (hashes + ellipses) / n_tokens
        symbols = _SYMBOL_TOKEN.findall(f" {prose} ")
        punct = sum(1 for t in symbols if t.strip() in _PROSE_PUNCT) if symbols else 0
        v["alpha_word_frac"] = (1.0 - (len(symbols) - punct) / (n_tokens - punct)) if n_tokens > punct else 1.0
    else:
        v["symbol_ratio"], v["alpha_word_frac"] = 0.0, 1.0
    plines = [ln.rstrip() for ln in prose.split("\n") if ln.strip()]
    v["prose_lines"] = float(len(plines))
    v["ellipsis_line_frac"] = (sum(1 for ln in plines if ln.endswith(("...", "\u2026")))
                               / max(len(plines), 1))
    v["garbage_char_frac"] = len(_GARBAGE.findall(text)) / max(len(text), 1)
    v["mojibake"] = float(len(_MOJIBAKE.findall(text))) if not text.isascii() else 0.0
    return v


def _garbage_reasons(v: dict[str, float]) -> list[str]:
    garbage = []
    if v["symbol_ratio"] > SYMBOL_WORD_RATIO:
        garbage.append(f"symbol/word {v['symbol_ratio']:.2f} > {SYMBOL_WORD_RATIO}")
    if v["alpha_word_frac"] < ALPHA_WORD_FRAC:
        garbage.append(f"alphabetic words {v['alpha_word_frac']:.2f} < {ALPHA_WORD_FRAC}")
    if v["ellipsis_line_frac"] > ELLIPSIS_LINE_FRAC:
        garbage.append(f"lines ending in ellipsis {v['ellipsis_line_frac']:.2f} > {ELLIPSIS_LINE_FRAC}")
    if v["garbage_char_frac"] > GARBAGE_CHAR_FRAC:
        garbage.append(f"replacement/control chars {v['garbage_char_frac']:.3f} > {GARBAGE_CHAR_FRAC}")
    if v["mojibake"] >= MOJIBAKE_MIN:
        garbage.append(f"{int(v['mojibake'])} mojibake sequences (UTF-8 read as Latin-1/cp1252) >= {MOJIBAKE_MIN}")
    return garbage


def _dup_share(items: list[str]) -> float:
    seen: set[str] = set()
    dup = 0
    for it in items:
        if it in seen:
            dup += 1
        seen.add(it)
    return dup / len(items) if items else 0.0


def periodic_repeats(words: list[str], max_period: int = 8) -> int:
    """Most consecutive repeats of a unit of 1..max_period prose words ("Extend - Extend -
    Extend"): the shape of a sampling loop in a list item or a short line, where the Gopher n-gram
    rules lack the 50 words they need. Numbers never match (a run of zeros is data). One numpy
    comparison per period; periods without enough matches for a loop are skipped, so the value
    is exact from PERIODIC_MIN_REPEATS repeats and 1 below (clean real text: at most 4, measured
    with the exact count)."""
    n = len(words)
    if n < PERIODIC_MIN_REPEATS:
        return 0
    ids = np.fromiter(map(hash, words), dtype=np.int64, count=n)
    best, digits_done = 1, False
    for k in range(1, max_period + 1):
        eq = ids[k:] == ids[:-k]
        if int(eq.sum()) < (PERIODIC_MIN_REPEATS - 1) * k:
            continue  # too few matches for a loop at this period (almost all prose stops here)
        if not digits_done:
            digits = np.fromiter(map(str.isdigit, words), dtype=bool, count=n)
            if digits.any():
                ids[digits] = -np.arange(1, n + 1)[digits]  # unique: numbers never repeat
                eq = ids[k:] == ids[:-k]
            digits_done = True
        edges = np.flatnonzero(np.diff(np.concatenate(([0], eq.view(np.int8), [0]))))
        if edges.size:
            best = max(best, int((edges[1::2] - edges[::2]).max()) // k + 1)  # longest w[i] == w[i-k] stretch
    return best


def block_repetition(blocks: list[Blocks], turns: list[str]) -> dict[str, float]:
    """Light rules for what the paragraph rules do not read, worst turn:
    - code_dup_line_frac: share of substantive code lines (>= CODE_MIN_CHARS characters) that
      repeat an earlier line of the turn's code blocks, from CODE_MIN_LINES such lines;
    - table_dup_row_frac: share of body rows (headers excluded) repeating an earlier row, 4+ rows;
    - long_line_repetition: Gopher duplicate 5..10-gram rules on any single line of 50+ words
      outside the paragraphs (a list item, a table row, a code line: `Blocks.long_lines`), as a
      share of the limit (paragraph lines are read by the document rules);
    (`periodic_repeats`, on all prose words, is the fourth light rule: 8 or more is a loop.)"""
    out = dict.fromkeys(BLOCK_LIMITS, 0.0)
    for b, turn in zip(blocks, turns):
        if b.code:
            lines = [ln.strip() for blk in b.code for ln in blk if len(ln.strip()) >= CODE_MIN_CHARS]
            if len(lines) >= CODE_MIN_LINES:
                out["code_dup_line_frac"] = max(out["code_dup_line_frac"], _dup_share(lines))
        if b.tables:
            rows = [" ".join(r.split()) for t in b.tables for r in t[1:]]
            if len(rows) >= 4:
                out["table_dup_row_frac"] = max(out["table_dup_row_frac"], _dup_share(rows))
        for line in b.long_lines:
            # prose words (inline code and URLs out, as the document rules read them), but all
            # words of a line that holds a code fence: a loop that swallowed a code block
            w = (words_of(clean_prose_line(line)) if "```" not in line and "~~~" not in line
                 else words_of(_URL.sub(" ", line)))
            if len(w) >= LONG_LINE_WORDS:
                r = ngram_repetition(w, top=False)
                worst = max(r.get(f"dup_{n}gram_frac", 0.0) / t for n, t in GOPHER_DUP_NGRAM.items())
                out["long_line_repetition"] = max(out["long_line_repetition"], worst)
    return out


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

