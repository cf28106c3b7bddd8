"""CLI reports: --detect-hardware, --features, --configs."""

from __future__ import annotations

import json

from iceburg.config import ModelType, TrainingConfig
from iceburg.hardware import describe_hardware
from iceburg.reports import configs_report, features_report, hardware_report


def test_hardware_report_table_and_json():
    table = hardware_report()
    assert "memory available" in table and "precisions" in table
    assert "recommended micro-batch" in table and "planned for iceburg-tiny" in table
    data = json.loads(hardware_report(as_json=True))
    assert {"device_kind", "total_memory", "available_memory", "supported_precisions"} <= set(data)
    assert isinstance(data["recommended_batch_size"], int) and data["recommended_batch_size"] >= 1


def test_features_report_names_every_capability(machines):
    text = features_report()
    for name in ("CUDA", "MPS", "MLX", "QLoRA (bitsandbytes)", "llama.cpp", "onnxruntime", "Go",
                 "curation on datatrove"):
        assert name in text
    onnx_line = next(line for line in text.splitlines() if line.startswith("onnxruntime"))
    assert onnx_line.split()[-1] == "available"  # a pinned dependency, so installed here
    linux = features_report(machines.cpu_box())
    assert "pip install 'iceburg[qlora]'" in linux and "needs Apple silicon" in linux
    assert "available: 1 x NVIDIA" in features_report(machines.cuda_box())


def test_configs_report_one_row_per_type(machines, llama_3b_dir):
    hw = describe_hardware(machines.cuda_box(80, 79))
    text = configs_report(TrainingConfig(base_model=str(llama_3b_dir)), hw)
    for mt in ModelType:
        assert f"\n{mt.short} " in text
    assert "64/128" in text  # oracle: r64/alpha128 from the original table
    assert "q_proj" in text


def test_detect_hardware_plans_the_given_base(tiny_model_dir, capsys):
    """`--detect-hardware --base-model B`: the plan for B (not the default base), as `--configs` plans it."""
    from iceburg.cli import main
    from iceburg.hardware import plan_training

    assert main(["--detect-hardware", "--base-model", str(tiny_model_dir), "--max-seq-length", "256", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    ours = plan_training(tiny_model_dir, TrainingConfig(base_model=str(tiny_model_dir), max_seq_length=256))
    assert data["plan"]["fits"] is True
    assert data["plan"]["micro_batch_size"] == ours.micro_batch_size == data["recommended_batch_size"]
    assert data["plan"]["estimated_peak_bytes"] == ours.estimated_peak_bytes
    # the peak shown is the one for the allocator the plan uses: glibc's keeps freed activations
    expected = ours.memory["glibc_total"] if ours.cpu_allocator == "glibc default" else ours.estimated_peak_bytes
    assert data["plan"]["expected_peak_bytes"] == ours.expected_peak_bytes == expected


def test_report_compares_measured_peak_with_the_allocators_estimate(tmp_path):
    """report.html's memory section shows plan.json's expected peak (glibc heap included), not the
    fixed-threshold estimate, when the run used glibc's allocator (the README run: 13,215 vs 7,474 MiB)."""
    from iceburg.run_report import memory_section

    plan = {"device": "cpu", "estimated_peak_bytes": 7474 * 2**20, "expected_peak_bytes": 13215 * 2**20,
            "cpu_allocator": "glibc default", "micro_batch_size": 8, "gradient_accumulation_steps": 1}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"type": "train", "step": 1, "peak_rss_mib": 13676}) + "\n")
    html = memory_section(tmp_path)
    assert "13215 (glibc default)" in html and "7474" not in html


def test_detect_hardware_says_when_a_base_does_not_fit(machines, llama_3b_dir):
    """A 3B base on a 2 GB CPU box (3.2B fp32 weights alone are ~12 GB): 'does not fit' and why, no traceback."""
    cfg = TrainingConfig(base_model=str(llama_3b_dir))
    text = hardware_report(config=cfg, hw=describe_hardware(machines.cpu_box(ram_gib=2, available_gib=1.5)))
    assert any(line.startswith("plan") and "does not fit:" in line for line in text.splitlines())


