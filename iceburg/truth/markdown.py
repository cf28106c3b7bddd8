"""Split a markdown answer into prose, code, tables and diagrams, so each gets its own rules.

The Gopher word rules (alphabetic-word share, symbol ratio, duplicate lines and n-grams) were
written for running web prose. On research-agent markdown they count markup as words: bullets,
`**Label:**`, table pipes and cells, code and box-drawing diagrams. Measured on real READMEs
(bench/truth_real_corpus.py, issue 13), that rejected 15.5% of clean transcripts. So one pass over
the lines sorts them:

- fenced code (``` or ~~~) and indented code (4 spaces after a blank line, outside a list)
  -> `code` blocks, checked only by the light code rule in `signals`;
- GFM tables (a header row followed by a `|---|` delimiter row, and the rows after it) -> `tables`;
- diagram lines (box-drawing or arrow characters), horizontal rules and link reference
  definitions -> dropped (counted in `diagram_lines`);
- every other line is prose, with its markup removed: heading hashes, block quotes, list markers
  and task boxes, emphasis (`**`, `__`, `*`, `_` around words), links and images (their text is
  kept), HTML tags, URLs and citation markers; inline code becomes one word (`_code_token`). Prose outside lists is also kept
  apart (`running`): list items of one list share a structure by design ("- Fix X by @a in #1"),
  so the Gopher n-gram rules read paragraphs, and list items get the line rules.

One pass of a few compiled regexes per line: ~40-90 us on a 4 KB answer (bench/truth_throughput.py).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

_FENCE = re.compile(r"^\s{0,3}(?:>\s?)*(```|~~~)")  # also inside a block quote
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(?:\|\s*:?-{2,}:?\s*)*\|?\s*$")
_LIST = re.compile(r"^\s*(?:[-*+\u2022]|\d{1,3}[.)])\s+(?:\[[ xX]\]\s+)?")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+")
_QUOTE = re.compile(r"^\s{0,3}(?:>\s?)+")
_LINK = re.compile(r"!?\[([^\]\n]*)\]\([^)\n]*\)")
_INLINE_CODE = re.compile(r"`+[^`\n]*`+")
_HTML = re.compile(r"</?[A-Za-z][^>\n]*>|&[a-z]+;|&#\d+;")
_URL = re.compile(r"https?://\S+|www\.\S+|doi:\S+|10\.\d{4,9}/\S+", re.I)
_CITE = re.compile(r"\[\d+(?:[,\u2013-]\s*\d+)*\]|\[\^?\w+\]")
_EMPHASIS = re.compile(r"(?<![\w*_])[*_]{1,3}(?=\S)|(?<=\S)[*_]{1,3}(?![\w*_])")
# Box drawing U+2500-257F, block elements U+2580-259F, arrows U+2190-21FF, geometric shapes
# U+25A0-25FF: never prose.
_BOX = re.compile(r"[\u2500-\u25ff\u2190-\u21ff]")
LONG_LINE_CHARS = 150  # 50 words (Gopher's minimum document) need ~250 characters; 150 is safe
_LIST_START = frozenset("-*+\u2022")
_RULE = re.compile(r"^(?:[-*_=]\s*){3,}$")
# link reference definitions (`[docs]: https://...`, `[^1]: ...`) are markup, not prose
_LINK_DEF = re.compile(r"^\s{0,3}\[[^\]\n]+\]:\s*\S+")


@dataclass
class Blocks:
    prose: str  # markup-free prose, one line per source prose line (blank lines kept)
    running: str = ""  # the prose outside lists (paragraphs): what the Gopher n-gram rules read
    items: list[str] = field(default_factory=list)  # markup-free list item lines
    code: list[list[str]] = field(default_factory=list)  # lines of each code block
    tables: list[list[str]] = field(default_factory=list)  # rows of each table (separators dropped)
    diagram_lines: int = 0  # box-drawing diagrams, horizontal rules, link definitions
    # lines of 150+ characters outside the paragraphs (list items and their continuation lines,
    # table rows, code lines, lines holding a fence): the per-line loop rule reads them
    long_lines: list[str] = field(default_factory=list)


def _is_diagram(s: str) -> bool:
    """Box-drawing / arrow characters, or a horizontal rule. ASCII-art outside a code block is
    NOT taken out: it is indistinguishable from symbol soup, which the garbage rule must see."""
    return bool((not s.isascii() and _BOX.search(s)) or (s[0] in "-*_=" and _RULE.match(s)))


def _code_token(m: re.Match[str]) -> str:
    """Inline code becomes one word derived from its text: it counts as a word (not as symbols),
    and two lines that differ only in their code stay different ("`h2` - Required by ..." vs
    "`socksio` - Required by ..."; removing the code made such list lines duplicates)."""
    # No spaces around it (issue 31): "`metadata`, `signals`" and "(`x`)" left free-standing
    # commas and brackets that counted as symbol words (clean project docs fell to 0.76 alphabetic)
    return f"code{zlib.crc32(m.group().encode('utf-8', 'surrogatepass')):x}"


def clean_prose_line(line: str) -> str:
    s = line
    first = line.lstrip()[:1]
    if first == "#":
        s = _HEADING.sub("", s)
    elif first == ">":
        s = _QUOTE.sub("", s)
    if first in _LIST_START or first.isdigit():
        s = _LIST.sub("", s)
    if "`" in s:
        s = _INLINE_CODE.sub(_code_token, s)
    if "](" in s:
        s = _LINK.sub(r"\1", s)
    if "<" in s or "&" in s:
        s = _HTML.sub(" ", s)
    if "://" in s or "www." in s.lower() or "doi" in s.lower() or "10." in s:
        s = _URL.sub(" ", s)
    if "[" in s:
        s = _CITE.sub(" ", s)
    if "*" in s or "_" in s:
        s = _EMPHASIS.sub("", s)
    return s


def split_markdown(text: str) -> Blocks:
    """Sort the lines of `text` into prose, code, tables and diagrams (module docstring)."""
    out = Blocks(prose="")
    prose: list[str] = []
    running: list[str] = []
    code: list[str] | None = None  # the open fenced block
    fence = ""
    table: list[str] | None = None
    indented: list[str] | None = None
    prev_blank, in_list = True, False
    lines = text.split("\n")
    for k, line in enumerate(lines):
        long = len(line) > LONG_LINE_CHARS
        if code is not None:  # inside a fenced block
            if long:
                out.long_lines.append(line)
            if line.lstrip(" >").startswith(fence):
                out.code.append(code)
                code = None
            else:
                code.append(line)
            continue
        m = _FENCE.match(line) if ("`" in line or "~" in line) else None
        if m:
            fence, code, table, indented = m.group(1), [], None, None
            prev_blank = False
            continue
        stripped = line.strip()
        if not stripped:
            prose.append("")
            table, prev_blank = None, True
            if indented is not None:
                indented.append("")
            continue
        if long and ("`" in line or "|" in line or line.startswith(("    ", "\t"))):
            out.long_lines.append(line)  # a fence or table row, or indented: never a plain paragraph
            long = False
        if indented is not None and (line.startswith(("    ", "\t"))):
            indented.append(line)
            continue
        indented = None
        if (line.startswith(("    ", "\t")) and prev_blank and not in_list and not _LIST.match(line)):
            indented = [line]
            out.code.append(indented)
            continue
        # a GFM table: a header row with pipes followed by a `|---|` delimiter row, then its rows
        # (a line of pipes without that delimiter is not a table: symbol soup stays prose)
        if table is None and "|" in stripped and k + 1 < len(lines) and "|" in lines[k + 1] \
                and _TABLE_SEP.match(lines[k + 1].strip()):
            table = []
            out.tables.append(table)
        if table is not None and "|" in stripped:
            if not _TABLE_SEP.match(stripped):
                table.append(stripped)
            prev_blank = False
            continue
        table = None
        if _is_diagram(stripped) or (stripped[0] == "[" and _LINK_DEF.match(line)):
            out.diagram_lines += 1
            prev_blank = False
            continue
        cleaned = clean_prose_line(line)
        first = stripped[0]
        if (first in _LIST_START or first.isdigit()) and _LIST.match(line):
            out.items.append(cleaned)
            in_list = True
        elif prev_blank and not line.startswith((" ", "\t")):
            in_list = False
        if not in_list and not (first == "#" and _HEADING.match(line)):  # headings repeat by design
            running.append(cleaned)
        elif long:
            out.long_lines.append(line)
        prose.append(cleaned)
        prev_blank = False
    if code is not None:
        out.code.append(code)  # unclosed fence: still code (truncation reports it)
    out.code = [[ln for ln in blk] for blk in out.code if any(ln.strip() for ln in blk)]
    out.prose = "\n".join(prose)
    out.running = "\n".join(running)
    return out
