"""Synthetic research-agent transcripts and planted defects for the truth-filter benchmarks.

Clean answers are assembled from role-specific sentence templates (surveyor, dissident,
synthesist, oracle, base) whose slots are filled from topic, author, journal and number banks,
laid out like the bundled sample transcripts: markdown headings, bullet lists, tables, the odd
code block, citations, and a closing confidence line. Defects are planted the way they show up in
agent logs: generation loops, refusals, cut-off answers, empty replies, boilerplate-only replies,
exact copies (re-spaced, re-cased) and near copies with a given share of words substituted,
inserted or deleted. Deterministic for a given seed.
"""

from __future__ import annotations

import random
from typing import Any

TOPICS = {
    "sleep": ["sleep deprivation", "memory consolidation", "REM sleep", "circadian rhythm", "shift work"],
    "nutrition": ["intermittent fasting", "calorie restriction", "ultra-processed food", "dietary fibre", "protein intake"],
    "climate": ["ocean heat content", "methane emissions", "aerosol forcing", "sea-level rise", "permafrost thaw"],
    "economics": ["minimum wage", "inflation expectations", "housing supply", "labour participation", "trade tariffs"],
    "cosmology": ["the Hubble tension", "dark energy", "galaxy rotation curves", "the cosmic microwave background", "primordial black holes"],
    "medicine": ["statin therapy", "antibiotic resistance", "GLP-1 agonists", "vitamin D supplements", "screening programmes"],
    "education": ["class size", "tutoring programmes", "phonics instruction", "school start times", "homework load"],
    "ecology": ["pollinator decline", "invasive species", "coral bleaching", "forest fragmentation", "rewilding"],
    "neuroscience": ["neuroplasticity", "dopamine signalling", "working memory", "the default mode network", "adult neurogenesis"],
    "computing": ["transformer scaling", "cache hierarchies", "garbage collection", "consensus protocols", "quantum error correction"],
    "psychology": ["ego depletion", "growth mindset", "the replication crisis", "anchoring effects", "loss aversion"],
    "energy": ["grid-scale batteries", "nuclear fission costs", "solar curtailment", "hydrogen storage", "heat pumps"],
}
AUTHORS = ["Liu", "Okafor", "Schmidt", "Tanaka", "Moreau", "Rossi", "Kowalski", "Haddad", "Nguyen", "Silva",
           "Andersson", "Patel", "Garcia", "Ivanova", "Mensah", "O'Brien", "Kim", "Fischer", "Costa", "Yilmaz"]
JOURNALS = ["NEJM", "JAMA", "Nature", "Science", "The Lancet", "PNAS", "BMJ", "Econometrica", "Cell", "ApJ"]
ADJ = ["modest", "large", "small", "consistent", "heterogeneous", "robust", "fragile", "surprising",
       "plausible", "durable", "transient", "measurable", "marginal", "substantial", "uneven"]
VERBS = ["increases", "reduces", "predicts", "explains", "moderates", "amplifies", "masks", "drives",
         "tracks", "constrains", "shifts", "offsets"]
OUTCOMES = ["mortality", "test scores", "employment", "energy demand", "recall accuracy", "blood pressure",
            "species richness", "latency", "household income", "emissions", "adherence", "error rates",
            "hospital admissions", "wages", "yields", "throughput", "attendance", "body weight", "rents",
            "biomass", "reaction times", "dropout", "prices", "insulin sensitivity", "turnover", "output",
            "survival", "productivity", "anxiety scores", "crop losses", "readmissions", "accuracy"]
OUT_MOD = ["", "", "", "mean", "median", "annual", "self-reported", "measured", "regional", "adult",
           "long-run", "monthly", "average", "observed", "local", "national", "weekly", "baseline"]
A_MOD = ["", "", "", "", "early", "sustained", "moderate", "high-dose", "low-dose", "targeted", "universal",
         "voluntary", "intensive", "brief", "repeated", "combined"]

OPENERS = ["", "", "", "In {y}, ", "Across {n} cohorts, ", "By contrast, ", "Notably, ", "In the {Au} data, ",
           "At the {dom} level, ", "In practice, ", "On balance, ", "Within {n} years, ", "Among {N} adults, ",
           "In a {y} analysis, ", "For most settings, ", "Historically, ", "More recently, ", "In {J}, "]
