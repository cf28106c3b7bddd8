"""The bundled research-agent tool-calling sample (`iceburg/data/sample/tools/research_tools.jsonl`,
written by scripts/make_tool_samples.py): it loads through the loader with 0 rejects, the truth
filter keeps every record, every call names a tool the record declares with arguments its JSON
schema accepts, every call is answered by a tool result, and the file is what the script writes."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from iceburg.config import TrainingConfig
from iceburg.data import SAMPLE_DIR
from iceburg.data.loader import read_records
from iceburg.data.split import split_eval
from iceburg.records import RejectWriter
from iceburg.truth.from_config import truth_filter_from

ROOT = Path(__file__).resolve().parents[2]
TOOLS_FILE = SAMPLE_DIR / "tools" / "research_tools.jsonl"
JSON_TYPES = {"string": str, "integer": int, "number": (int, float), "object": dict, "array": list}


@pytest.fixture(scope="module")
def records():
    with RejectWriter(None) as rejects:
        recs = list(read_records([TOOLS_FILE], rejects, strict=True))
    assert rejects.total == 0, rejects.counts
    return recs


def test_loads_with_no_rejects_and_has_the_advertised_size(records):
    raw = [json.loads(x) for x in TOOLS_FILE.read_text().splitlines() if x.strip()]
    assert len(records) == len(raw) == 200
    scenarios = Counter(r["metadata"]["scenario"] for r in raw)
    # every scenario of the generator is present (docs/grpo.md lists them)
    assert set(scenarios) == {"doi", "arxiv", "fetch", "search+fetch", "paper-search", "calculator", "units",
                              "python", "no-tool"}
    calls = Counter(c["function"]["name"] for r in records for m in r.messages for c in m.get("tool_calls") or ())
    assert len(calls) == 8, calls  # all eight declared tools are called somewhere
    assert any(len(m.get("tool_calls") or ()) > 1 for r in records for m in r.messages)  # parallel calls


def test_the_truth_filter_keeps_every_record(records):
    kept, stats = truth_filter_from(TrainingConfig(model_type="surveyor")).filter(records, agent_type="surveyor")
    assert len(kept) == len(records), stats.to_dict()["reasons"]


def _valid(value, schema: dict) -> bool:
    """The JSON Schema subset the sample's tools use: object/properties/required/type/enum."""
    kind = schema.get("type")
    if kind in JSON_TYPES and (not isinstance(value, JSON_TYPES[kind]) or isinstance(value, bool)):
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if kind == "object":
        props = schema.get("properties", {})
        return (set(schema.get("required", ())) <= set(value) and set(value) <= set(props)
                and all(_valid(v, props[k]) for k, v in value.items()))
    return True


def test_every_call_matches_a_declared_tool_schema_and_is_answered(records):
    for r in records:
        declared = {t["function"]["name"]: t["function"]["parameters"] for t in r.tools}
        for i, m in enumerate(r.messages):
            for c in m.get("tool_calls") or ():
                name, args = c["function"]["name"], c["function"]["arguments"]
                assert name in declared, (r.id, name)
                assert _valid(args, declared[name]), (r.id, name, args)
                answered = [t for t in r.messages[i + 1:] if t["role"] == "tool" and t.get("tool_call_id") == c["id"]]
                assert len(answered) == 1 and answered[0]["content"], (r.id, c["id"])
        assert r.messages[-1]["role"] == "assistant" and not r.messages[-1].get("tool_calls")  # ends answered
    # the check can fail: a wrong type, a missing required key and an undeclared key are each refused
    schema = records[0].tools[0]["function"]["parameters"]
    good = {k: ("x" if p.get("type") == "string" else 1) for k, p in schema["properties"].items() if "enum" not in p}
    assert not _valid({**good, "undeclared": 1}, schema)
    assert not _valid({}, schema)


def test_held_out_split_has_enough_tool_turns(records):
    # bench/grpo_tools.py holds out 20%; its tool_call interval needs >= 30 held-out call turns (issue 29)
    _, held = split_eval(records, 0.2, TrainingConfig().seed)
    assert sum(bool(m.get("tool_calls")) for r in held for m in r.messages) >= 30


def test_the_file_is_what_the_generator_writes(tmp_path):
    spec = importlib.util.spec_from_file_location("make_tool_samples", ROOT / "scripts" / "make_tool_samples.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    records = gen.sample()  # the script's defaults
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    assert text == TOOLS_FILE.read_text()
