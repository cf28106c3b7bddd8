"""Issue 31's learned combination (`iceburg/truth/combine.py`, coefficients `combiner.json`).

The loop shapes are the ones the leave-one-source-out bench found the rules missing on Debian's
Node.js documentation (a code example repeated as separate fenced blocks, a loop written inside an
unclosed code block); the texts around them are ordinary answers."""

from __future__ import annotations

import json

import pytest

from iceburg.records import Record
from iceburg.truth import TruthFilter
from iceburg.truth.combine import (LOOP_FEATURES, TRUNC_FEATURES, WEIGHTS, SignalCombiner, _chunk_tandem,
                                   _dup_run, _dup_runs)

INTRO = ("The server reads its configuration once at start-up and caches it for the session. "
         "A change to the file takes effect after a restart, which the log reports with the new values.\n\n")
BLOCK = "```js\nconst { Console } = require('node:console');\n```"


def _record(answer: str) -> Record:
    return Record(messages=[{"role": "user", "content": "How does the configuration load?"},
                            {"role": "assistant", "content": answer}])


def _codes(tf: TruthFilter, answer: str) -> tuple[list[str], list[str]]:
    a = tf.assess(_record(answer))
    return [r.code for r in a.reasons], [r.message for r in a.reasons]


def test_artefact_has_every_fold_with_the_code_s_features():
    data = json.loads(WEIGHTS.read_text())
    assert set(data["folds"]) == {"all", "readme", "debian", "python", "project"}
    for fold, models in data["folds"].items():
        assert tuple(models["repetition"]["features"]) == LOOP_FEATURES, fold
        assert tuple(models["truncated"]["features"]) == TRUNC_FEATURES, fold
        for m in models.values():
            assert len(m["coef"]) == len(m["mean"]) == len(m["scale"]) == len(m["features"])
            assert 0 < m["threshold"] < 1
    assert data["meta"]["fit"] == "bench/truth_loso_learned.py"  # reproducible: the script that wrote it


def test_raw_features():
    assert _chunk_tandem("a\n\nb\n\nb  \n\nb\n\nc") == 3  # three identical chunks in a row
    assert _chunk_tandem("a\n\nb\n\na") == 1  # repeated, but not back to back
    words = "one two three four five six seven".split()
    assert _dup_run(words * 3) == 14  # the 2nd and 3rd copies are covered by repeated 5-grams
    assert _dup_run(words) == 0
    # third and later copies only: a loop repeats its unit many times, a document shows an
    # example twice (Node.js's CommonJS and ES-module versions of the same code)
    assert _dup_runs(words * 3) == [14, 7]
    assert _dup_runs(words * 2) == [7, 0]


def test_loop_of_fenced_blocks_is_a_loop_only_for_the_learned_combination():
    # 5 copies: the planted paragraph loops repeat a block 3-8 times (bench/truth_corpus.py); from 6
    # copies of this block the rules' code_dup_line_frac (> 0.8) sees it too
    text = INTRO + "\n\n".join([BLOCK] * 5)
    rules, _ = _codes(TruthFilter(combine="rules"), text)
    learned, msgs = _codes(TruthFilter(combine="learned"), text)
    assert _codes(TruthFilter(), text)[0] == learned  # the learned combination is the default (issue 31)
    # the rules read each one-line block alone (code_tandem needs copies inside one block)
    assert rules == []
    assert learned == ["repetition"], msgs
    assert "raw_chunk_tandem" in msgs[0]  # the reason names the signal that drove it


CLEAN = INTRO + "- `reload()` re-reads the file.\n- `dump()` prints the values in use.\n\nNothing else is cached."
CUT = INTRO + "The cache is invalidated when the file changes and the"


def test_shipped_artefact_leaves_truncation_to_the_rules():
    # combiner.json "parts": only the loop model generalised leave-one-source-out (docs/truth_filter.md)
    tf = TruthFilter(combine="learned")
    assert set(tf.combiner.models) == {"repetition"}
    assert _codes(tf, CLEAN)[0] == []
    codes, msgs = _codes(tf, CUT)
    assert codes == ["truncated"] and "learned" not in msgs[0], msgs


def test_truncation_model_names_its_features_when_asked_for():
    tf = TruthFilter(combine=SignalCombiner.load("all", parts=("repetition", "truncated")))
    assert _codes(tf, CLEAN)[0] == []
    codes, msgs = _codes(tf, CUT)
    assert codes == ["truncated"], msgs
    assert "learned score" in msgs[0] and "line rules" in msgs[0]  # model score and the rule's own verdict


def test_a_fold_model_loads_and_bad_settings_fail_loudly():
    assert SignalCombiner.load("debian").name == "debian"
    with pytest.raises(ValueError, match="no fold"):
        SignalCombiner.load("nosuchsource")
    with pytest.raises(ValueError, match="combine must be"):
        TruthFilter(combine="logistic")
    with pytest.raises(ValueError, match="needs completeness='structure'"):
        TruthFilter(combine="learned", completeness="lines")
    # the default follows completeness: the model with the structure rules, the rules with the line rules
    assert TruthFilter().combiner is not None and TruthFilter(completeness="lines").combiner is None


