"""Write the bundled research-agent tool-calling sample (`iceburg/data/sample/tools/research_tools.jsonl`).

A research agent (the Surveyor) answering with tools: it resolves DOIs and arXiv ids, fetches pages
the user pastes or a search returned, searches the web and paper indexes, calculates, converts units
and runs Python, then answers from what the tools returned, with its sources. Records are ChatML
messages in the loader's native shape (docs/tools.md): record-level `tools` (JSON schemas),
assistant `tool_calls` (OpenAI spelling, arguments as objects), `tool` results with
`tool_call_id`, and a final worded answer; some turns make two calls at once, and a few questions
are answered without a tool although tools are offered (a turn where the right call is none).

The facts (papers, DOIs, pages) are real and stated as their sources state them; the numbers of the
arithmetic questions are drawn at random. Phrasings, the tools offered with each record (the ones
used plus distractors, in a shuffled order) and argument values vary with a fixed seed, so the file
is reproducible:

    .venv/bin/python scripts/make_tool_samples.py [--records 200] [--seed 7]

This is sample data for training and evaluating tool use (GRPO's `tool_call` reward, `iceburg eval`'s
tool-call accuracy), not a test fixture: `tests/data/test_tool_samples.py` checks that it loads with
0 rejects, passes the truth filter and calls only declared tools with schema-valid arguments.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "iceburg" / "data" / "sample" / "tools" / "research_tools.jsonl"

SYSTEMS = [
    "You are the Surveyor, a research agent that gathers and organises information on a question, cites "
    "its sources, and calibrates every claim to the strength of the evidence behind it. You can call tools.",
    "You are the Surveyor, a research assistant. Use the tools when a question needs a lookup or a "
    "computation, cite what they return, and say how sure you are.",
    "You are the Surveyor. Find the evidence, cite it, and keep claims no stronger than the sources.",
]


def _fn(name: str, description: str, props: dict, required: list[str]) -> dict:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": props, "required": required}}}


UNITS = ["km", "mi", "m", "ft", "kg", "lb", "C", "F", "L", "gal", "kWh", "MJ"]
TOOLS = {
    "web_search": _fn("web_search", "Search the web; returns results with title, url and snippet.",
                      {"query": {"type": "string"}, "max_results": {"type": "integer"}}, ["query"]),
    "fetch_url": _fn("fetch_url", "Fetch a web page and return its main text.",
                     {"url": {"type": "string"}}, ["url"]),
    "search_papers": _fn("search_papers", "Search arXiv for papers; returns id, title and year.",
                         {"query": {"type": "string"}, "year_from": {"type": "integer"}}, ["query"]),
    "get_arxiv_paper": _fn("get_arxiv_paper", "Title, authors and abstract of an arXiv paper by id.",
                           {"arxiv_id": {"type": "string", "description": "e.g. 2106.09685"}}, ["arxiv_id"]),
    "lookup_doi": _fn("lookup_doi", "Citation metadata (title, authors, journal, year) for a DOI.",
                      {"doi": {"type": "string"}}, ["doi"]),
    "calculator": _fn("calculator", "Evaluate an arithmetic expression (+ - * / ** log sqrt).",
                      {"expression": {"type": "string"}}, ["expression"]),
    "run_python": _fn("run_python", "Run a short Python 3 script and return what it prints.",
                      {"code": {"type": "string"}}, ["code"]),
    "convert_units": _fn("convert_units", "Convert a value between units.",
                         {"value": {"type": "number"}, "from_unit": {"type": "string", "enum": UNITS},
                          "to_unit": {"type": "string", "enum": UNITS}}, ["value", "from_unit", "to_unit"]),
}

# arXiv papers: id, title, authors, year, what the abstract reports
PAPERS = [
    ("1706.03762", "Attention Is All You Need", "Vaswani et al.", 2017,
     "proposes the Transformer, built on attention alone without recurrence or convolution, reaching 28.4 BLEU "
     "on WMT 2014 English-German while training far faster than recurrent models"),
    ("1810.04805", "BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding",
     "Devlin et al.", 2018, "pre-trains a bidirectional Transformer with masked language modelling and next-sentence "
     "prediction, then fine-tunes it, setting new results on eleven NLP tasks including GLUE and SQuAD"),
    ("2005.14165", "Language Models are Few-Shot Learners", "Brown et al.", 2020,
     "trains GPT-3, a 175-billion-parameter language model, and shows it can do many tasks from a few examples "
     "in its prompt, without gradient updates"),
    ("2106.09685", "LoRA: Low-Rank Adaptation of Large Language Models", "Hu et al.", 2021,
     "freezes the pretrained weights and trains low-rank update matrices instead, cutting trainable parameters "
     "by about 10,000 times and GPU memory by about 3 times for GPT-3 175B, with quality on par with full fine-tuning"),
    ("2305.14314", "QLoRA: Efficient Finetuning of Quantized LLMs", "Dettmers et al.", 2023,
     "fine-tunes a 65B model on a single 48 GB GPU by training LoRA adapters over a frozen 4-bit NormalFloat base, "
     "with double quantization and paged optimizers"),
    ("2402.03300", "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models",
     "Shao et al.", 2024, "introduces Group Relative Policy Optimization (GRPO), which drops PPO's value model and "
     "uses group-normalised rewards, and reports 51.7% on the MATH benchmark for a 7B model"),
    ("1512.03385", "Deep Residual Learning for Image Recognition", "He et al.", 2015,
     "trains networks of up to 152 layers with residual connections and wins ILSVRC 2015 with 3.57% top-5 error"),
    ("1412.6980", "Adam: A Method for Stochastic Optimization", "Kingma and Ba", 2014,
     "proposes Adam, which adapts each parameter's step size from estimates of the first and second moments "
     "of the gradients"),
    ("2203.02155", "Training language models to follow instructions with human feedback", "Ouyang et al.", 2022,
     "fine-tunes GPT-3 with human demonstrations and reinforcement learning from human feedback; labelers "
     "preferred the 1.3B InstructGPT model's outputs to those of the 175B GPT-3"),
    ("2201.11903", "Chain-of-Thought Prompting Elicits Reasoning in Large Language Models", "Wei et al.", 2022,
     "shows that a few worked examples with intermediate steps in the prompt improve large models' arithmetic "
     "and commonsense reasoning, with a 540B model reaching state of the art on GSM8K"),
    ("2001.08361", "Scaling Laws for Neural Language Models", "Kaplan et al.", 2020,
     "finds that language-model loss falls as a power law in model size, data and compute over several orders "
     "of magnitude"),
    ("2203.15556", "Training Compute-Optimal Large Language Models", "Hoffmann et al.", 2022,
     "argues that parameters and training tokens should grow equally with compute; Chinchilla (70B, 1.4T tokens) "
     "outperforms the 280B Gopher"),
    ("2210.03629", "ReAct: Synergizing Reasoning and Acting in Language Models", "Yao et al.", 2022,
     "interleaves reasoning traces with actions such as search calls, reducing hallucination on question "
     "answering and fact verification"),
    ("2302.04761", "Toolformer: Language Models Can Teach Themselves to Use Tools", "Schick et al.", 2023,
     "lets a model annotate its own training text with API calls (calculator, search, translation) and keep "
     "those that lower its loss"),
    ("2305.18290", "Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
     "Rafailov et al.", 2023, "optimises a policy on preference pairs with a classification loss, without "
     "fitting a separate reward model or sampling during training"),
    ("1707.06347", "Proximal Policy Optimization Algorithms", "Schulman et al.", 2017,
     "introduces PPO's clipped surrogate objective, which allows several epochs of minibatch updates per batch "
     "of samples"),
    ("2006.11239", "Denoising Diffusion Probabilistic Models", "Ho et al.", 2020,
     "generates images by learning to reverse a gradual noising process, reaching an FID of 3.17 on CIFAR-10"),
    ("2010.11929", "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale",
     "Dosovitskiy et al.", 2020, "applies a plain Transformer to sequences of image patches (ViT) and matches "
     "convolutional networks when pre-trained on large datasets"),
    ("2103.00020", "Learning Transferable Visual Models From Natural Language Supervision", "Radford et al.", 2021,
     "trains CLIP on 400 million image-text pairs with a contrastive objective, enabling zero-shot image "
     "classification"),
    ("2205.14135", "FlashAttention: Fast and Memory-Efficient Exact Attention with IO-Awareness", "Dao et al.", 2022,
     "computes exact attention in tiles that stay in on-chip memory, reducing reads and writes to GPU memory "
     "and speeding up training"),
    ("2104.09864", "RoFormer: Enhanced Transformer with Rotary Position Embedding", "Su et al.", 2021,
     "encodes positions by rotating query and key vectors (RoPE), so attention depends on relative position"),
    ("2310.06825", "Mistral 7B", "Jiang et al.", 2023,
     "describes a 7B model with grouped-query and sliding-window attention that outperforms Llama 2 13B on "
     "the reported benchmarks"),
    ("2307.09288", "Llama 2: Open Foundation and Fine-Tuned Chat Models", "Touvron et al.", 2023,
     "releases pretrained and chat models from 7B to 70B parameters, the chat models tuned with supervised "
     "fine-tuning and RLHF"),
    ("1503.02531", "Distilling the Knowledge in a Neural Network", "Hinton, Vinyals and Dean", 2015,
     "trains a small model on the softened output distribution of a large model or ensemble (knowledge "
     "distillation)"),
    ("2009.03300", "Measuring Massive Multitask Language Understanding", "Hendrycks et al.", 2020,
     "introduces MMLU, a 57-subject multiple-choice test of knowledge from elementary to professional level"),
    ("2112.04510", "A Comprehensive Measurement of the Local Value of the Hubble Constant", "Riess et al.", 2021,
     "measures H0 = 73.04 +/- 1.04 km/s/Mpc from Cepheid-calibrated supernovae, about 5 sigma above the value "
     "inferred from the CMB under LCDM"),
]

# DOIs: doi, title, authors, venue, year, one finding
DOIS = [
    ("10.1038/nature14539", "Deep learning", "LeCun, Bengio and Hinton", "Nature 521, 436-444", 2015,
     "a review of representation learning with multi-layer networks trained by backpropagation"),
    ("10.1038/s41586-021-03819-2", "Highly accurate protein structure prediction with AlphaFold", "Jumper et al.",
     "Nature 596, 583-589", 2021, "AlphaFold predicted structures with atomic accuracy in CASP14"),
    ("10.1038/nature16961", "Mastering the game of Go with deep neural networks and tree search", "Silver et al.",
     "Nature 529, 484-489", 2016, "AlphaGo combined policy and value networks with tree search and beat a "
     "professional player 5-0"),
    ("10.1056/NEJMoa2034577", "Safety and Efficacy of the BNT162b2 mRNA Covid-19 Vaccine", "Polack et al.",
     "N Engl J Med 383, 2603-2615", 2020, "two doses gave 95% protection against Covid-19 in about 43,000 "
     "participants"),
    ("10.1056/NEJMoa2035389", "Efficacy and Safety of the mRNA-1273 SARS-CoV-2 Vaccine", "Baden et al.",
     "N Engl J Med 384, 403-416", 2021, "the vaccine showed 94.1% efficacy against symptomatic Covid-19"),
    ("10.1371/journal.pmed.0020124", "Why Most Published Research Findings Are False", "Ioannidis",
     "PLoS Medicine 2(8): e124", 2005, "small studies, small effects and flexible designs make most claimed "
     "findings more likely false than true"),
    ("10.1126/science.aac4716", "Estimating the reproducibility of psychological science",
     "Open Science Collaboration", "Science 349, aac4716", 2015, "36% of 100 replications gave significant "
     "results, against 97% of the originals"),
    ("10.1038/s41586-020-2649-2", "Array programming with NumPy", "Harris et al.", "Nature 585, 357-362", 2020,
     "describes NumPy's array model and its role in scientific Python"),
    ("10.1038/s41592-019-0686-2", "SciPy 1.0: fundamental algorithms for scientific computing in Python",
     "Virtanen et al.", "Nature Methods 17, 261-272", 2020, "describes SciPy's algorithms and development"),
    ("10.1038/nature14236", "Human-level control through deep reinforcement learning", "Mnih et al.",
     "Nature 518, 529-533", 2015, "a deep Q-network learned 49 Atari games from pixels"),
    ("10.1162/neco.1997.9.8.1735", "Long Short-Term Memory", "Hochreiter and Schmidhuber",
     "Neural Computation 9(8), 1735-1780", 1997, "gated memory cells carry error signals over long time lags"),
    ("10.1038/323533a0", "Learning representations by back-propagating errors", "Rumelhart, Hinton and Williams",
     "Nature 323, 533-536", 1986, "backpropagation trains hidden units to learn useful internal representations"),
    ("10.1103/PhysRevLett.116.061102", "Observation of Gravitational Waves from a Binary Black Hole Merger",
     "Abbott et al. (LIGO and Virgo)", "Phys. Rev. Lett. 116, 061102", 2016, "GW150914, the first direct detection "
     "of gravitational waves, from two black holes of about 36 and 29 solar masses"),
    ("10.1126/science.1225829", "A Programmable Dual-RNA-Guided DNA Endonuclease in Adaptive Bacterial Immunity",
     "Jinek et al.", "Science 337, 816-821", 2012, "Cas9 guided by a programmable RNA cuts chosen DNA sequences"),
    ("10.1038/171737a0", "Molecular Structure of Nucleic Acids: A Structure for Deoxyribose Nucleic Acid",
     "Watson and Crick", "Nature 171, 737-738", 1953, "the double-helix model of DNA"),
    ("10.1145/3065386", "ImageNet Classification with Deep Convolutional Neural Networks",
     "Krizhevsky, Sutskever and Hinton", "Communications of the ACM 60(6), 84-90", 2017,
     "a deep convolutional network trained on GPUs cut ImageNet top-5 error to 15.3%"),
    ("10.1002/14651858.CD000980.pub4", "Vitamin C for preventing and treating the common cold", "Hemila and Chalker",
     "Cochrane Database of Systematic Reviews, CD000980", 2013, "routine vitamin C did not reduce how often "
     "people catch colds, but shortened them by about 8% in adults"),
    ("10.1016/S0140-6736(20)30183-5", "Clinical features of patients infected with 2019 novel coronavirus in "
     "Wuhan, China", "Huang et al.", "The Lancet 395, 497-506", 2020, "the first 41 hospitalised patients; fever "
     "and cough were the most common symptoms"),
]

# Web pages: url, title, what the user asks about, the page text, the answer's key fact
PAGES = [
    ("https://www.who.int/news-room/fact-sheets/detail/malaria", "Malaria - WHO fact sheet",
     "how many malaria cases and deaths there are each year",
     "In 2022 there were an estimated 249 million malaria cases and 608 000 malaria deaths in 85 countries. "
     "The WHO African Region carries about 94% of cases and 95% of deaths.",
     "WHO estimates 249 million cases and 608,000 deaths in 2022, about 95% of the deaths in its African Region"),
    ("https://www.ipcc.ch/report/ar6/syr/", "AR6 Synthesis Report: Climate Change 2023",
     "how much the world has warmed so far",
     "Global surface temperature reached 1.1 degC above 1850-1900 in 2011-2020. Human activities, principally "
     "through emissions of greenhouse gases, have unequivocally caused global warming.",
     "the IPCC puts 2011-2020 at 1.1 degC above the 1850-1900 average and attributes the warming to human activity"),
    ("https://www.un.org/en/dayof8billion", "Day of Eight Billion | United Nations",
     "when the world population passed eight billion",
     "On 15 November 2022 the world's population reached 8 billion people, according to UN projections. "
     "It took about 12 years to grow from 7 to 8 billion.",
     "the UN dates the 8 billion mark to 15 November 2022, about 12 years after 7 billion"),
    ("https://home.cern/science/physics/higgs-boson", "The Higgs boson | CERN",
     "when and how the Higgs boson was found",
     "On 4 July 2012 the ATLAS and CMS experiments at the LHC announced a new particle with a mass of about "
     "125 GeV, consistent with the Higgs boson.",
     "ATLAS and CMS announced the discovery on 4 July 2012, a particle of about 125 GeV"),
    ("https://www.ligo.caltech.edu/page/press-release-gw150914", "Gravitational Waves Detected 100 Years After "
     "Einstein's Prediction | LIGO", "what LIGO detected in 2015",
     "On 14 September 2015 both LIGO detectors observed gravitational waves from the merger of two black holes "
     "of about 36 and 29 solar masses, about 1.3 billion years ago.",
     "LIGO saw waves on 14 September 2015 from two merging black holes of about 36 and 29 solar masses"),
    ("https://data.unicef.org/topic/child-survival/under-five-mortality/", "Under-five mortality - UNICEF DATA",
     "how many children die before age five",
     "Globally, 4.9 million children died before reaching their fifth birthday in 2022. The under-five "
     "mortality rate was 37 deaths per 1,000 live births, down from 93 in 1990.",
     "4.9 million under-five deaths in 2022, a rate of 37 per 1,000 live births against 93 in 1990"),
    ("https://en.wikipedia.org/wiki/Speed_of_light", "Speed of light - Wikipedia",
     "whether the speed of light is measured or defined",
     "The speed of light in vacuum is exactly 299,792,458 metres per second. Since 1983 the metre has been "
     "defined from it, so the value is fixed by definition rather than measured.",
     "299,792,458 m/s exactly, fixed by the 1983 definition of the metre"),
    ("https://www.genome.gov/about-genomics/telomere-to-telomere", "Telomere-to-Telomere | NHGRI",
     "whether the human genome is completely sequenced now",
     "In 2022 the Telomere-to-Telomere (T2T) consortium published the first complete, gapless sequence of a "
     "human genome, about 3.055 billion base pairs, adding about 8% that earlier references lacked.",
     "the T2T consortium published the first gapless human genome in 2022, about 3.055 billion base pairs"),
    ("https://docs.python.org/3/whatsnew/3.12.html", "What's New In Python 3.12",
     "what changed in Python 3.12",
     "Python 3.12 was released on 2 October 2023. New syntax: type parameter syntax (PEP 695) and f-strings "
     "formalised in the grammar (PEP 701); per-interpreter GIL (PEP 684).",
     "Python 3.12 came out on 2 October 2023 with PEP 695 type parameters and PEP 701 f-strings"),
    ("https://en.wikipedia.org/wiki/Mount_Everest", "Mount Everest - Wikipedia",
     "how tall Mount Everest is",
     "The elevation of Mount Everest, 8,848.86 m, was established in 2020 by a joint survey of China and Nepal.",
     "8,848.86 m, from the 2020 joint survey by China and Nepal"),
    ("https://www.who.int/news-room/fact-sheets/detail/measles", "Measles - WHO fact sheet",
     "how many people still die of measles",
     "In 2022 there were an estimated 136 000 measles deaths globally, mostly among unvaccinated or "
     "under-vaccinated children under the age of 5 years.",
     "WHO estimates 136,000 measles deaths in 2022, mostly unvaccinated children under five"),
    ("https://digital-strategy.ec.europa.eu/en/policies/regulatory-framework-ai", "AI Act | Shaping Europe's "
     "digital future", "when the EU AI Act took effect",
     "The AI Act entered into force on 1 August 2024. Prohibitions apply from February 2025 and most rules "
     "for high-risk systems from August 2026.",
     "the AI Act entered into force on 1 August 2024, with its rules phased in through 2026"),
    ("https://blog.rust-lang.org/2015/05/15/Rust-1.0.html", "Announcing Rust 1.0 | Rust Blog",
     "when Rust 1.0 was released",
     "We are very proud to announce the 1.0 release of Rust, a new programming language aiming to make it "
     "easier to build reliable, efficient systems. Published 15 May 2015.",
     "Rust 1.0 was announced on 15 May 2015"),
    ("https://science.nasa.gov/mission/kepler/", "Kepler / K2 - NASA Science",
     "how many planets the Kepler telescope found",
     "Kepler launched in March 2009 and was retired in October 2018. It discovered more than 2,600 confirmed "
     "planets outside our solar system.",
     "Kepler, active from 2009 to 2018, found more than 2,600 confirmed exoplanets"),
    ("https://www.worldbank.org/en/topic/poverty/overview", "Poverty Overview | World Bank",
     "how many people live in extreme poverty",
     "About 700 million people live on less than $2.15 per day, the extreme poverty line. Progress in reducing "
     "extreme poverty has slowed since the COVID-19 pandemic.",
     "about 700 million people live below the $2.15-a-day extreme poverty line"),
    ("https://www.ipcc.ch/report/ar6/wg1/chapter/summary-for-policymakers/", "AR6 WGI Summary for Policymakers",
     "how much sea level has risen",
     "Global mean sea level increased by 0.20 [0.15 to 0.25] m between 1901 and 2018. The average rate was "
     "3.7 mm per year between 2006 and 2018.",
     "global mean sea level rose 0.20 m (0.15-0.25) from 1901 to 2018, at 3.7 mm a year in 2006-2018"),
    ("https://webb.nasa.gov/content/about/launch.html", "Webb Launch | NASA",
     "when the James Webb Space Telescope launched",
     "Webb launched on 25 December 2021 on an Ariane 5 rocket from Kourou, French Guiana, and reached its orbit "
     "around the second Lagrange point about a month later.",
     "JWST launched on 25 December 2021 on an Ariane 5 and reached L2 about a month later"),
    ("https://www.image-net.org/about.php", "About ImageNet",
     "how big the ImageNet dataset is",
     "ImageNet contains more than 14 million images annotated according to the WordNet hierarchy. The ILSVRC "
     "subset has 1,000 classes and about 1.2 million training images.",
     "over 14 million images; the ILSVRC subset has 1,000 classes and about 1.2 million training images"),
    ("https://gml.noaa.gov/ccgg/trends/", "Trends in Atmospheric Carbon Dioxide | NOAA GML",
     "what the CO2 concentration is now",
     "The Mauna Loa record began in 1958 at about 315 ppm. Monthly means now exceed 420 ppm, and the annual "
     "increase has averaged about 2.4 ppm per year over the last decade.",
     "monthly CO2 means at Mauna Loa exceed 420 ppm, up from about 315 ppm in 1958, rising about 2.4 ppm a year"),
    ("https://www.nobelprize.org/prizes/chemistry/2020/summary/", "The Nobel Prize in Chemistry 2020",
     "who won the 2020 chemistry Nobel",
     "The Nobel Prize in Chemistry 2020 was awarded jointly to Emmanuelle Charpentier and Jennifer A. Doudna "
     "for the development of a method for genome editing.",
     "Emmanuelle Charpentier and Jennifer Doudna, for CRISPR genome editing"),
]

# Questions answered without a tool although tools are offered (the right call is none)
NO_TOOL = [
    ("What is the difference between a confidence interval and a credible interval?",
     "They answer different questions.\n\n- A **95% confidence interval** is a frequentist statement about the "
     "procedure: if the study were repeated many times, about 95% of the intervals built this way would contain "
     "the true value. It does not say there is a 95% probability the value is in this particular interval.\n- A "
     "**95% credible interval** is Bayesian: given the prior and the data, the parameter lies in it with 95% "
     "probability.\n\nWith a flat prior and lots of data the two often nearly coincide numerically, which is why "
     "they get confused. A standard reference is Morey et al. (2016), \"The fallacy of placing confidence in "
     "confidence intervals\", Psychonomic Bulletin & Review."),
    ("Explain what a p-value is in one paragraph, without the usual misconceptions.",
     "A p-value is the probability, computed assuming the null hypothesis and the rest of the statistical model "
     "are true, of getting data at least as extreme as the data observed. It is not the probability that the "
     "null hypothesis is true, and not the probability that the result is due to chance. A small p-value says the "
     "data fit poorly with the model; it does not measure the size or importance of an effect. The American "
     "Statistical Association's 2016 statement (Wasserstein and Lazar, The American Statistician) sets out these "
     "points; I am confident in this summary, as it is the consensus definition."),
    ("Why do randomised controlled trials rank above observational studies in evidence hierarchies?",
     "Because randomisation balances confounders on average, including ones nobody measured.\n\n1. In an "
     "observational study, people who take a treatment differ from those who do not (health, income, habits), "
     "and adjusting only removes the confounding you measured.\n2. Random allocation breaks the link between "
     "those traits and treatment, so a difference in outcomes can be attributed to the treatment, within "
     "sampling error.\n3. Blinding and pre-registered outcomes further limit bias in measurement and reporting."
     "\n\nThe ranking is a rule of thumb, not a law: a large, well-designed cohort can be more informative than a "
     "small, poorly run trial, which is why GRADE (Guyatt et al., 2008, BMJ) lets evidence be rated up or down."),
    ("What is regression to the mean, and why does it fool people?",
     "Regression to the mean: when a measurement is extreme partly by chance, the next measurement of the same "
     "thing tends to be closer to the average.\n\nIt fools people because an intervention applied after an "
     "extreme result seems to work: a school that scored unusually badly improves the next year, a patient "
     "recruited at a blood-pressure peak improves on retest, with or without treatment. The evidence against "
     "such illusions is a control group measured the same way. Galton described the effect in 1886 (\"Regression "
     "towards mediocrity in hereditary stature\"); Barnett et al. (2005, International Journal of Epidemiology) "
     "review it in clinical research. This is well established."),
    ("How is a systematic review different from a narrative review?",
     "A systematic review states its question and methods in advance: which databases it searches, with what "
     "terms, which studies it includes, how it rates their risk of bias and how it combines them (often in a "
     "meta-analysis). Another team could repeat it and get the same set of studies.\n\nA narrative review is an "
     "expert's selection and reading of the literature; it can be insightful but its choice of studies is not "
     "reproducible and can reflect the author's view. Standards for the systematic kind are in the PRISMA 2020 "
     "statement (Page et al., 2021, BMJ) and the Cochrane Handbook. In short, weigh a systematic review's "
     "conclusions more heavily when the evidence is contested."),
    ("What does 'statistically significant' actually tell me about a study's result?",
     "Only that the result would be unusual if there were no effect and the model's assumptions held, judged "
     "against a chosen threshold (often p < 0.05).\n\nIt does not tell you:\n- how large the effect is (a tiny "
     "effect is significant in a big enough sample);\n- whether it matters in practice;\n- that the finding "
     "will replicate (the Open Science Collaboration, 2015, Science, replicated 36% of significant psychology "
     "results).\n\nLook at the effect size with its confidence interval and at whether the analysis was "
     "pre-registered. The evidence here is strong and widely accepted."),
    ("What is the difference between precision and recall?",
     "Both score a classifier on the positive class, from different sides.\n\n| Measure | Formula | Question "
     "it answers |\n|---|---|---|\n| Precision | TP / (TP + FP) | Of what I flagged, how much was right? |\n| "
     "Recall | TP / (TP + FN) | Of what was there, how much did I find? |\n\nRaising the decision threshold "
     "usually trades recall for precision. The F1 score is their harmonic mean. Which matters more depends on "
     "the cost of a false alarm versus a miss: screening favours recall, a spam filter precision. See Manning, "
     "Raghavan and Schutze (2008), Introduction to Information Retrieval, chapter 8."),
    ("Why is correlation not causation? Give the main reasons.",
     "A correlation between X and Y can arise without X causing Y in several ways:\n\n1. **Confounding**: a third "
     "factor drives both (ice-cream sales and drownings both rise in summer).\n2. **Reverse causation**: Y causes "
     "X.\n3. **Selection bias**: the sample was chosen in a way that links them (Berkson's paradox).\n4. "
     "**Chance**: with many variables, some correlate by accident.\n\nEvidence for causation comes from "
     "randomised experiments or from designs that rule these out (natural experiments, instrumental variables, "
     "Bradford Hill's criteria, 1965). I am confident in this list; it is textbook material."),
]


def _call(cid: str, name: str, args: dict) -> dict:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


def _tools(rng: random.Random, used: list[str]) -> list[dict]:
    """The tools used plus one or two others, shuffled (an agent is offered more than it needs)."""
    others = [t for t in TOOLS if t not in used]
    names = list(dict.fromkeys(used)) + rng.sample(others, rng.randint(1, 2))
    rng.shuffle(names)
    return [TOOLS[n] for n in names]


class Builder:
    """One transcript: system, user, then (calls, results) rounds, then the answer."""

    def __init__(self, rng: random.Random, n: int, user: str):
        self.rng, self.n, self.k = rng, n, 0
        self.messages = [{"role": "system", "content": rng.choice(SYSTEMS)}, {"role": "user", "content": user}]

    def round(self, calls: list[tuple[str, dict, str]], text: str = "") -> None:
        ids = []
        for _ in calls:
            self.k += 1
            ids.append(f"call_{self.n:03d}_{self.k}")
        self.messages.append({"role": "assistant", "content": text,
                              "tool_calls": [_call(i, name, args) for i, (name, args, _) in zip(ids, calls)]})
        for i, (name, _, result) in zip(ids, calls):
            self.messages.append({"role": "tool", "tool_call_id": i, "name": name, "content": result})

    def record(self, answer: str, used: list[str], topic: str, scenario: str) -> dict:
        self.messages.append({"role": "assistant", "content": answer})
        return {"messages": self.messages, "tools": _tools(self.rng, used), "agent_type": "surveyor",
                "metadata": {"scenario": scenario, "topic": topic, "session": f"tl-{self.n:04d}",
                             "generator": "scripts/make_tool_samples.py"}}


def pick(rng: random.Random, *options: str) -> str:
    return rng.choice(options)


def _short(title: str) -> str:
    return title.split(":")[0] if ":" in title else title


# -- scenarios: each returns one record --------------------------------------------------------

def doi_record(rng: random.Random, n: int, items: list[tuple]) -> dict:
    """Resolve one DOI (or two at once) and cite it."""
    if len(items) == 2:
        (d1, *_), (d2, *_) = items
        user = pick(rng, f"I need full references for {d1} and {d2} for my bibliography.",
                    f"Two DOIs from a slide: {d1} and https://doi.org/{d2}. Which papers are they?",
                    f"Can you look up both of these: doi:{d1}, doi:{d2}? Authors, venue and year please.")
    else:
        d = items[0][0]
        user = pick(rng, f"Can you give me the full citation for doi:{d}?",
                    f"I have the DOI {d} in my notes but not the paper. What is it, and who wrote it?",
                    f"Format this reference in APA style: https://doi.org/{d}",
                    f"What journal published {d}, and in which year? One line on what it found, too.",
                    f"Is {d} a real paper? My draft cites it for a claim and I want to check.")
    b = Builder(rng, n, user)
    calls = [("lookup_doi", {"doi": d}, json.dumps({"doi": d, "title": t, "authors": a, "container": v, "year": y}))
             for d, t, a, v, y, _ in items]
    b.round(calls, pick(rng, "", "", "I'll resolve the DOI first." if len(items) == 1 else "I'll resolve both."))
    parts = []
    for d, t, a, v, y, finding in items:
        parts.append(pick(rng, f"**{t}** ({a}, {v}, {y}; https://doi.org/{d}). In short: {finding}.",
                          f"{d} resolves to \"{t}\" by {a}, published in {v} ({y}). What it reports: {finding}.",
                          f"- Reference: {a} ({y}). {t}. *{v}*. doi:{d}\n- Finding: {finding}."))
    tail = pick(rng, "The authors, venue and year come from the DOI registry, so they are reliable; the one-line "
                     "summaries are mine, so check them against the paper before quoting.",
                "Source: the DOI registry's metadata (high confidence for the bibliographic details). The summary "
                "of findings is a paraphrase; the evidence for it is in the paper itself.",
                "The citation data is from the registry and can be trusted as given; whether the paper supports the "
                "claim in your draft is a separate question that needs its results section.")
    return b.record("\n\n".join(parts + [tail]), ["lookup_doi"], "citation", "doi")


def arxiv_record(rng: random.Random, n: int, p: tuple) -> dict:
    pid, title, authors, year, gist = p
    user = pick(rng, f"Summarise arXiv:{pid} for me in a few lines.", f"What is the paper {pid} on arXiv about?",
                f"My colleague cited https://arxiv.org/abs/{pid}. What's the main result?",
                f"Before I read it: what does arXiv {pid} claim, and who wrote it?",
                f"Give me the gist of {pid} (arXiv) and how much weight to put on it.")
    b = Builder(rng, n, user)
    b.round([("get_arxiv_paper", {"arxiv_id": pid}, json.dumps(
        {"id": pid, "title": title, "authors": authors, "published": year, "abstract": f"The paper {gist}."}))])
    answer = pick(rng, f"**{title}** ({authors}, {year}; arXiv:{pid}).\n\nThe paper {gist}.",
                  f"arXiv:{pid} is \"{title}\" by {authors} ({year}). According to its abstract, it {gist}.",
                  f"It is {authors}, \"{title}\" ({year}), https://arxiv.org/abs/{pid}.\n\nMain claim: it {gist}.")
    caveat = pick(rng, "This summary rests on the abstract; the numbers are the authors' own, so check the "
                       "evaluation section and later replications before relying on them.",
                  "Weight: an arXiv preprint is not necessarily peer reviewed; this one is widely cited, which "
                  "suggests the main result held up, but verify specific figures in the paper.",
                  "Confidence: high that this is what the paper claims (it is from the abstract); how well the "
                  "claim generalises is a question for follow-up studies.")
    return b.record(f"{answer}\n\n{caveat}", ["get_arxiv_paper"], "paper", "arxiv")


def _page_answer(rng: random.Random, page: tuple) -> str:
    url, title, ask, text, fact = page
    lead = pick(rng, f"According to {title} ({url}), {fact}.", f"The source says {fact} ({title}, {url}).",
                f"Short answer: {fact}.\n\nSource: {title}, {url}.")
    tail = pick(rng, "This is the publisher's own figure; estimates like this are revised as new data come in, so "
                     "cite the page with the date you read it.",
                "The evidence is an official source, so I'd treat it as reliable, though it is likely to be "
                "updated; for a formal citation, link the underlying report rather than the summary page.",
                "I am fairly confident in this: it is stated directly on the page. What the page does not give is "
                "the uncertainty range, which the full report may.")
    return f"{lead}\n\n{tail}"


def url_record(rng: random.Random, n: int, page: tuple) -> dict:
    url, title, ask, text, _ = page
    user = pick(rng, f"What does this page say about {ask}? {url}", f"Read {url} and tell me {ask}.",
                f"Quick check from {url}: {ask}?", f"I found {url}. Does it say {ask}? Cite it if so.")
    b = Builder(rng, n, user)
    b.round([("fetch_url", {"url": url}, f"{title}\n\n{text}")])
    return b.record(_page_answer(rng, page), ["fetch_url"], "web page", "fetch")


def search_record(rng: random.Random, n: int, page: tuple, other: tuple) -> dict:
    url, title, ask, text, _ = page
    user = pick(rng, f"Can you find out {ask}? I need a source.", f"I need a sourced figure: {ask}.",
                f"Look up {ask}, please, from a reliable source.", f"Do you know {ask}? Check it rather than guess.")
    query = pick(rng, ask, title.split(" | ")[0].split(" - ")[0], f"{title.split(' | ')[0].split(' - ')[0]} latest")
    args = {"query": query} if rng.random() < 0.6 else {"query": query, "max_results": rng.choice([3, 5])}
    hits = [{"title": title, "url": url, "snippet": text.split(". ")[0] + "."},
            {"title": other[1], "url": other[0], "snippet": other[3].split(". ")[0] + "."}]
    if rng.random() < 0.3:
        hits.reverse()
    b = Builder(rng, n, user)
    b.round([("web_search", args, json.dumps(hits))])
    b.round([("fetch_url", {"url": url}, f"{title}\n\n{text}")],
            pick(rng, "", "", f"The {title.split(' | ')[0].split(' - ')[0]} page looks authoritative; reading it."))
    return b.record(_page_answer(rng, page), ["web_search", "fetch_url"], "web search", "search+fetch")


def paper_search_record(rng: random.Random, n: int, p: tuple, others: list[tuple]) -> dict:
    pid, title, authors, year, gist = p
    short = _short(title)
    user = pick(rng, f"Find me the paper '{title}' and summarise it.",
                f"Which arXiv paper is \"{short}\"? What does it report?",
                f"Look up the {short} paper on arXiv; I need its main claim and authors.",
                f"Is there a paper called {short}? Get its abstract and tell me what it finds.")
    args = {"query": short} if rng.random() < 0.6 else {"query": short, "year_from": year - rng.choice([0, 1, 2])}
    hits = [{"id": pid, "title": title, "year": year}] + [{"id": o[0], "title": o[1], "year": o[3]} for o in others]
    b = Builder(rng, n, user)
    b.round([("search_papers", args, json.dumps(hits))])
    b.round([("get_arxiv_paper", {"arxiv_id": pid}, json.dumps(
        {"id": pid, "title": title, "authors": authors, "published": year, "abstract": f"The paper {gist}."}))],
        pick(rng, "", "", f"The first hit, {pid}, matches; fetching its abstract."))
    answer = pick(rng, f"Found it: **{title}**, {authors} ({year}), arXiv:{pid}.\n\nIt {gist}.",
                  f"The paper is arXiv:{pid}, \"{title}\" by {authors} ({year}). Its abstract reports that it {gist}.")
    caveat = pick(rng, "That is the authors' summary; the evidence for each number is in the paper's experiments.",
                  "Confidence: high that this is the right paper (title and year match); the claims are as the "
                  "abstract states them and may be qualified in the body.")
    return b.record(f"{answer}\n\n{caveat}", ["search_papers", "get_arxiv_paper"], "paper", "paper-search")


CALC_TOPICS = ["a city's population", "annual rainfall at the station", "the lab's grant budget", "hospital "
               "admissions", "installed solar capacity", "the journal's submissions", "median rent", "the "
               "dataset's size", "monthly active users", "wheat yield per hectare"]


def _num(rng: random.Random, lo: float, hi: float, nd: int) -> float:
    return round(rng.uniform(lo, hi), nd)


def _calc(expr: str) -> float:
    return eval(expr, {"__builtins__": {}}, {"log": math.log, "sqrt": math.sqrt})  # our own expressions only


CALC_TAILS = [
    "The arithmetic is exact; the evidence behind the inputs is what limits it, so cite where each number came from.",
    "Check that both figures are measured the same way (same definition, same units) before reading much into it.",
    "I computed it with the calculator rather than in my head, so the number is right for these inputs; how much "
    "weight it carries depends on the source data.",
    "Rounded for reporting; keep the unrounded value if you chain further calculations.",
    "",
]


def calc_record(rng: random.Random, n: int) -> dict:
    kind = rng.choice(["change", "cagr", "nnt", "double", "ratio"])
    topic = rng.choice(CALC_TOPICS)
    if kind == "nnt":
        p1 = _num(rng, 8, 30, 1)
        p2 = round(p1 - _num(rng, 1, p1 / 3, 1), 1)
        user = pick(rng, f"A trial reports event rates of {p1}% (control) and {p2}% (treatment). Relative risk "
                         "reduction and NNT?", f"Control {p1}%, treated {p2}%: what are the RRR and the number "
                                               "needed to treat?")
        exprs = [f"({p1} - {p2}) / {p1}", f"1 / ({p1 / 100:.3f} - {p2 / 100:.3f})"]
        rrr, nnt = (_calc(e) for e in exprs)
        answer = (f"From the two event rates ({p1}% control, {p2}% treated):\n\n- Absolute risk reduction: "
                  f"{p1 - p2:.1f} percentage points\n- Relative risk reduction: {rrr:.1%}\n- Number needed to "
                  f"treat: {nnt:.1f}, so about {math.ceil(nnt)} people treated per event prevented\n\nThe NNT is "
                  "only as good as the trial's follow-up and the confidence interval of the difference, which "
                  "the two rates alone do not give; report both measures, since the relative one sounds larger.")
        b = Builder(rng, n, user)
        b.round([("calculator", {"expression": e}, repr(_calc(e))) for e in exprs],
                pick(rng, "", "I'll compute both from the two rates."))
        return b.record(answer, ["calculator"], "statistics", "calculator")
    a = _num(rng, 50, 5000, rng.choice([0, 1]))
    if kind == "change":
        bb = round(a * rng.uniform(0.6, 1.9), 1)
        user = pick(rng, f"{topic[0].upper() + topic[1:]} went from {a} to {bb}. What's the percentage change?",
                    f"Percentage change from {a} to {bb}? It's {topic}.")
        expr = f"({bb} - {a}) / {a} * 100"
        res = _calc(expr)
        answer = pick(rng, f"The change from {a} to {bb} is **{res:+.1f}%** (({bb} - {a}) / {a} x 100).\n\nIf you "
                           "compare it with other figures, note the base: the same absolute change is a different "
                           "percentage of a different starting value.",
                      f"{topic[0].upper() + topic[1:]} changed by {res:+.1f}% ({bb} against {a}). Whether {topic} "
                      "was counted the same way at both points is worth checking in the source data.",
                      f"Percentage change: {res:+.2f}%, that is {abs(bb - a):,.1f} on a base of {a}.")
    elif kind == "cagr":
        years = rng.randint(3, 12)
        bb = round(a * rng.uniform(1.2, 3.5), 1)
        user = pick(rng, f"{topic[0].upper() + topic[1:]} grew from {a} to {bb} over {years} years. Average annual "
                         "growth rate?", f"What compound annual growth rate takes {a} to {bb} in {years} years?")
        expr = f"({bb} / {a}) ** (1 / {years}) - 1"
        res = _calc(expr)
        answer = pick(rng, f"The compound annual growth rate is about **{res:.2%} per year** (({bb} / {a})^(1/{years})"
                           " - 1).\n\nThat is the steady rate that would give the same end point; the actual "
                           "year-to-year growth likely varied around it.",
                      f"About {res:.2%} a year, compounded over {years} years, takes {topic} from {a} to {bb}. A "
                      "simple average of yearly changes would differ if growth was uneven.",
                      f"CAGR = ({bb} / {a})^(1/{years}) - 1 = {res:.4f}, i.e. {res:.1%} per year.")
    elif kind == "double":
        r = _num(rng, 0.5, 12, 1)
        user = pick(rng, f"If {topic} grows {r}% a year, how long until it doubles?",
                    f"Doubling time at {r}% annual growth?")
        expr = f"log(2) / log(1 + {r} / 100)"
        res = _calc(expr)
        answer = pick(rng, f"At {r}% a year it doubles in about **{res:.1f} years** (ln 2 / ln(1 + {r / 100:g})).\n\n"
                           f"The rule of 70 gives {70 / r:.1f} years, close enough for a quick estimate.",
                      f"Doubling time: {res:.2f} years. This assumes {topic} keeps growing at exactly {r}% a year, "
                      "which real series rarely do; treat it as a scenario, not a forecast.",
                      f"Roughly {res:.0f} years ({res:.2f} exactly, from log 2 / log(1 + {r}/100)).")
    else:
        pop = rng.randint(2, 90) * 100_000
        user = pick(rng, f"The total for {topic} is {a} million across a population of {pop}. Per person?",
                    f"What is {a} million divided over {pop} people, per head?")
        expr = f"{a} * 1000000 / {pop}"
        res = _calc(expr)
        answer = pick(rng, f"That is about **{res:,.2f} per person** ({a} million / {pop:,}).\n\nPer-capita "
                           "figures depend on which population count is used (resident, registered, mid-year "
                           "estimate); state the source of the denominator.",
                      f"{res:,.1f} per head for {topic}, dividing {a} million by {pop:,} people.",
                      f"Per person: {res:,.2f}. A different population estimate would shift it in proportion.")
    b = Builder(rng, n, user)
    b.round([("calculator", {"expression": expr}, repr(_calc(expr)))])
    return b.record(f"{answer}\n\n{rng.choice(CALC_TAILS)}".strip(), ["calculator"], "arithmetic", "calculator")


# unit pairs: from, to, factor (to = value * factor) or None for temperatures, a context
CONVERSIONS = [("mi", "km", 1.609344, "a race of {v} miles"), ("km", "mi", 1 / 1.609344, "a {v} km trail"),
               ("ft", "m", 0.3048, "a peak of {v} feet"), ("m", "ft", 1 / 0.3048, "a {v} m tall tower"),
               ("lb", "kg", 0.45359237, "a {v} lb load"), ("kg", "lb", 1 / 0.45359237, "a {v} kg sample"),
               ("F", "C", None, "a reading of {v} degrees Fahrenheit"), ("C", "F", None, "{v} degrees Celsius"),
               ("gal", "L", 3.785411784, "{v} US gallons of fuel"), ("L", "gal", 1 / 3.785411784, "{v} litres"),
               ("kWh", "MJ", 3.6, "{v} kWh of electricity"), ("MJ", "kWh", 1 / 3.6, "{v} MJ of heat")]


def units_record(rng: random.Random, n: int) -> dict:
    src, dst, factor, ctx = rng.choice(CONVERSIONS)
    v = _num(rng, 1, 900, rng.choice([0, 1, 2])) if src not in ("F", "C") else _num(rng, -30, 110, 1)
    if v == int(v):
        v = int(v)
    res = v * factor if factor else ((v - 32) * 5 / 9 if src == "F" else v * 9 / 5 + 32)
    user = pick(rng, f"Convert {ctx.format(v=v)} to {dst}.", f"How much is {v} {src} in {dst}?",
                f"I have {ctx.format(v=v)}; what is that in {dst}?")
    b = Builder(rng, n, user)
    b.round([("convert_units", {"value": v, "from_unit": src, "to_unit": dst}, json.dumps({"value": round(res, 4),
                                                                                          "unit": dst}))])
    rule = (f"the factor is {factor:.6g} {dst} per {src}" if factor else
            "the conversion is C = (F - 32) x 5/9" if src == "F" else "the conversion is F = C x 9/5 + 32")
    answer = pick(rng, f"{v} {src} is **{res:,.2f} {dst}** ({rule}).\n\nThe factor is exact by definition for these "
                       "units (NIST Special Publication 811 lists it), so the only uncertainty is in the original "
                       "measurement.", f"That comes to {res:,.3g} {dst}; {rule}. Round to the precision of the "
                  f"original {v} {src}, not more.", f"{res:,.1f} {dst}. For the record, {rule} (NIST SP 811).")
    return b.record(answer, ["convert_units"], "units", "units")


def python_record(rng: random.Random, n: int) -> dict:
    k = rng.randint(6, 10)
    xs = [round(rng.gauss(50, 12), 1) for _ in range(k)]
    kind = rng.choice(["mean_sd", "median_iqr", "corr"])
    if kind == "corr":
        ys = [round(0.8 * x + rng.gauss(0, 8), 1) for x in xs]
        user = pick(rng, f"Here are paired measurements. x = {xs}, y = {ys}. What's the Pearson correlation?",
                    f"Compute the correlation between {xs} and {ys}.")
        code = f"import statistics\nx = {xs}\ny = {ys}\nprint(round(statistics.correlation(x, y), 3))"
        out = f"{round(statistics.correlation(xs, ys), 3)}"
        answer = (f"The Pearson correlation is **r = {out}** (n = {k}).\n\nWith only {k} pairs the estimate is "
                  "noisy: its 95% confidence interval is wide, so treat the strength as uncertain, and a "
                  "correlation says nothing about which variable drives the other. The evidence would be "
                  "stronger with more data.")
    elif kind == "median_iqr":
        user = pick(rng, f"Median and interquartile range of these values: {xs}?",
                    f"Give me the median and IQR for {xs}.")
        code = f"import statistics\nx = {xs}\nq = statistics.quantiles(x, n=4)\nprint(statistics.median(x), round(q[2] - q[0], 2))"
        q = statistics.quantiles(xs, n=4)
        out = f"{statistics.median(xs)} {round(q[2] - q[0], 2)}"
        med, iqr = out.split()
        answer = (f"Median **{med}**, interquartile range **{iqr}** (n = {k}; quartiles by Python's "
                  "statistics.quantiles, the 'exclusive' method).\n\nQuartile methods differ between tools (Excel, "
                  "R's nine types), so with a sample this small another tool may give a slightly different IQR; "
                  "say which method you used.")
    else:
        user = pick(rng, f"What are the mean and standard deviation of {xs}?",
                    f"Mean and SD for these measurements, please: {xs}")
        code = f"import statistics\nx = {xs}\nprint(round(statistics.mean(x), 3), round(statistics.stdev(x), 3))"
        out = f"{round(statistics.mean(xs), 3)} {round(statistics.stdev(xs), 3)}"
        mean, sd = out.split()
        answer = (f"Mean **{mean}**, standard deviation **{sd}** (sample SD, n - 1 in the denominator; n = {k})."
                  f"\n\nWith {k} values the SD itself is uncertain; if you need the precision of the mean, the "
                  f"standard error is SD / sqrt(n), about {float(sd) / math.sqrt(k):.2f}.")
    b = Builder(rng, n, user)
    b.round([("run_python", {"code": code}, out)])
    return b.record(answer, ["run_python"], "statistics", "python")


def no_tool_record(rng: random.Random, n: int, qa: tuple[str, str]) -> dict:
    b = Builder(rng, n, qa[0])
    used = rng.sample(list(TOOLS), 1)
    return b.record(qa[1], used, "method", "no-tool")


# records per scenario (of --records): paper and page lookups, searches, arithmetic, no-tool answers
MIX = {"doi": 0.15, "arxiv": 0.13, "fetch": 0.10, "search+fetch": 0.10, "paper-search": 0.11, "calculator": 0.19,
       "units": 0.11, "python": 0.11}


def build(total: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    counts = {k: round(v * (total - len(NO_TOOL))) for k, v in MIX.items()}
    plan = [k for k, c in counts.items() for _ in range(c)] + ["no-tool"] * len(NO_TOOL)
    rng.shuffle(plan)
    dois, papers, pages, pages2 = _cycle(rng, DOIS), _cycle(rng, PAPERS), _cycle(rng, PAGES), _cycle(rng, PAGES)
    no_tool = iter(NO_TOOL)
    out = []
    for n, kind in enumerate(plan):
        r = random.Random(f"{seed}:{n}")
        if kind == "doi":
            rec = doi_record(r, n, [next(dois) for _ in range(2 if r.random() < 0.25 else 1)])
        elif kind == "arxiv":
            rec = arxiv_record(r, n, next(papers))
        elif kind == "fetch":
            rec = url_record(r, n, next(pages))
        elif kind == "search+fetch":
            p = next(pages2)
            rec = search_record(r, n, p, r.choice([q for q in PAGES if q is not p]))
        elif kind == "paper-search":
            p = next(papers)
            rec = paper_search_record(r, n, p, r.sample([q for q in PAPERS if q is not p], r.randint(1, 2)))
        elif kind == "calculator":
            rec = calc_record(r, n)
        elif kind == "units":
            rec = units_record(r, n)
        elif kind == "python":
            rec = python_record(r, n)
        else:
            rec = no_tool_record(r, n, next(no_tool))
        out.append(rec)
    return out


def _cycle(rng: random.Random, items: list):
    """Each item once per pass, in a fresh shuffled order per pass (no item twice in a row of a pass)."""
    while True:
        order = list(items)
        rng.shuffle(order)
        yield from order


def distinct(records: list[dict]) -> list[dict]:
    """The records iceburg's truth filter keeps (in their order): it drops near-duplicates (MinHash over word
    bigrams, Jaccard >= 0.5, `truth/dedup.py`), which templated arithmetic answers and a page read twice can be;
    the bundled file is meant to pass the filter whole."""
    from iceburg.config import TrainingConfig
    from iceburg.data.loader import normalise
    from iceburg.truth.from_config import truth_filter_from

    recs = [normalise(r) for r in records]
    kept, _ = truth_filter_from(TrainingConfig(model_type="surveyor")).filter(recs, agent_type="surveyor")
    ids = {id(r) for r in kept}
    return [raw for raw, rec in zip(records, recs) if id(rec) in ids]


def sample(records: int = 200, candidates: int = 240, seed: int = 7) -> list[dict]:
    """The first `records` distinct records of `candidates` built with `seed` (the shipped file: the defaults)."""
    out = distinct(build(candidates, seed))
    if len(out) < records:
        raise SystemExit(f"only {len(out)} distinct records from {candidates} candidates; raise --candidates")
    return out[:records]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200)
    ap.add_argument("--candidates", type=int, default=240, help="records built before the near-duplicate filter")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args()
    records = sample(a.records, a.candidates, a.seed)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    tmp.replace(out)
    print(f"wrote {len(records)} records to {out}")


if __name__ == "__main__":
    main()