SUBJECTS = ["{a}", "the {adj} effect of {a}", "exposure to {a}", "the {Au} trial on {a}", "a {N}-person cohort",
            "{b}", "long-term {a}", "models of {a}", "the pooled estimate for {a}", "early work on {b}",
            "the {y} replication", "policy on {a}", "variation in {b}", "the dose of {a}", "field data on {b}",
            "the {Au}-{Au2} model", "a {adj} shift in {a}", "measured {b}"]
VERBS = ["increases", "reduces", "predicts", "explains part of", "moderates", "amplifies", "masks", "drives",
         "tracks", "constrains", "shifts", "offsets", "is associated with", "barely moves", "accounts for",
         "precedes", "correlates weakly with", "strongly predicts", "does not change", "partly reverses",
         "doubles", "halves", "stabilises", "delays"]
OBJECTS = ["{o}", "{o} in older adults", "the variance in {o}", "{p}% of the change in {o}", "baseline {o}",
           "{o} among {N} participants", "short-term {o}", "{o} at follow-up", "regional {o}", "the trend in {o}",
           "{o} by {d} points", "self-reported {o}"]
QUALIFIERS = ["", "", " over {n} months", " after adjusting for {b}", " in {dom} settings",
              " with an effect size of {d}", " (95% CI {d} to {q})", " [{k}]", " ({Au} et al., {y})",
              " in {Au}'s sample", " under field conditions", " in {n} of {q} sites", " (n={N})",
              " according to {J}", " once {b} is included", " in the {y} wave"]
CLAUSES = {
    "surveyor": ["; the evidence is {adj} and mostly observational", ", which {Au} et al. ({y}) report in {J}",
                 "; two later studies [{k}, {k2}] agree", ", although sources differ on the size",
                 "; this is likely but not proven", ", a finding replicated in {n} trials",
                 "; data from {N} records suggest the same"],
    "dissident": ["; however, {b} may confound this", ", but the claim rests on an untested assumption",
                  "; an alternative hypothesis is reverse causation", ", which contradicts the {y} estimate",
                  "; the counter-argument is selection bias", ", yet the headline figure looks overstated",
                  "; a competing explanation is {b}"],
    "synthesist": [", which parallels findings in {dom2}", "; the link to {b} suggests a shared mechanism",
                   ", connecting {dom} with {dom2}", "; taken together, this fits one framework",
                   ", just as {b} does in {dom2}", "; overall, the strands integrate into a coherent picture",
                   ", mirroring the pattern across {dom2}"],
    "oracle": ["; the underlying principle is causal", ", therefore the conclusion holds",
               "; confidence is about {p}%", ", which validates the core claim", "; the verdict is supported",
               ", so the fundamental mechanism is established", "; in short, the probability is {adj}"],
    "base": ["", ", for example in {dom}", ", because {b} changes first", ", so the effect is {adj}",
             ", which means {o} responds slowly", ", as a result of {b}", ""],
}
HEADINGS = ["What the data show", "Caveats", "Mechanism", "Open questions", "Context", "Key studies",
            "Why it matters", "Limitations", "Summary", "Evidence", "Counterpoints", "Connections"]


def _sentence(rng: random.Random, role: str, topic: str) -> str:
    clause = rng.choice(CLAUSES[role] + CLAUSES["base"]) if rng.random() < 0.6 else ""
    s = (rng.choice(OPENERS) + rng.choice(SUBJECTS) + " " + rng.choice(VERBS) + " " + rng.choice(OBJECTS)
         + rng.choice(QUALIFIERS) + clause + ".")
    s = _fill(s, rng, topic)
    return s[0].upper() + s[1:]


QUESTIONS = ["What does the evidence say about {a}?", "Does {a} really affect {o}?",
             "How strong is the case that {a} {v} {o}?", "Can you challenge the claim about {a}?",
             "How does {a} connect to {b}?", "What is the verdict on {a} and {o}?",
             "Summarise the research on {a} for {o}."]
CODE = "```python\nimport numpy as np\neffect = np.mean(treated) - np.mean(control)\nprint(f\"effect: {effect:.2f}\")\n```"


