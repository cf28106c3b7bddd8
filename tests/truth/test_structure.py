"""Issue 31's structure-aware signals on real text shapes (`iceburg/truth/structure.py`).

The texts are real: endings of the documents the leave-one-source-out bench (bench/truth_loso.py)
found rejected by the line rules (Debian man pages, Python stdlib docstrings, package READMEs,
this project's docs), and the shapes the issue names (a metadata line, a bold label, an emoji
checklist, a code-span-dense list, sections of one project sharing boilerplate)."""

from __future__ import annotations

import pytest

from iceburg.records import RejectWriter
from iceburg.truth import TruthFilter
from iceburg.truth.signals import compute
from iceburg.truth.structure import code_tandem, fence_literal_blocks, last_block, review_cut

INTRO = "The package reads its configuration once at start-up and caches it for the session.\n\n"

COMPLETE = {
    # a `key: value` metadata block closing a report
    "metadata": INTRO + "Version: 2.4.1\nLicense: MIT",
    # a bold label with a short value (issue 31's example shape)
    "label": INTRO + "**Confidence:** moderate",
    # a checklist whose items start with emoji markers, no list syntax
    "emoji checklist": INTRO + "\u2705 Build the wheel for every platform\n\U0001f532 Upload the wheels to PyPI",
    # GFM task list
    "task list": INTRO + "- [x] parse the configuration\n- [ ] document the new flags",
    # a doctest closing a docstring (Python's turtle.heading docstring)
    "doctest": "Return the turtle's current heading.\n\nExample (for a Turtle instance named turtle):\n"
               ">>> turtle.left(67)\n>>> turtle.heading()\n67.0",
    # definition lines of a docstring (Python's aifc writer notes)
    "definition run": "Internal state of the writer.\n\n_nframeswritten -- the number of frames actually written\n"
                      "_datawritten -- the size of the audio samples actually written",
    # a closed code block
    "code": INTRO + "```bash\npip install iceburg\n```",
    # session 3 (Debian's Node.js changelog): an item ending on a version number, after "(Author)" items
    "changelog version": "* Support DEL in the REPL. (J\u00e9r\u00e9my Lal)\n\n* Use javascript port of Ronn to build "
                         "docs (J\u00e9r\u00e9my Lal)\n\n* Upgrade V8 to 2.3.0",
    # a shell command continued with a backslash, complete on its last line (gcloud man page)
    "continued command": "To remove all POSIX accounts associated with the current user in the project named "
                         "example-project, run:\n\n$ gcloud alpha compute os-login remove-profile \\\n"
                         "--project=example-project",
    # session 5, clean endings the learned default rejected (bench/truth_loso.py, record by record):
    # Debian's Node.js changelog, an item carrying a bare autolink after its "(Author)" ending
    "autolink after the author": "* \\[[`a113e02f16`](https://github.com/nodejs/node/commit/a113e02f16)] - deps: "
                                 "backport 3a9bfec from v8 upstream (Ben Noordhuis)\n* \\[[`5df21b2e36`](https://"
                                 "github.com/nodejs/node/commit/5df21b2e36)] - deps: backport 9a4fd268 from libuv "
                                 "upstream (Rod Vagg)\n* \\[[`8138055c88`](https://github.com/nodejs/node/commit/"
                                 "8138055c88)] - test: fix test failure due to expired certificates (Ben Noordhuis) "
                                 "<https://github.com/nodejs/node/pull/7195>",
    # Debian's V8 notes: a bare address in place of its siblings' full stop
    "address for a full stop": "  * Implement new `TypedArray.from()` and `TypedArray.of()` functions. See "
                               "<https://developer.mozilla.org/en-US/docs/Web/JavaScript/Reference/Global_Objects/"
                               "TypedArray> for further information.\n  * Implement arrow functions, see <https://"
                               "developer.mozilla.org/en-US/docs/Web/JavaScript/Reference/Functions/Arrow_functions> "
                               "for further information.\n  * Full ChangeLog available at <https://github.com/v8/"
                               "v8-git-mirror/blob/4.5.103/ChangeLog>",
    # Python's zipfile.ZipFile.extract docstring: TeX/GNU quotes, `member' and `path'
    "GNU quotes": "Extract a member from the archive to the current working directory, using its full name. "
                  "Its file information is extracted as accurately\nas possible. `member' may be a filename or a "
                  "ZipInfo object. You can\nspecify a different directory using `path'.",
    # Python's inspect.isgenerator docstring: an aligned definition table, no entry with a full stop
    "aligned definition table": "Generator objects provide these attributes:\n"
                                "    close           raises a new GeneratorExit exception inside the\n"
                                "                    generator to terminate the iteration\n"
                                "    gi_code         code object\n"
                                "    next            return the next item from the container\n"
                                "    throw           used to raise an exception inside the generator",
    # Python's os.walk docstring: example code whose last line carries a PEP 8 inline comment
    "commented code": "Example:\n\nimport os\nfor root, dirs, files in os.walk('python/Lib/email'):\n"
                      "    print(root, \"consumes \")\n    if 'CVS' in dirs:\n"
                      "        dirs.remove('CVS')  # don't visit CVS directories",
}

