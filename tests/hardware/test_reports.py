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
