"""Curiosity-driven training data: find what the agent does not know yet, ask a teacher, keep what
survives the truth filter (`iceburg generate`, docs/emergence.md "Generating data").

    seeds.py    where to look: embedding-space gaps and clusters, rejected-only topics, sparse NOVEL records, and
                the student's instruction-following difficulty, combined into a ranked seed list
    difficulty.py  the student's instruction-following difficulty, one batched forward pass per record
    ask.py      what to ask: a new prompt near each seed (Evol-Instruct in-breadth rewrite)
    teacher.py  who answers: any OpenAI-compatible endpoint (openai client, retries, rate limit)
    job.py      the resumable job folder (append-only request log: no call is made twice)
    keep.py     what is kept: truth filter, held-out leak check, dedup, emergence scores
    run.py      `generate(settings)`, the driver
"""

from .run import STRATEGIES, GenerateSettings, generate

__all__ = ["STRATEGIES", "GenerateSettings", "generate"]
