"""Agent rubrics: does an answer do what its agent is for?

Each rubric is a few named criteria; a criterion is met to the degree its cue patterns occur
(`min(1, hits / needed)`), and the rubric score is the mean over criteria, in [0, 1]. The criteria
come from the agents' roles in the original ICEBURG design (and `iceburg.config.SYSTEM_PROMPTS`):
- surveyor: evidence, sources and citations, calibrated claims;
- dissident: contradictions found, counter-arguments, alternative hypotheses;
- synthesist: connections across domains, integration;
- oracle: principles, validated conclusions, stated confidence.
Records with no agent use the general rubric (structure, specificity, reasoning).

The cue lists are lexical, which is cheap (microseconds per answer) and explainable: the stored
signal names the criterion (`truth.rubric.citations = 1.0`). A rubric raises the grade of an answer
that does its job; it never rejects a well-formed answer on its own (see `TruthFilter` scoring).
"""

from __future__ import annotations

import re

Criterion = tuple[str, re.Pattern[str], int]  # name, cue pattern, hits needed for full credit


def _rx(*alts: str) -> re.Pattern[str]:
    return re.compile(r"(?:" + "|".join(alts) + r")", re.I)


CITATION = _rx(r"\[\d+(?:[,\u2013-]\s*\d+)*\]", r"\bet al\.?", r"\(\s*[A-Z][A-Za-z-]+(?: et al\.?| and [A-Z][a-z]+)?,? (?:19|20)\d\d\s*\)",
               r"https?://", r"\bdoi\b", r"\barxiv\b", r"\b[A-Z][a-z]+ (?:et al\.?,? )?\(?(?:19|20)\d\d\)?",
               r"\bNEJM\b|\bJAMA\b|\bLancet\b|\bNature\b|\bScience\b|\bPNAS\b|\bBMJ\b|\bCochrane\b")
EVIDENCE = _rx(r"\bevidence\b", r"\bstud(?:y|ies)\b", r"\btrials?\b", r"\bdata\b", r"\bmeta-analys[ie]s\b",
               r"\bsample\b", r"\bmeasured\b", r"\breported\b", r"\baccording to\b", r"\bsurvey\b",
               r"\bobservational\b", r"\brandomi[sz]ed\b", r"\bexperiment", r"\bfindings?\b", r"\bsources?\b")
CALIBRATION = _rx(r"\blikely\b", r"\bunlikely\b", r"\bprobabl[ey]\b", r"\bsuggests?\b", r"\buncertain",
                  r"\bconfidence\b", r"\bmay\b", r"\bmight\b", r"\blimited\b", r"\bweak\b", r"\bstrong\b",
                  r"\bmoderate\b", r"\bunclear\b", r"\bnot (?:yet )?(?:established|proven|known)\b", r"\bcaveat")
CONTRADICTION = _rx(r"\bcontradict", r"\binconsisten", r"\bconflict", r"\bdoes not (?:follow|hold)\b",
                    r"\bflaw", r"\bweakness", r"\bassum(?:es|ption)", r"\bhidden premise", r"\bbias",
                    r"\bconfound", r"\boverstat", r"\bcherry-pick", r"\bfallacy")
COUNTER = _rx(r"\bhowever\b", r"\bbut\b", r"\bcounter", r"\bon the other hand\b", r"\bobjection",
              r"\bchalleng", r"\bcritic", r"\bdisput", r"\bskeptic", r"\bin fact\b", r"\bnot necessarily\b")
ALTERNATIVE = _rx(r"\balternative", r"\bother explanation", r"\banother (?:explanation|possibility|reading)",
                  r"\bcould also\b", r"\binstead\b", r"\brival", r"\bcompeting", r"\bhypothes[ie]s\b",
                  r"\bor (?:rather|perhaps)\b", r"\breverse causation\b")
CONNECTION = _rx(r"\bconnect", r"\blinks?\b", r"\banalog", r"\bparallel", r"\bsimilar(?:ly)? to\b",
                 r"\bacross\b", r"\bjust as\b", r"\bmirrors?\b", r"\bbridge", r"\bshared mechanism",
                 r"\bboth\b", r"\bcommon (?:thread|pattern|mechanism)")