def _fill(t: str, rng: random.Random, topic: str) -> str:
    nouns = TOPICS[topic]
    other = rng.choice([d for d in TOPICS if d != topic])
    a, b = rng.sample(nouns, 2)
    au, au2 = rng.sample(AUTHORS, 2)
    a = (rng.choice(A_MOD) + " " + a).strip()
    o = (rng.choice(OUT_MOD) + " " + rng.choice(OUTCOMES)).strip()
    return t.format(a=a, A=a[0].upper() + a[1:], b=b, o=o, v=rng.choice(VERBS),
                    adj=rng.choice(ADJ), p=rng.randint(3, 60), q=rng.randint(61, 95), n=rng.randint(2, 40),
                    d=round(rng.uniform(0.1, 9.9), 1), N=rng.randint(40, 9000), M=rng.randint(40, 9000),
                    Au=au, Au2=au2, y=rng.randint(1998, 2025), J=rng.choice(JOURNALS), k=rng.randint(1, 9),
                    k2=rng.randint(10, 19), dom=topic, dom2=other)


def clean_answer(rng: random.Random, role: str, topic: str, target_chars: int) -> str:
    parts: list[str] = []
    size = 0
    headings = rng.sample(HEADINGS, len(HEADINGS))
    while size < target_chars:
        kind = rng.random()
        if kind < 0.12 and parts and headings:
            block = f"### {headings.pop()}"
        elif kind < 0.32:
            block = "\n".join("- " + _sentence(rng, role, topic) for _ in range(rng.randint(2, 4)))
        elif kind < 0.38:
            rows = [f"| {_fill('{Au} {y}', rng, topic)} | {rng.randint(40, 900)} | {round(rng.uniform(-5, 5), 1)} |"
                    for _ in range(rng.randint(2, 4))]
            block = "| Study | n | Effect |\n|---|---|---|\n" + "\n".join(rows)
        elif kind < 0.40 and CODE not in parts:
            block = CODE
        else:
            block = " ".join(_sentence(rng, role, topic) for _ in range(rng.randint(2, 5)))
        parts.append(block)
        size += len(block) + 2
    parts.append(f"**Confidence:** {rng.choice(['low', 'moderate', 'moderate-to-high', 'high'])} "
                 f"for the main claim about {rng.choice(TOPICS[topic])}.")
    return "\n\n".join(parts)