def test_a_cut_comes_back_when_the_model_clears_the_rules_loop():
    # The rules drop a cut when they call the answer a loop (its end would be no second defect).
    # Here a first turn that restates one sentence trips the per-turn Gopher 5-gram rule (0.39 >
    # 0.15), the loop model says it is no loop, and the final answer stops on "the": the cut must
    # be reported (issue 31: 5 of Python's missed cuts were this).
    t1 = ("Each worker reads its shard, scores the records and writes the kept ones to its own spool file. "
          "The spool file is merged at the end in the order of the input. "
          "Each worker reads its shard, scores the records and writes the kept ones to its own spool file, "
          "and the merge keeps the order of the input files.")
    t2 = ("The merge reads every spool file once and writes filtered.jsonl in the order of the input, so the "
          "output does not depend on how many workers ran or which of them finished first. If a worker fails, the")
    rec = lambda: Record(messages=[{"role": "user", "content": "How are shards written?"},  # noqa: E731
                                   {"role": "assistant", "content": t1},
                                   {"role": "user", "content": "And the merge?"}, {"role": "assistant", "content": t2}])
    assert [r.code for r in TruthFilter(combine="rules").assess(rec()).reasons] == ["repetition"]
    reasons = TruthFilter(combine="learned").assess(rec()).reasons
    assert [r.code for r in reasons] == ["truncated"] and "'the'" in reasons[0].message
    # complete, the same answer passes: the cut, not the restated sentence, is the defect
    t2 = t2.rsplit(" If", 1)[0]
    assert TruthFilter(combine="learned").assess(rec()).reasons == []


# Node.js's zlib documentation (Debian's nodejs-doc, doc/api/zlib.md, "Flushing"): one example shown
# twice, as an ES module and as CommonJS - documentation repeats an example, a loop repeats many times.
ZLIB_FLUSH = """Calling [`.flush()`][] on a compression stream will make `zlib` return as much
output as currently possible. This may come at the cost of degraded compression
quality, but can be useful when data needs to be available as soon as possible.

In the following example, `flush()` is used to write a compressed partial
HTTP response to the client:

""" + "\n\n".join("""```{kind}
{imports}

http.createServer((request, response) => {{
  // For the sake of simplicity, the Accept-Encoding checks are omitted.
  response.writeHead(200, {{ 'content-encoding': 'gzip' }});
  const output = zlib.createGzip();
  let i;

  pipeline(output, response, (err) => {{
    if (err) {{
      // If an error occurs, there's not much we can do because
      // the server has already sent the 200 response code and
      // some amount of data has already been sent to the client.
      // The best we can do is terminate the response immediately
      // and log the error.
      clearInterval(i);
      response.end();
      console.error('An error occurred:', err);
    }}
  }});

  i = setInterval(() => {{
    output.write(`The current time is ${{Date()}}\\n`, () => {{
      // The data has been passed to zlib, but the compression algorithm may
      // have decided to buffer the data for more efficient compression.
      // Calling .flush() will make the data available as soon as the client
      // is ready to receive it.
      output.flush();
    }});
  }}, 1000);
}}).listen(1337);
```""".format(kind=k, imports=i) for k, i in (
    ("mjs", "import zlib from 'node:zlib';\nimport http from 'node:http';\nimport { pipeline } from 'node:stream';"),
    ("cjs", "const zlib = require('node:zlib');\nconst http = require('node:http');\n"
            "const { pipeline } = require('node:stream');")))


def test_loop_thresholds_sit_mid_plateau_so_a_twice_shown_example_is_kept():
    # Issue 31, session 5: the fold threshold was the LOWEST of a wide range with equal training
    # shortfall (0.10-0.20), and the Debian fold's model (fit without Debian) scored this clean page
    # 0.34 >= 0.20: rejected as a loop. Ties now go to the fewest clean rejections, then the middle of
    # the tied range (bench/truth_loso_learned.py `choose`): measured 0.55-0.70 for every fold.
    data = json.loads(WEIGHTS.read_text())
    for fold, models in data["folds"].items():
        assert models["repetition"]["threshold"] >= 0.5, fold  # above the old lowest-tie picks (<= 0.2)
    fold = SignalCombiner.load("debian")
    rec = _record(ZLIB_FLUSH)
    a = TruthFilter(combine=fold).assess(rec)
    assert [r.code for r in a.reasons] == [], [r.message for r in a.reasons]
    # measured 0.29 under the refit fold model; it must stay clearly under the fold's threshold (0.70)
    # and it sat above the old lowest-tie threshold (0.20): the margin is what the tie-break bought
    assert 0.2 < rec.signals["truth.p_repetition"] < fold.models["repetition"].threshold - 0.2
    # the same model still calls five copies of a block a loop (the planted loops repeat 3-8 times)
    looped = INTRO + "\n\n".join([BLOCK] * 5)
    assert "repetition" in [r.code for r in TruthFilter(combine=fold).assess(_record(looped)).reasons]