CUT = {
    "mid-sentence": INTRO + "The cache is invalidated when the file changes and",
    "mid-code-block": INTRO + "```python\nfrom iceburg.truth import TruthFilter\ntf = TruthFilter(",
    "mid-metadata": INTRO + "Version: 2.4.1\nLicense: the terms of the",
    "label item cut": INTRO + "- **Fast**: kernels are fused for speed.\n- **Portable**: runs on CPU and GPU alike.\n"
                            "- **Command Line Interface (CLI)**: A simple",
    "mid-doctest call": "Covariance is a measure of the joint variability of two inputs.\n\n>>> x = [1, 2, 3, 4, 5,",
    "cut table row": INTRO + "| flag | default |\n|---|---|\n| `--workers` | 2 |\n| `--seed`",
    # session 3: planted cuts the rules missed on the LOSO corpora (real endings up to the cut)
    "bare doctest prompt": "Return the turtle's current heading.\n\nExample (for a Turtle instance named turtle):\n>>>",
    "bare shell prompt": "Then, in the `sympy` repository that you cloned, simply run:\n\n    $",
    "continued line": "Running:\n\ngcloud compute instance-groups managed rolling-action start-update "
                      "example-managed-instance-group \\",
    "definition separator": "'message' -- a regex that the warning message must match\n'category' --",
    "code assignment": "It has the following interface (key and data are strings):\n\n        d[key] =",
    "first item of an announced list": INTRO + "Some highlights across the different types of training are:\n\n"
                                       "- Support of various",
    "emoji paragraph": INTRO + "\U0001f917 Accelerate even handles the device placement for you (which requires a "
                       "few more changes to your code, but is safer in general), so you can even simplify your training loop",
    "definition on a dangling word": "Retrieve data in binary mode.\n\nArgs:\n  cmd: A RETR command.\n"
                                     "  callback: A single parameter callable to be called on each",
    # session 5: planted cuts the learned default missed (real endings up to the cut)
    # Python's ssl docstring, cut after the next line's indentation
    "cut in a new line's indentation": "Note: if ssl_context is provided, then parameters keyfile or\n"
                                       "        certfile should not be set otherwise ValueError is raised.\n    ",
    # a README's two-item list (httpcore): the item before ends with a mark, the cut one does not
    "cut in a two-item list": "- Support async cancellations, ensuring that the connection pool is left in a clean "
                              "state when cancellations occur. (#726)\n- The networking backend interface has [been "
                              "added to the public API](https://www.encode.io/httpcore/network-backends). Some "
                              "classes which were previously private implementation",
    # an aligned table whose entries end with full stops (the table's style): an entry without one
    "cut in a punctuated definition table": "Options:\n    -v              Print more output.\n"
                                            "    -q              Print nothing at all.\n"
                                            "    -o FILE         Write the report to",
    "cut in a punctuated definition table, no dangling word": "Options:\n    -v              Print more output.\n"
                                                              "    -q              Print nothing at all.\n"
                                                              "    -o FILE         Write the report",
    # an inline comment is no licence for prose: a prose line with "  # " stays judged as prose
    "prose before a hash": INTRO + "See the changelog for what changed  # and the reasons behind",
}


