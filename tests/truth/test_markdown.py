"""Markdown-aware signals (issue 13): markup is not garbage, lists and tables are legitimate
endings, calibrated "no evidence" answers are not refusals - and the defects are still found."""

from __future__ import annotations

import pytest

from iceburg.records import Record
from iceburg.truth import TruthFilter
from iceburg.truth.markdown import split_markdown
from iceburg.truth.signals import compute, is_refusal, periodic_repeats, truncation

# The shape that was rejected as "garbage: alphabetic words 0.74-0.79" and "repetition": bold
# labels, numbers and percentages in bullets, a table, code, a box-drawing diagram, link refs.
CLEAN_MD = """## Findings

**Summary:** the cache cuts p95 latency by about 38% at 10k req/s; the effect is smaller on cold starts.

- **Throughput:** 12,400 req/s (+18%) on 8 cores, 2 x 16 GB
- **p95 latency:** 41 ms -> 25 ms (-38%)
- **Memory:** +210 MB per worker (see [#412](https://github.com/org/repo/pull/412))
- **Cold start:** 1.9 s vs 1.7 s, within noise (n=5, sd 0.2 s)

| Setting | p50 (ms) | p95 (ms) | Hit rate |
|---|---:|---:|---:|
| no cache | 18 | 41 | - |
| LRU 1 GB | 12 | 25 | 71% |
| LRU 4 GB | 11 | 23 | 83% |

```python
cache = LRU(maxsize=4 * 2**30)
for key in keys:
    cache.get(key)
```

```
┌────────┐     ┌───────┐
│ client │ ──► │ cache │
└────────┘     └───────┘
```

The measurement used the project's load generator [1]; numbers are medians of five runs.

- Run `make bench` to reproduce
- Results land in `bench/results/`

[1]: https://example.org/loadgen
"""


def _answer(text: str) -> list[str]:
    return [text]


def test_a_list_table_code_and_diagram_heavy_answer_is_clean():
    ts = compute(_answer(CLEAN_MD))
    assert ts.defects == {}, ts.defects
    assert ts.values["alpha_word_frac"] >= 0.95 and ts.values["symbol_ratio"] == 0.0  # `#412` is no hashtag


def test_split_markdown_sorts_the_lines():
    b = split_markdown(CLEAN_MD)
    assert [len(t) for t in b.tables] == [4]  # header + 3 rows, delimiter dropped
    assert len(b.code) == 2 and b.diagram_lines >= 1  # the box-drawing lines inside the fence are code
    assert "Throughput: 12,400 req/s" in b.prose and "**" not in b.prose and "https" not in b.prose
    assert "Throughput" not in b.running and "measurement used" in b.running  # lists are apart
    soup = split_markdown("|> $% | ]] | @@ ~~ |\n=| ^^ | <> |")  # pipes without a delimiter row
    assert soup.tables == [] and "$%" in soup.prose


def test_symbol_soup_in_one_turn_of_many_is_garbage():
    clean = "The cache cuts latency by a third on warm paths, measured over five runs. " * 4
    soup = " ".join(["|> $% ]] @@ ~~ =| ^^ <> {} &&"] * 12)
    ts = compute([clean, clean, soup])
    assert "garbage" in ts.defects and "alphabetic words" in ts.defects["garbage"]


def test_mojibake_and_replacement_characters_are_garbage():
    text = "Caf\u00e9 na\u00efve \u201cquoted\u201d r\u00e9sum\u00e9 \u2014 it\u2019s fine. " * 3
    moji = text.encode("utf-8").decode("latin-1")
    assert "mojibake" in compute([moji]).defects["garbage"]
    assert compute([text]).defects == {}  # the correctly decoded text is clean


@pytest.mark.parametrize("text", [
    "I cannot find any peer-reviewed evidence for that claim; treat it as unsupported.",
    "I could not find any benchmark that measures this, so the claim is unverified for now.",
    "I can't confirm this from the changelog, so assume it is not supported.",
])
def test_a_calibrated_statement_of_missing_evidence_is_not_a_refusal(text):
    assert not is_refusal(text)


@pytest.mark.parametrize("text", [
    "I'm sorry, but I can't help with that.", "I cannot provide an answer to this question.",
    "I'm not comfortable answering that question.", "I can't assist with that.",
])
def test_refusals_are_still_refusals(text):
    assert is_refusal(text)


@pytest.mark.parametrize("ending", [
    "\n\n- first point\n- second point\n- third point",  # a list without full stops
    "\n\n```bash\nmake bench\n```",  # a closed code block
    "\n\n| a | b |\n|---|---|\n| 1 | 2 |",  # a table
    "\n\n---",  # a horizontal rule
    "\n\n[docs]: https://example.org/docs",  # a link definition
    # issue 13 (truncation >= 0.9): the endings the stricter rules must still accept
    "\n\nSee the [benchmarks README](bench/README.md)",  # a paragraph ending on a link
    "\n\nPossible values: [`0`, `0.5`, `1`]",  # a bracketed list
    "\n\n`make bench`",  # a line of inline code only (a command)
    "\n\nThe reviewer will be glad to read it. Really! \U0001f60a",  # a sentence, then an emoji
    "\n\nIt ends inside a parenthesis (as this one does.)",
    "\n\n* Fix A by [@a](https://x.org/a) in https://x.org/pull/1\n* Fix B by [@b](https://x.org/b) in "
    "https://x.org/pull/2\n* Fix C by [@c](https://x.org/c) in [#3](https://x.org/pull/3)",  # URL ~ link
    "\n\n- multi-GPU on several nodes\n- TPU\n- FP16 mixed precision\n- DeepSpeed",  # short siblings
])
def test_legitimate_markdown_endings_are_not_truncation(ending):
    assert truncation("The answer has a proper first paragraph." + ending) is None