DOMAINS = _rx(r"\bbiolog", r"\beconom", r"\bphysic", r"\bpsycholog", r"\bsociolog", r"\becolog",
              r"\bneuro", r"\bcomput", r"\bengineer", r"\bmathemat", r"\bhistor", r"\bclimat", r"\bmedic",
              r"\bchemi", r"\bnetwork", r"\bevolution", r"\bthermodynam", r"\binformation theory")
INTEGRATION = _rx(r"\btogether\b", r"\bintegrat", r"\bcombin", r"\bsynthes", r"\bunif", r"\boverall\b",
                  r"\btaken together\b", r"\bcoherent\b", r"\bframework\b", r"\bbig picture\b", r"\bin sum")
PRINCIPLE = _rx(r"\bprinciple", r"\bfundamental", r"\bunderlying\b", r"\blaw of\b", r"\bmechanism",
                r"\bfirst principles\b", r"\bbecause\b", r"\bgeneral rule\b", r"\bcausal")
CONCLUSION = _rx(r"\bconclu", r"\bverdict\b", r"\btherefore\b", r"\bthus\b", r"\bvalidat", r"\bsupported\b",
                 r"\bconfirm", r"\bholds?\b", r"\bestablished\b", r"\bbottom line\b", r"\bin short\b")
CONFIDENCE = _rx(r"\bconfidence\b", r"\bconfident\b", r"\b\d{1,3}\s?%", r"\bprobability\b", r"\b(?:high|low|moderate)\b",
                 r"\bcertain", r"\blikelihood\b", r"\bcredence\b")
STRUCTURE = re.compile(r"^\s*(?:[-*+]\s|\d+[.)]\s|#{1,6}\s|\|)|\n\s*\n", re.M)
SPECIFIC = re.compile(r"\b\d[\d,.]*\b|\b[A-Z][a-z]+ [A-Z][a-z]+\b")
REASONING = _rx(r"\bbecause\b", r"\btherefore\b", r"\bso\b", r"\bthus\b", r"\bsince\b", r"\bwhich means\b",
                r"\bas a result\b", r"\bhowever\b", r"\bfor example\b", r"\be\.g\.")

RUBRICS: dict[str, list[Criterion]] = {
    "general": [("structure", STRUCTURE, 2), ("specificity", SPECIFIC, 3), ("reasoning", REASONING, 3)],
    "surveyor": [("evidence", EVIDENCE, 4), ("citations", CITATION, 2), ("calibration", CALIBRATION, 3)],
    "dissident": [("contradictions", CONTRADICTION, 2), ("counter_arguments", COUNTER, 3),
                  ("alternatives", ALTERNATIVE, 2)],
    "synthesist": [("connections", CONNECTION, 3), ("domains", DOMAINS, 2), ("integration", INTEGRATION, 2)],
    "oracle": [("principles", PRINCIPLE, 2), ("conclusions", CONCLUSION, 2), ("confidence", CONFIDENCE, 1)],
}


def rubric_name(agent_type: str | None) -> str:
    """Map an agent name ("surveyor", "iceburg-surveyor", "Surveyor") to its rubric."""
    if not agent_type:
        return "general"
    name = agent_type.strip().lower().removeprefix("iceburg-")
    return name if name in RUBRICS else "general"


def score_rubric(text: str, agent_type: str | None) -> tuple[str, float, dict[str, float]]:
    """(rubric name, score in [0, 1], per-criterion scores). An agent rubric is averaged with the
    general one, so a well-structured specific answer is not graded on cue words alone."""
    name = rubric_name(agent_type)
    per: dict[str, float] = {}
    for crit, rx, needed in RUBRICS[name]:
        per[crit] = min(1.0, len(rx.findall(text)) / needed)
    score = sum(per.values()) / len(per)
    if name != "general":
        general = [min(1.0, len(rx.findall(text)) / n) for _, rx, n in RUBRICS["general"]]
        score = 0.5 * score + 0.5 * sum(general) / len(general)
    return name, score, per