@pytest.mark.parametrize("name", list(COMPLETE))
def test_complete_blocks_are_kept(name):
    text = COMPLETE[name]
    assert "truncated" not in compute([text], structure=True).defects, (name, last_block(text))


@pytest.mark.parametrize("name", list(CUT))
def test_cut_blocks_stay_truncated(name):
    assert "truncated" in compute([CUT[name]], structure=True).defects, (name, last_block(CUT[name]))


def test_the_line_rules_alone_reject_the_shapes_the_structure_keeps():
    # what issue 31 is about: these endings are rejected by the line rules of issue 13
    # (the doctest's last output, "67.0", ends on a number, which the line rules accept since session 3)
    for name in ("metadata", "label", "emoji checklist", "definition run"):
        assert "truncated" in compute([COMPLETE[name]]).defects, name


def test_last_block_kinds():
    assert last_block(COMPLETE["doctest"])[0] == "doctest"
    assert last_block(COMPLETE["code"])[0] == "code"
    assert last_block(CUT["cut table row"])[0] == "table"
    assert last_block(COMPLETE["task list"])[0] == "list_item"
    assert review_cut(CUT["mid-code-block"], "unclosed code fence") == "unclosed code fence"


def test_code_span_dense_list_is_not_garbage():
    # docs/data.md style: a list dense with code spans (issue 31: alphabetic-word share just
    # under 0.8 once commas after code spans counted as symbol words)
    text = ("The loader keeps these keys:\n\n- `messages`, `metadata`, `signals`, `weight`, `tools` / `functions`; "
            "any other top-level key is stored under `metadata`.\n- `quality_score` (`0..1`), `agent_type` "
            "(`surveyor`, `dissident`, `oracle`), `source` and `line` are kept as they are.")
    ts = compute([text], structure=True)
    assert "garbage" not in ts.defects and ts.values["alpha_word_frac"] >= 0.8


def test_doctest_is_code_not_prose():
    # Python's decimal docstrings: a run of near-identical doctest lines is an example, not a loop
    lines = [f">>> ExtendedContext.abs(Decimal('{s}{n}.5'))\nDecimal('{n}.5')" for n in range(1, 9) for s in ("", "-")]
    text = "Returns the absolute value of the operand.\n\n" + "\n".join(lines)
    assert "```" in fence_literal_blocks(text)
    assert "repetition" not in compute([text], structure=True).defects
    assert "repetition" in compute([text]).defects  # the line rules read it as prose


def test_scattered_repetition_is_not_a_loop_but_a_run_is():
    # Python's stat module docs repeat their phrases per constant: scattered, not back to back
    modes = [("S_IRUSR", "readable by owner"), ("S_IWUSR", "writable by owner"), ("S_IXUSR", "executable by owner"),
             ("S_IRGRP", "readable by group"), ("S_IWGRP", "writable by group"), ("S_IXGRP", "executable by group"),
             ("S_IROTH", "readable by others"), ("S_IWOTH", "writable by others"), ("S_IXOTH", "executable by others")]
    doc = "\n".join(f"{c} is the file mode bit indicating the file is {what} on this system." for c, what in modes)
    assert "repetition" not in compute([doc], structure=True).defects
    loop = doc + "\n" + " ".join(["The file mode bit indicating the file is readable by owner."] * 8)
    assert "repetition" in compute([loop], structure=True).defects


