"""The GGUF proof's limits (gguf_verify.check_limits) on the figures that motivated them.

Figures from bench/results/gguf_q8_0_error.md (real SmolLM2-135M-Instruct, 238 positions):
F16 max |dlogit| 0.0625 at logit scale 44 (mean KLD 1.9e-6); Q8_0 2.32, mean KLD 0.0047,
94.5% argmax over all positions and 100% at the 174 decisive ones. No model is loaded here.
"""

from __future__ import annotations

import numpy as np
import pytest

from iceburg.export.gguf_verify import LIMITS_BY_TYPE, MIN_JUDGED_POSITIONS, check_limits, judge, kl_divergence


def _report(diff: float, scale: float, kld: float = 0.0, decisive: float = 1.0, n_decisive: int = 174) -> dict:
    return {"tokenization_match": True, "tokenization_mismatches": [], "tokenization_texts": 10,
            "max_abs_logit_diff": diff, "logit_scale": scale, "kld_mean": kld, "argmax_agreement": 0.945,
            "argmax_agreement_decisive": decisive, "decisive_positions": n_decisive,
            "greedy_exact_prompts": 5, "prompts": 5}


def test_f16_limit_scales_with_the_logits():
    assert check_limits(_report(0.0625, 44.0, 1.9e-6), "f16") == []  # real SmolLM2: was refused by 5e-2
    assert check_limits(_report(0.04, 1.0), "f16") == []  # small logits: the 5e-2 floor of issue 6
    assert check_limits(_report(0.06, 1.0), "f16")  # ... still holds there
    failures = check_limits(_report(0.5, 44.0), "f16")  # 0.5 > 44 / 128 = 0.34
    assert failures and "0.3438" in failures[0], failures


def test_q8_0_limits():
    assert check_limits(_report(2.32, 44.0, 0.0047), "q8_0") == []  # real SmolLM2's Q8_0
    assert any("kld_mean" in f for f in check_limits(_report(2.32, 44.0, 0.03), "q8_0"))
    assert any("decisive" in f for f in check_limits(_report(2.32, 44.0, 0.0047, decisive=0.9), "q8_0"))
    # random fixtures have no decisive position: the relative limit still judges them
    failures = check_limits(_report(0.3, 1.0, 1e-4, n_decisive=0), "q8_0")
    assert len(failures) == 1 and "0.125" in failures[0], failures



def test_too_few_decisive_positions_are_not_judged_never_passed():
    report = _report(2.32, 44.0, 0.0047, decisive=0.5, n_decisive=MIN_JUDGED_POSITIONS - 1)
    j = judge(report, "q8_0")
    crit = {c["criterion"]: c for c in j["criteria"]}
    assert crit["argmax_agreement_decisive"]["status"] == f"not judged ({MIN_JUDGED_POSITIONS - 1} positions)"
    assert j["failures"] == [] and j["verdict"] == "proven"  # max diff and KLD passed against their limits
    at_twenty = judge(_report(2.32, 44.0, 0.0047, decisive=0.9, n_decisive=MIN_JUDGED_POSITIONS), "q8_0")
    assert at_twenty["verdict"] == "failed" and "20 decisive positions" in at_twenty["failures"][0]


@pytest.mark.parametrize("file_type,kld,published", [("q4_0", 0.29, "0.071940"), ("q4_k_m", 0.125, "0.031273"),
                                                     ("q5_k_m", 0.043, "0.010762"), ("q6_k", 0.022, "0.005452")])
def test_4_to_6_bit_types_have_limits_with_their_source(file_type, kld, published):
    """KLD limit = 4 x llama.cpp's published mean KLD for the type on Llama 3 8B (gguf_verify.LIMITS_BY_TYPE)."""
    limits = LIMITS_BY_TYPE[file_type]
    assert limits.kld_mean == kld and published in limits.source and "perplexity/README.md" in limits.source
    assert judge(_report(0.2, 1.0, kld * 0.9), file_type)["verdict"] == "proven"
    assert any("kld_mean" in f for f in check_limits(_report(0.2, 1.0, kld * 1.1), file_type))
    # the relative rule judges a near-flat model whatever its KLD
    assert any("max_abs_logit_diff" in f for f in check_limits(_report(0.6, 1.0, 0.0, n_decisive=0), file_type))
    crit = {c["criterion"]: c for c in judge(_report(0.3, 1.0), file_type)["criteria"]}
    assert set(crit) == {"tokenization", "argmax_agreement_decisive", "max_abs_logit_diff", "kld_mean"}
    assert all(c["limit"] and c["source"] for c in crit.values())


def test_unknown_type_is_measured_not_proven():
    assert judge(_report(0.3, 1.0), "q2_k")["verdict"] == "measured"


def test_kl_divergence_is_llama_perplexity_s_kld():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 50)).astype(np.float32)
    assert np.allclose(kl_divergence(a, a), 0, atol=1e-12)
    assert np.allclose(kl_divergence(a, a + 3.0), 0, atol=1e-9)  # a shift of all logits changes nothing
    p = np.array([[np.log(0.75), np.log(0.25)]])
    q = np.array([[np.log(0.5), np.log(0.5)]])
    assert kl_divergence(p, q)[0] == pytest.approx(0.75 * np.log(1.5) + 0.25 * np.log(0.5))
