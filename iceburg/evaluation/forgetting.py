"""Forgetting: loss on general text the model was never tuned on, tuned vs base.

The set ships with iceburg (`general_text.jsonl`, no download): the module docstrings of 40 CPython
3.11 standard-library modules (heapq, json, re, statistics, csv, ...), each cut to its first
`CHARS` characters. They are documentation prose with some code, written by many authors, under the
Python Software Foundation License v2 (permissive), and share nothing with research-agent
transcripts, so they measure what LoRA tuning costs the model on ordinary text (the "forgetting"
of Luo et al. 2023, "An Empirical Study of Catastrophic Forgetting in Large Language Models During
Continual Fine-tuning", measured here as loss rather than task accuracy). `build_general_text()`
rebuilds the file from the running interpreter; the shipped file is what every evaluation uses.
"""

from __future__ import annotations

import json
from pathlib import Path

GENERAL_TEXT = Path(__file__).with_name("general_text.jsonl")
# First 1,500 characters of each docstring: ~350-450 tokens in byte-level BPE tokenizers (about 4
# characters per token), then cut at MAX_TOKENS, so every document counts about equally.
CHARS = 1500
MAX_TOKENS = 256
MODULES = ("heapq difflib argparse json collections statistics random string re csv sqlite3 unittest doctest "
           "shelve itertools tempfile hashlib uuid time subprocess socket ssl smtplib http.client "
           "urllib.request configparser typing inspect ast tokenize pdb timeit trace gc copy struct getopt "
           "mimetypes zlib sched").split()


def general_texts(path: Path = GENERAL_TEXT) -> list[dict]:
    """The shipped general-text documents: `{"id", "text"}` per line."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build_general_text(path: Path = GENERAL_TEXT) -> int:
    """(Re)write the general-text file from this interpreter's standard library; returns documents."""
    import importlib
    import sys

    rows = []
    for name in MODULES:
        doc = importlib.import_module(name).__doc__ or ""
        if len(doc.split()) >= 80:
            rows.append({"id": f"python-{sys.version_info.major}.{sys.version_info.minor}:{name}",
                         "license": "PSF-2.0", "text": doc.strip()[:CHARS]})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return len(rows)