def clean_record(rng: random.Random, role: str, target_bytes: int = 3000) -> dict[str, Any]:
    topic = rng.choice(list(TOPICS))
    turns = rng.choice([1, 1, 2, 3])
    msgs = [{"role": "system", "content": f"You are the {role.title()}, an ICEBURG research agent."}]
    for _ in range(turns):
        msgs.append({"role": "user", "content": _fill(rng.choice(QUESTIONS), rng, topic)})
        msgs.append({"role": "assistant", "content": clean_answer(rng, role, topic, target_bytes // turns)})
    rec: dict[str, Any] = {"messages": msgs, "agent_type": role}
    if rng.random() < 0.5:
        rec["quality_score"] = round(rng.uniform(0.75, 0.98), 2)
    return rec


REFUSALS = ["I'm sorry, but I can't help with that.", "I apologize, but I'm not able to provide that information.",
            "Unfortunately, I cannot assist with this request.", "As an AI language model, I cannot give medical advice.",
            "I'm unable to help with that request.", "Sorry, I can't comply with that.",
            "I cannot provide an answer to this question.", "I won't be able to help with this one, sorry.",
            "That's not something I can help with.", "I must decline to answer this request."]
# Written before the held-out evaluation and never used to tune the refusal pattern.
REFUSALS_HELDOUT = ["I'm afraid I can't do that.", "Apologies, but I cannot fulfill this request.",
                    "I am not able to assist with requests like this.", "My apologies, I'm unable to provide that.",
                    "I'm not comfortable answering that question.",
                    "As an AI, I don't have the ability to access real-time data.",
                    "Regrettably, I cannot help you with this.", "I can't assist with that.",
                    "I'm sorry, I cannot answer that.", "That request goes against my guidelines, so I can't help."]
# Second held-out set, written after the first held-out result (recall 0.24) and before the
# refusal rule was revised; never used for tuning.
REFUSALS_HELDOUT2 = ["Unfortunately that's outside what I can help with.", "I'm not in a position to answer that.",
                     "Sorry, but I have to decline this one.",
                     "I do not have access to that information, so I can't answer.",
                     "I'd rather not answer that question.",
                     "I'm really sorry, but providing that would not be appropriate.",
                     "This is something I'm not permitted to discuss.",
                     "As a language model, I'm not able to browse the internet.",
                     "Sorry \u2014 I can't help with that.", "I cannot comply with this request."]
BOILER = ["Great question! I hope this helps. Let me know if you have any other questions!",
          "Thank you for your question. I'd be happy to help. Feel free to ask if you need anything else.",
          "Great question! Is there anything else I can help you with? Happy to help!",
          "I hope this helps! Don't hesitate to ask if you have more questions. Glad to help!"]
EMPTY = ["OK", "Sure.", "...", "N/A", "Yes", "-", "Noted.", "Hmm"]


def _last_assistant(rec: dict) -> dict:
    return [m for m in rec["messages"] if m["role"] == "assistant"][-1]


def plant(rec: dict[str, Any], defect: str, rng: random.Random) -> dict[str, Any]:
    """A copy of `rec` with one defect planted in its final answer."""
    out = {**rec, "messages": [dict(m) for m in rec["messages"]]}
    last = _last_assistant(out)
    text = last["content"]
    if defect == "loop":
        sents = [s for s in text.replace("\n", " ").split(". ") if len(s.split()) > 5]
        style = rng.choice(["sentence", "paragraph", "phrase"])
        if style == "sentence":
            s = rng.choice(sents).strip() + ". "
            last["content"] = text[: len(text) // 2] + " " + s * rng.randint(6, 30)
        elif style == "paragraph":
            paras = text.split("\n\n")
            p = rng.choice(paras)
            last["content"] = "\n\n".join(paras + [p] * rng.randint(3, 8))
        else:
            w = rng.choice(sents).split()[:rng.randint(2, 4)]
            last["content"] = text[: len(text) // 3] + " " + " ".join(w * rng.randint(20, 60))
    elif defect == "refusal":
        last["content"] = rng.choice(REFUSALS)
    elif defect == "refusal_heldout":
        last["content"] = rng.choice(REFUSALS_HELDOUT)
    elif defect == "refusal_heldout2":
        last["content"] = rng.choice(REFUSALS_HELDOUT2)
    elif defect == "truncation":
        if rng.random() < 0.15 and "```" in text:
            last["content"] = text[: text.index("```") + 30]
        else:
            words = text.split(" ")
            for _ in range(50):  # cut mid-sentence: the word before the cut does not end one
                cut = rng.randint(len(words) // 3, max(len(words) - 2, len(words) // 3 + 1))
                if not words[cut - 1].rstrip().endswith((".", "!", "?", ":", "*", "|")):
                    break
            last["content"] = " ".join(words[:cut])
    elif defect == "empty":
        last["content"] = rng.choice(EMPTY)
    elif defect == "boilerplate":
        last["content"] = rng.choice(BOILER)
    else:
        raise ValueError(defect)
    out.pop("quality_score", None)
    if rng.random() < 0.5:  # the producer's score often says nothing about the defect
        out["quality_score"] = round(rng.uniform(0.75, 0.98), 2)
    return out


def exact_copy(rec: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Same text, different whitespace/case and producer score (the normalised hash must match)."""
    msgs = [dict(m) for m in rec["messages"]]
    a = _last_assistant({"messages": msgs})
    a["content"] = a["content"].replace(" ", "  ", 3) + ("\n" if rng.random() < 0.5 else "")
    if rng.random() < 0.3:
        a["content"] = a["content"].upper()
    return {**rec, "messages": msgs, "quality_score": round(rng.uniform(0.7, 0.99), 2)}


def near_copy(rec: dict[str, Any], rate: float, rng: random.Random) -> dict[str, Any]:
    """Copy with `rate` of the non-system words edited (substituted, inserted or deleted)."""
    msgs = [dict(m) for m in rec["messages"]]
    filler = ADJ + OUTCOMES + VERBS + ["notably", "arguably", "indeed", "broadly", "clearly", "often"]
    for m in msgs:
        if m["role"] == "system":
            continue
        words = m["content"].split(" ")
        k = max(1, round(rate * len(words))) if rate > 0 else 0
        # the last word keeps its place: an edited copy is not a cut-off copy
        for i in sorted(rng.sample(range(len(words) - 1), min(k, len(words) - 1)), reverse=True):
            op = rng.random()
            if op < 0.6:
                words[i] = rng.choice(filler)
            elif op < 0.8:
                words.insert(i, rng.choice(filler))
            elif len(words) > 3:
                del words[i]
        m["content"] = " ".join(words)
    return {**rec, "messages": msgs, "quality_score": round(rng.uniform(0.7, 0.99), 2)}