def _offline_stores(tmp_path, monkeypatch):
    """No Ollama model, nothing in the Hugging Face cache, the Hub switched off: a fresh offline machine."""
    (tmp_path / "ollama").mkdir()
    (tmp_path / "hf").mkdir()
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "ollama"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf"))


def test_detect_hardware_plans_an_ollama_tag_from_its_published_shape(machines, tmp_path, monkeypatch):
    """`--detect-hardware --base-model llama3.2:3b` with the model nowhere on the machine: planned from the
    registry's published shape, nothing downloaded. The parameter count is the real model's (3,212,749,824
    for Llama-3.2-3B, tied embeddings), so a mistyped shape value fails here; the CPU time estimate is there."""
    _offline_stores(tmp_path, monkeypatch)
    cfg = TrainingConfig(model_type=ModelType.SURVEYOR, base_model="llama3.2:3b", max_seq_length=512)
    out = json.loads(hardware_report(as_json=True, config=cfg,
                                     hw=describe_hardware(machines.cpu_box(ram_gib=24, available_gib=20))))
    plan = out["plan"]
    assert plan["fits"] and "published shape of meta-llama/Llama-3.2-3B-Instruct" in plan["base_source"]
    assert plan["model"]["param_count"] == 3_212_749_824
    est = plan["time_estimate"]
    assert est["seconds_per_step"] > 0 and est["seed_table_seconds"] > est["seconds_per_step"]
    assert not any((tmp_path / "hf").iterdir())  # nothing was downloaded into the cache
    text = hardware_report(config=cfg, hw=describe_hardware(machines.cpu_box(ram_gib=24, available_gib=20)))
    assert any(line.startswith("about how long") and "per optimizer step" in line for line in text.splitlines())


def test_published_shapes_give_the_published_parameter_counts():
    """Each listed shape builds its architecture on the meta device with the parameter count its model card
    states (as model cards round them: Qwen2.5-0.5B 0.49B, 1.5B 1.54B, 7B 7.61B; Qwen3-0.6B 0.6B incl. embeddings;
    Llama-3.1-8B 8.03B; SmolLM2-360M 362M): the transcription is checked, not trusted."""
    import tempfile
    from pathlib import Path

    from transformers import AutoConfig

    from iceburg.families.published import published_shape
    from iceburg.hardware.model_shape import read_model_shape

    published_b = {"Qwen/Qwen2.5-0.5B-Instruct": 0.49, "Qwen/Qwen2.5-1.5B-Instruct": 1.54,
                   "Qwen/Qwen2.5-7B-Instruct": 7.61, "Qwen/Qwen3-0.6B": 0.60, "meta-llama/Llama-3.1-8B-Instruct": 8.03,
                   "HuggingFaceTB/SmolLM2-360M-Instruct": 0.362}
    with tempfile.TemporaryDirectory() as tmp:
        for repo, billions in published_b.items():
            folder = Path(tmp) / repo.replace("/", "--")
            AutoConfig.for_model(**published_shape(repo)).save_pretrained(folder)
            # model cards round to 2-3 significant figures: within 1% of the stated count
            assert abs(read_model_shape(folder).param_count / 1e9 - billions) / billions < 0.01, repo


def test_detect_hardware_names_what_it_tried_for_an_unknown_tag(tmp_path, monkeypatch):
    import pytest

    from iceburg.base_models.errors import BaseModelNotFoundError

    _offline_stores(tmp_path, monkeypatch)
    with pytest.raises(BaseModelNotFoundError, match=r"published shapes \(iceburg/families/published.py\): none listed"):
        hardware_report(config=TrainingConfig(base_model="nosuchmodel:7b"))