def test_code_tandem_counts_blocks_repeated_back_to_back():
    assert code_tandem([["console.log(buf.toString());", "buf.swap16();", "console.log(buf.toString());"]]) == 1
    block = ["const x = compute(value);", "console.log(x.toString());"]
    assert code_tandem([block * 4]) == 4


def _conv(answer: str, question: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def test_distinct_sections_sharing_boilerplate_are_both_kept():
    # two sections of this project's docs/truth_filter.md behind one shared preamble
    pre = ("iceburg turns agent conversation logs into LoRA-tuned local models; every stage below "
           "is proven by a test on real files.\n\n")
    a = ("Exact duplicates: a 128-bit BLAKE2b of the normalised words, so re-spacing and case changes "
         "match. Near duplicates: MinHash over word 2-grams with 160 permutations and LSH banding of 32 "
         "bands by 5 rows; candidates are verified by their estimated Jaccard. Records are visited best "
         "score first, so each cluster keeps its best-scored member.")
    b = ("Many threads and processes may write one file: each record is one JSON line, written with one "
         "write call on an append descriptor while holding an exclusive lock on a sidecar lock file. "
         "Rotation renames the file before a write would take it past its size limit, and writers in "
         "other processes see the inode change and reopen it.")
    kept, stats = TruthFilter(completeness="structure").filter(
        [_conv(pre + a, "How are duplicates found?"), _conv(pre + b, "How does the logger write?")])
    assert len(kept) == 2 and stats.near_duplicates_removed == 0


def test_lost_exact_duplicate_group_is_reported(tmp_path):
    cut = CUT["mid-sentence"]
    recs = [_conv(cut, "What does the cache do?"), _conv(cut.upper(), "WHAT DOES THE CACHE DO?"),
            _conv(COMPLETE["label"], "How sure are you?")]
    with RejectWriter(tmp_path / "rejects.jsonl") as rw:
        kept, stats = TruthFilter(completeness="structure").filter(recs, rejects=rw)
    assert len(kept) == 1 and stats.duplicate_groups_lost == 1
    assert stats.reasons["duplicate_group_lost"] == 1
    lost = [r for r in (tmp_path / "rejects.jsonl").read_text().splitlines() if "duplicate_group_lost" in r]
    assert len(lost) == 1 and "truncated" in lost[0]


def test_completeness_is_validated():
    with pytest.raises(ValueError, match="completeness"):
        TruthFilter(completeness="sentences")


def test_document_habit_gate_is_off_by_default_and_clears_only_a_missing_mark(monkeypatch):
    from iceburg.truth import structure
    from iceburg.truth.signals import open_paragraph_share

    # a docstring that ends its paragraphs without a sentence mark (issue 31: man pages, docstrings)
    doc = ("Select the ready file objects.\n\nArguments:\ntimeout -- seconds to wait, or None\n\n"
           "Returns:\nlist of (key, events) for ready file objects\n\n"
           "Raises:\nOSError when the selector was closed\n\n`events` is a bitwise mask of EVENT_READ|EVENT_WRITE")
    assert open_paragraph_share(doc) == pytest.approx(3 / 4)  # "Select ... objects." has its mark
    assert "truncated" in compute([doc], structure=True).defects  # off (None) by default
    monkeypatch.setattr(structure, "OPEN_PARA_HABIT", 0.67)
    assert "truncated" not in compute([doc], structure=True).defects
    # the gate clears only "no terminal punctuation": a dangling last word is still a cut
    assert "truncated" in compute([doc + " and the"], structure=True).defects
    # a document that punctuates its paragraphs keeps the verdict
    prose = "One sentence here.\n\nAnother one here.\n\nA third one.\n\nThe last paragraph stops without its mark"
    assert open_paragraph_share(prose) == 0.0
    assert "truncated" in compute([prose], structure=True).defects
