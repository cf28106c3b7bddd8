"""Agent rubrics: does an answer do what its agent is for?

Each rubric is a few named criteria; a criterion is met to the degree its cues occur
(`min(1, hits / needed)`), and the rubric score is the mean over criteria, in [0, 1]. The criteria
come from the agents' roles in the original ICEBURG design (and `iceburg.config.SYSTEM_PROMPTS`):
- surveyor: evidence, sources and citations, calibrated claims;
- dissident: contradictions found, counter-arguments, alternative hypotheses;
- synthesist: connections across domains, integration;
- oracle: principles, validated conclusions, stated confidence.
Records with no agent use the general rubric (structure, specificity, reasoning); an agent's
rubric is averaged with the general one, so a well-structured, specific answer is not graded on
cue words alone.

Cues are words (`"trial"`), word prefixes (`"contradict*"`) or phrases (`"on the other hand"`),
matched on the lower-cased `\\w+` words of the answer; a word's criteria are cached across records,
so a rubric costs one pass over the words (the first version used regex alternations and took
2.6 ms per answer, measured; this one ~0.1 ms). Lexical cues are cheap and explainable (the stored
signal names the criterion: `truth.rubric.citations = 1.0`). A rubric raises the grade of an answer
that does its job; it never rejects a well-formed answer on its own (see `TruthFilter` scoring).
"""

from __future__ import annotations

import re
from collections import Counter
from itertools import islice

Criterion = tuple[str, tuple[str, ...], int]  # name, cues, hits needed for full credit

EVIDENCE = ("evidence", "study", "studies", "trial", "trials", "data", "meta", "sample", "measured",
            "reported", "according to", "survey", "observational", "randomi*", "experiment*", "finding*",
            "source", "sources", "cohort", "estimate*")
CALIBRATION = ("likely", "unlikely", "probabl*", "suggest*", "uncertain*", "confidence", "may", "might",
               "limited", "weak", "strong", "moderate", "unclear", "not established", "not proven",
               "caveat*", "plausibl*", "tentative*")
CONTRADICTION = ("contradict*", "inconsisten*", "conflict*", "does not follow", "does not hold", "flaw*",
                 "weakness*", "assum*", "hidden premise", "bias*", "confound*", "overstat*", "cherry",
                 "fallac*")
COUNTER = ("however", "but", "counter*", "on the other hand", "objection*", "challeng*", "critic*",
           "disput*", "skeptic*", "in fact", "not necessarily")
ALTERNATIVE = ("alternative*", "other explanation", "another explanation", "another possibility",
               "could also", "instead", "rival*", "competing", "hypothes*", "or rather",
               "reverse causation")
CONNECTION = ("connect*", "link", "links", "linked", "analog*", "parallel*", "similar to", "similarly",
              "across", "just as", "mirror*", "bridge*", "shared mechanism", "both", "common thread",
              "common pattern", "common mechanism")
DOMAINS = ("biolog*", "econom*", "physic*", "psycholog*", "sociolog*", "ecolog*", "neuro*", "comput*",
           "engineer*", "mathemat*", "histor*", "climat*", "medic*", "chemi*", "network*", "evolution*",
           "thermodynam*", "information theory")
INTEGRATION = ("together", "integrat*", "combin*", "synthes*", "unif*", "overall", "coherent",
               "framework*", "big picture", "in sum")
PRINCIPLE = ("principle*", "fundamental*", "underlying", "law of", "mechanism*", "first principles",
             "because", "general rule", "causal*")
CONCLUSION = ("conclu*", "verdict", "therefore", "thus", "validat*", "supported", "confirm*", "holds",
              "established", "bottom line", "in short")
CONFIDENCE = ("confidence", "confident", "probability", "high", "low", "moderate", "certain*",
              "likelihood", "credence", "percent")
REASONING = ("because", "therefore", "so", "thus", "since", "which means", "as a result", "however",
             "for example", "e g")

RUBRICS: dict[str, list[Criterion]] = {
    "surveyor": [("evidence", EVIDENCE, 4), ("citations", (), 2), ("calibration", CALIBRATION, 3)],
    "dissident": [("contradictions", CONTRADICTION, 2), ("counter_arguments", COUNTER, 3),
                  ("alternatives", ALTERNATIVE, 2)],
    "synthesist": [("connections", CONNECTION, 3), ("domains", DOMAINS, 2), ("integration", INTEGRATION, 2)],
    "oracle": [("principles", PRINCIPLE, 2), ("conclusions", CONCLUSION, 2), ("confidence", CONFIDENCE, 1)],
    "general": [("structure", (), 2), ("specificity", (), 3), ("reasoning", REASONING, 3)],
}

