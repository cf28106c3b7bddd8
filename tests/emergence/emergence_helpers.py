"""Small record builders shared by the emergence tests."""

from __future__ import annotations

from iceburg.records import Record


def conv(user: str, answer: str, **kw) -> Record:
    return Record(messages=[{"role": "user", "content": user}, {"role": "assistant", "content": answer}], **kw)
