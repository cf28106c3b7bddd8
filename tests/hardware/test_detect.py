"""Detection: the real CPU path on this machine, CUDA and Apple paths through injected descriptions."""

from __future__ import annotations

import json

import pytest
import torch

from iceburg.errors import IceburgError
from iceburg.hardware import CudaDevice, describe_hardware, get_m4_optimizer, probe_system
from iceburg.reports import hardware_report

GIB = 2**30


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="CPU machine")
def test_real_cpu_detection():
    import psutil

    hw = get_m4_optimizer().detect_hardware()
    assert hw.device_kind == "cpu"
    assert hw.torch_device() == torch.device("cpu")
    assert hw.total_memory == psutil.virtual_memory().total
    assert 0 < hw.available_memory <= hw.total_memory
    assert hw.supported_precisions[0] == "fp32" and hw.best_precision() == "fp32"
    assert hw.cpu_cores >= 1 and hw.torch_version == torch.__version__
    assert hw.cuda_version is None and hw.recommended_batch_size is None
    report = json.loads(hardware_report(as_json=True, hw=hw))
    assert report["device_kind"] == "cpu" and report["total_memory"] == hw.total_memory


def test_probe_reads_installed_packages():
    system = probe_system()
    assert set(system.packages) == {"mlx", "bitsandbytes"}
    assert system.ram_available <= system.ram_total


def test_mac_uses_mps_working_set_not_all_ram(machines):
    hw = describe_hardware(machines.mac(ram_gib=16, working_set_gib=10.67))
    assert hw.device_kind == "mps" and hw.torch_device() == torch.device("mps")
    assert hw.total_memory == 16 * GIB
    assert hw.available_memory == int(10.67 * GIB)
    assert hw.best_precision() == "bf16"
    old = describe_hardware(machines.mac(macos=(13, 6)))
    assert "bf16" not in old.supported_precisions and old.best_precision() == "fp16"


def test_prefer_mlx(machines):
    assert describe_hardware(machines.mac(mlx=True), prefer_mlx=True).device_kind == "mlx"
    assert describe_hardware(machines.mac(mlx=True), prefer_mlx=False).device_kind == "mps"
    no_mlx = describe_hardware(machines.mac(mlx=False), prefer_mlx=True)
    assert no_mlx.device_kind == "mps" and any("prefer_mlx ignored" in n for n in no_mlx.notes)
    linux = get_m4_optimizer(prefer_mlx=True, system=machines.cpu_box()).detect_hardware()
    assert linux.device_kind == "cpu" and linux.notes


def test_cuda_picks_freest_gpu_and_precision_by_capability(machines):
    other = CudaDevice("Tesla T4", 16 * GIB, 15 * GIB, (7, 5))
    hw = describe_hardware(machines.cuda_box(free_gib=10, extra=[other]))
    assert hw.device_kind == "cuda" and hw.device_name == "Tesla T4"
    assert hw.best_precision() == "fp16"  # Turing has no bf16
    assert describe_hardware(machines.cuda_box()).best_precision() == "bf16"
    assert describe_hardware(machines.cuda_box(), device="cpu").device_kind == "cpu"


def test_forced_device_missing(machines):
    with pytest.raises(IceburgError, match="--device cuda"):
        describe_hardware(machines.cpu_box(), device="cuda")
    with pytest.raises(IceburgError, match="--device mps"):
        describe_hardware(machines.cuda_box(), device="mps")


def test_recommended_batch_size_for_a_model(machines, llama_3b_dir):
    hw = get_m4_optimizer(system=machines.cuda_box(total_gib=80, free_gib=79)).detect_hardware(llama_3b_dir)
    assert hw.recommended_batch_size is not None and hw.recommended_batch_size >= 1