# Citation markers: [1], (Smith et al., 2020), (Smith, 2020), URLs, DOIs, arXiv ids. Separate
# patterns that each start with a literal, which re scans for quickly (one alternation: 650 us/6 KB).
CITATION_RX = (re.compile(r"\[\d+[\],\u2013-]"), re.compile(r"\([^()\n]{0,60}?(?:19|20)\d\d[a-z]?\)"))
CITATION_STR = ("et al", "http://", "https://", "doi", "arxiv")
STRUCTURE = re.compile(r"^[ \t]*(?:[-*+]\s|\d+[.)]\s|#{1,6}\s|\|)|\n[ \t]*\n", re.M)
NUMBER = re.compile(r"\d+(?:[.,]\d+)?")


def _compile(cues: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...], tuple[str, ...]]:
    words = frozenset(c for c in cues if " " not in c and not c.endswith("*"))
    prefixes = tuple(c[:-1] for c in cues if c.endswith("*"))
    phrases = tuple(c for c in cues if " " in c)
    return words, prefixes, phrases


_COMPILED = {name: [(crit, _compile(cues), need) for crit, cues, need in crits]
             for name, crits in RUBRICS.items()}
# Every (rubric, criterion) gets a global index; word -> indexes of the criteria it is a cue for, so
# one pass over an answer's words serves the agent rubric and the general one together. Bounded by
# the vocabulary; cleared past 200k words so a long run cannot grow it without limit.
_INDEX = {(name, crit): i for i, (name, crit) in
          enumerate((n, c) for n, crits in _COMPILED.items() for c, _m, _k in crits)}
_FLAT = [(words, prefixes) for crits in _COMPILED.values() for _c, (words, prefixes, _p), _k in crits]
_MEMBERSHIP: dict[str, tuple[int, ...]] = {}


def rubric_name(agent_type: str | None) -> str:
    """Map an agent name ("surveyor", "iceburg-surveyor", "Surveyor") to its rubric."""
    if not agent_type:
        return "general"
    name = agent_type.strip().lower().removeprefix("iceburg-")
    return name if name in RUBRICS else "general"


def _membership(word: str) -> tuple[int, ...]:
    if len(_MEMBERSHIP) > 200_000:
        _MEMBERSHIP.clear()
    m = _MEMBERSHIP[word] = tuple(i for i, (words, prefixes) in enumerate(_FLAT)
                                  if word in words or (prefixes and word.startswith(prefixes)))
    return m


def _cue_hits(counts: Counter) -> list[int]:
    hits = [0] * len(_FLAT)
    cache = _MEMBERSHIP
    for w, n in counts.items():
        m = cache.get(w)
        if m is None:
            m = _membership(w)
        for i in m:
            hits[i] += n
    return hits


def _criteria(name: str, text: str, hits: list[int], joined: str) -> dict[str, float]:
    per: dict[str, float] = {}
    for crit, (_w, _p, phrases), need in _COMPILED[name]:
        # regex criteria stop at `need` matches: full credit needs no more (saves ~0.3 ms/answer)
        if crit == "citations":
            low = text.lower()
            h = sum(low.count(c) for c in CITATION_STR)
            for rx in CITATION_RX:
                if h < need:
                    h += sum(1 for _ in islice(rx.finditer(text), need - h))
        elif crit == "structure":
            h = sum(1 for _ in islice(STRUCTURE.finditer(text), need))
        elif crit == "specificity":
            h = sum(1 for _ in islice(NUMBER.finditer(text), need))
        else:
            h = hits[_INDEX[name, crit]] + sum(joined.count(f" {p} ") for p in phrases)
        per[crit] = min(1.0, h / need)
    return per


def score_rubric(text: str, agent_type: str | None, words: list[str] | None = None
                 ) -> tuple[str, float, dict[str, float]]:
    """(rubric name, score in [0, 1], per-criterion scores of the agent's rubric). `words`: the
    answer's lower-cased words when the caller has them already."""
    name = rubric_name(agent_type)
    if words is None:
        words = _WORD.findall(text.lower())
    hits = _cue_hits(Counter(words))
    joined = " " + " ".join(words) + " "
    per = _criteria(name, text, hits, joined)
    score = sum(per.values()) / len(per)
    if name != "general":
        general = _criteria("general", text, hits, joined)
        score = 0.5 * score + 0.5 * sum(general.values()) / len(general)
    return name, score, per