@pytest.mark.parametrize("ending,why", [
    ("\n\n```python\nx = compute(", "unclosed code fence"),
    ("\n\nSee", "no terminal punctuation"),  # a 1-word line: cut right after a paragraph began
    ("\n\n- one\n- two\n-", "empty list item"),
    ("\n\nInstall it with:", "ends with ':'"),
    ("\n\nThe **key point", "bold text is not closed"),
    ("\n\nRun `make", "inline code span"),
    ("\n\n| a | b | c |\n|---|---|---|\n| 1 | 2 | 3 |\n| 4 | 5", "table row is cut off"),
    ("\n\n- The first item ends here.\n- The second one too.\n- But the third stops mid", "the ending its siblings have"),
    ("\n\nThe effect depends on the", "ends on 'the'"),
    # issue 13: the misses of the real corpus, as general shapes
    ("\n\nIt will also save the converted model in the path `mlx_model`", "no terminal punctuation"),
    ("\n\nNumPy does not define the distance between elements (`.strides`)", "no terminal punctuation"),
    ("\n\n- `anyio` - required for asyncio.\n- `trio` -", "ends on '-'"),
    ("\n\nIt compiles with cmake, and", "ends on 'and'"),
    ("\n\nThis holds for pandas, Polars,", "ends on ','"),
    ("\n\n- docs/using.md: the main command\n- docs/preference.md: DPO /", "ends on '/'"),
    ("\n\n* Add hooks by [@a](https://x.org/a) in https://x.org/pull/1\n"
     "* Fix paths by [@b](https://x.org/b) in https://x.org/pull/2\n* Optimize", "the ending its siblings have"),
    ("\n\n- Relax the TypeError thrown when comparing a match with anything else\n"
     "- Extend the capability of explain when isolation holds at most two entries\n- Support",
     "its siblings are sentences"),
])
def test_cut_off_endings_are_truncation(ending, why):
    got = truncation("The answer has a proper first paragraph." + ending)
    assert got is not None and why in got, got


def test_loops_inside_markup_are_found():
    base = "The cache cuts latency by a third on warm paths, measured over five runs.\n\n"
    item_loop = base + "- Extend" + " - Extend" * 20
    code = "```python\nresult = run_benchmark(config, repeats=5)\nprint(result.summary())\n```\n\n"
    code_loop = base + code * 5
    table = "| name | value |\n|---|---|\n" + "| throughput at peak | 12,400 |\n" * 6
    for text in (item_loop, code_loop, base + table):
        assert "repetition" in compute([text]).defects, text[:80]
    assert periodic_repeats(("extend " * 12).split()) == 12
    assert periodic_repeats(("0 " * 30).split()) == 1  # numbers are data, never a loop


def _rec(text: str, user: str = "Summarise the findings.") -> Record:
    return Record(messages=[{"role": "user", "content": user}, {"role": "assistant", "content": text}])


def test_template_sharing_answers_stay_apart_while_edited_copies_are_caught():
    """One report skeleton around two different contents is kept twice; the same content with
    ~10% of its words edited is dropped as a near duplicate."""
    skeleton = ("## Findings\n\n{c}\n\n## Method\n\nI read the published documentation and release notes, "
                "compared the stated behaviour with the examples, and noted each claim without a test "
                "behind it.\n\n**Confidence:** moderate, pending an independent check.")
    a = ("The scheduler assigns each job to the least loaded worker and rebalances every thirty seconds; "
         "under bursty load this keeps queue time under two seconds for most jobs, although very large "
         "jobs still wait behind each other because they cannot be split across workers, and the "
         "operators report that retries after a node failure are the main source of duplicated work.")
    b = ("The parser reads the configuration once at start-up, validates every key against a schema and "
         "reports all problems together with their line numbers; unknown keys are errors rather than "
         "warnings, which the maintainers chose after users lost hours to silently ignored typos, and "
         "environment variables override the file only for the documented subset of settings.")
    words = a.split()
    edited = " ".join("notably" if i % 10 == 3 else w for i, w in enumerate(words))  # 10% substituted
    recs = [_rec(skeleton.format(c=a)), _rec(skeleton.format(c=b)), _rec(skeleton.format(c=edited))]
    kept, stats = TruthFilter().filter(recs)
    assert [r.messages[1]["content"] for r in kept] == [recs[0].messages[1]["content"], recs[1].messages[1]["content"]]
    assert stats.near_duplicates_removed == 1
