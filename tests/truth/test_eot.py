"""End-of-turn model signal (issue 31): real SmolLM2-135M-Instruct, real text, band logic."""

from __future__ import annotations

import pytest

from iceburg.records import Record
from iceburg.truth import TruthFilter
from iceburg.truth.eot import EotBand, EotModelError, EotScorer, ends_open, render_until_answer_end

QUESTION = "What does the ls command do, and how do I see file sizes?"
DONE = ("The `ls` command lists the files and directories in the current directory. Add `-l` for a long "
        "listing that shows permissions, owner, size and modification date, and add `-h` to print the "
        "sizes in human-readable units such as K and M.")
CUT = ("The `ls` command lists the files and directories in the current directory. Add `-l` for a long "
       "listing that shows permissions, owner, size and modification date, and add `-h` to print the "
       "sizes in human-readable units such as")
# The rules' uncertain band: ends open (a list item without a full stop), no rule sees a cut.
OPEN = ("The `ls` command lists directory contents. The options you will use most:\n\n"
        "- `-l` long listing with permissions and sizes\n- `-a` include hidden files\n"
        "- `-h` human-readable sizes")


def msgs(answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": answer}]


@pytest.fixture(scope="module")
def smollm2():
    from iceburg.base_models import resolve_base_model
    from iceburg.base_models.errors import BaseModelError

    try:
        base = resolve_base_model("smollm2-135m", allow_download=False)
    except BaseModelError as e:  # the embedded GGUF package is not installed here
        pytest.skip(f"smollm2-135m not available offline: {e}")
    import torch

    torch.set_num_threads(1)
    scorer = EotScorer(base.path, batch_size=4)
    scorer.load()
    return scorer


def test_render_stops_at_answer_end(smollm2):
    text = render_until_answer_end(smollm2._tok, msgs(DONE))
    assert text.endswith(DONE) and QUESTION in text and "<|im_end|>" in text  # the user turn is closed


def test_truncated_answer_has_lower_eot_probability(smollm2):
    done, cut = smollm2.score([msgs(DONE), msgs(CUT)])
    # Measured on SmolLM2-135M-Instruct (2026-12-06): -4.4 (finished) vs -28.7 (cut after "such
    # as") nats; over the LOSO band the medians of clean vs truncated records differ by 9-14 nats
    # (bench/results/truth_eot.md). 3 nats (a 20x probability ratio) is far inside both gaps and
    # far above the float noise of a batched vs single forward (< 0.01 nats, checked below).
    assert done - cut > 3.0, (done, cut)
    single = smollm2.score([msgs(CUT)])[0]
    assert abs(single - cut) < 0.01  # left padding in a batch changes nothing


def test_band_consults_model_only_inside_band(smollm2):
    assert ends_open(OPEN) and not ends_open(DONE) and ends_open(CUT)
    tf = TruthFilter(eot=EotBand(smollm2, threshold=-1e9))  # never cuts: we count consultations only
    before = smollm2.calls
    tf.assess(Record(messages=msgs(DONE)))  # ends in a full stop, no rule sees a cut: not consulted
    assert smollm2.calls == before
    tf.assess(Record(messages=msgs("I'm sorry, but I can't help with that")))  # refusal already rejects it
    assert smollm2.calls == before
    r = Record(messages=msgs(OPEN))
    a = tf.assess(r)
    assert smollm2.calls == before + 1 and "truth.eot_logprob" in r.signals
    assert not any(x.code == "truncated" for x in a.reasons)
    # The same band record with a threshold above its log-prob is rejected as truncated, and says why.
    tf_cut = TruthFilter(eot=EotBand(smollm2, threshold=r.signals["truth.eot_logprob"] + 0.5))
    a2 = tf_cut.assess(Record(messages=msgs(OPEN)))
    assert [x.code for x in a2.reasons] == ["truncated"] and "end-of-turn" in a2.reasons[0].message


def test_eot_needs_structure_mode_and_a_chat_template(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="structure"):
        TruthFilter(completeness="lines", eot=EotBand(EotScorer(tmp_path), threshold=-5.0))
    # The tiny test model ships a ChatML template: it loads and scores (weights are random, so
    # only the shape of the answer is checked: one finite log-prob per record, all <= 0).
    s = EotScorer(tiny_model_dir)
    out = s.score([msgs(DONE), msgs(CUT), msgs(OPEN)])
    assert len(out) == 3 and all(v <= 0 for v in out)
    with pytest.raises(EotModelError):
        render_until_answer_end(s._tok, [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}])
