"""Hardware detection: what this machine can train on, as a typed `HardwareInfo`.

Detection is two steps so every path can be tested on any machine:

1. `probe_system()` reads the real machine (torch's CUDA driver calls, MPS's recommended working
   set, psutil for RAM and cores, which optional packages import) into a plain
   `SystemDescription` of numbers and flags.
2. `describe_hardware(system, prefer_mlx)` turns a description into `HardwareInfo`, choosing the
   device. Tests pass hand-written descriptions (a 16 GB Mac, a 24 GB CUDA card) here instead of
   patching torch.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..errors import IceburgError

logger = logging.getLogger(__name__)


@dataclass
class CudaDevice:
    name: str
    total_memory: int
    free_memory: int
    capability: tuple[int, int]  # compute capability; bf16 needs >= 8.0 (Ampere)


@dataclass
class MpsDevice:
    recommended_max_memory: int  # Metal's recommendedMaxWorkingSetSize for this process
    allocated_memory: int  # what the Metal driver already holds for us
    macos_version: tuple[int, int]


@dataclass
class SystemDescription:
    """Raw facts about a machine. `probe_system()` fills it; tests write one by hand."""

    system: str  # platform.system(): Linux, Darwin, Windows
    machine: str  # platform.machine(): x86_64, arm64, ...
    cpu_name: str
    cpu_cores: int
    ram_total: int
    ram_available: int
    torch_version: str
    cuda_version: str | None = None
    cuda_devices: list[CudaDevice] = field(default_factory=list)
    mps: MpsDevice | None = None
    cpu_bf16: bool = False  # oneDNN has native bf16 kernels on this CPU (AVX512-BF16 / AMX)
    packages: dict[str, bool] = field(default_factory=dict)  # mlx, bitsandbytes, ...

    @property
    def apple_silicon(self) -> bool:
        return self.system == "Darwin" and self.machine == "arm64"


@dataclass
class HardwareInfo:
    """The device iceburg trains on and what it offers."""

    device_kind: str  # "cuda", "mps", "mlx" or "cpu"
    device_name: str
    total_memory: int  # bytes: GPU memory, Apple unified memory, or system RAM
    available_memory: int  # bytes the training run may use now
    supported_precisions: list[str]  # always "fp32", plus "bf16"/"fp16" where the device has them
    cpu_cores: int
    mlx_available: bool
    bitsandbytes_available: bool
    torch_version: str
    cuda_version: str | None = None
    compute_capability: tuple[int, int] | None = None
    recommended_batch_size: int | None = None  # micro-batch planned for the chosen base model
    notes: list[str] = field(default_factory=list)

    def torch_device(self) -> torch.device:
        """The torch device to train on. MLX is trained through torch's MPS backend (see notes)."""
        return torch.device("mps" if self.device_kind == "mlx" else self.device_kind)

    def best_precision(self) -> str:
        """bf16 where the device has it (fp32's range, no loss scaling), else fp16, else fp32.

        On CPU, fp32: the measured training figures (shared/STACK.md) are fp32, and most CPUs
        have no native bf16 matmul.
        """
        if self.device_kind == "cpu":
            return "fp32"
        for p in ("bf16", "fp16"):
            if p in self.supported_precisions:
                return p
        return "fp32"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _has(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def probe_system() -> SystemDescription:
    """Read this machine. Calls into the CUDA driver only when torch was built with CUDA."""
    import psutil

    vm = psutil.virtual_memory()
    desc = SystemDescription(
        system=platform.system(), machine=platform.machine(), cpu_name=_cpu_name(),
        cpu_cores=psutil.cpu_count(logical=False) or os.cpu_count() or 1,
        ram_total=vm.total, ram_available=vm.available, torch_version=torch.__version__,
        cuda_version=torch.version.cuda,
        packages={p: _has(p) for p in ("mlx", "bitsandbytes")},
    )
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            props = torch.cuda.get_device_properties(i)
            desc.cuda_devices.append(CudaDevice(props.name, total, free, (props.major, props.minor)))
    if torch.backends.mps.is_available():
        ver = tuple(int(x) for x in (platform.mac_ver()[0] or "0.0").split(".")[:2])
        desc.mps = MpsDevice(torch.mps.recommended_max_memory(), torch.mps.driver_allocated_memory(),
                             (ver + (0,))[:2])  # type: ignore[arg-type]
    if desc.machine in ("x86_64", "AMD64"):
        desc.cpu_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return desc


def _gpu_precisions(cap: tuple[int, int]) -> list[str]:
    # bf16 tensor cores arrived with Ampere, compute capability 8.0 (NVIDIA CUDA guide, "Arithmetic
    # Instructions"); torch.cuda.is_bf16_supported() uses the same test.
    return ["fp32", "fp16"] + (["bf16"] if cap >= (8, 0) else [])


def describe_hardware(system: SystemDescription, prefer_mlx: bool = False,
                      device: str | None = None) -> HardwareInfo:
    """Choose the training device for `system`: CUDA, then Apple (MPS or MLX), then CPU.

    `device` forces one ("cpu", "cuda", "mps") and fails if it is not there.
    `prefer_mlx` picks MLX over MPS on Apple silicon when the `mlx` package is installed, as in
    the original design; elsewhere it is ignored with a note.
    """
    has_mlx = system.packages.get("mlx", False)
    common = dict(cpu_cores=system.cpu_cores, mlx_available=has_mlx,
                  bitsandbytes_available=system.packages.get("bitsandbytes", False),
                  torch_version=system.torch_version, cuda_version=system.cuda_version)
    notes: list[str] = []
    if device == "cuda" and not system.cuda_devices:
        raise IceburgError("--device cuda: no CUDA device found (torch "
                           f"{system.torch_version}, CUDA build: {system.cuda_version or 'no'}); "
                           "drop --device to use what is available")
    if device == "mps" and system.mps is None:
        raise IceburgError("--device mps: Apple MPS is not available on this machine; drop --device")
    if prefer_mlx and not (system.apple_silicon and has_mlx):
        notes.append("prefer_mlx ignored: MLX needs Apple silicon and `pip install mlx`")

    if system.cuda_devices and device in (None, "cuda"):
        # The device with the most free memory; multi-GPU training is not planned here.
        gpu = max(system.cuda_devices, key=lambda d: d.free_memory)
        if len(system.cuda_devices) > 1:
            notes.append(f"{len(system.cuda_devices)} CUDA devices; planning for one ({gpu.name})")
        return HardwareInfo("cuda", gpu.name, gpu.total_memory, gpu.free_memory,
                            _gpu_precisions(gpu.capability), compute_capability=gpu.capability,
                            notes=notes, **common)
    if system.mps is not None and device in (None, "mps"):
        mps = system.mps
        kind = "mlx" if prefer_mlx and has_mlx and system.apple_silicon and device is None else "mps"
        # Unified memory: the GPU may use up to Metal's recommended working set, not all of RAM.
        available = max(0, min(mps.recommended_max_memory - mps.allocated_memory, system.ram_available))
        # MPS bf16 needs macOS 14 (torch's MPS backend checks is_macos_or_newer(14, 0)).
        precisions = ["fp32", "fp16"] + (["bf16"] if mps.macos_version >= (14, 0) else [])
        if kind == "mlx":
            notes.append("MLX selected: --backend auto trains with mlx-lm (training/mlx_backend.py) on "
                         "the same unified memory; torch-only options (QLoRA, DoRA) use MPS")
        return HardwareInfo(kind, f"Apple {system.cpu_name}", system.ram_total, available, precisions,
                            notes=notes, **common)
    precisions = ["fp32"] + (["bf16"] if system.cpu_bf16 else [])
    return HardwareInfo("cpu", system.cpu_name, system.ram_total, system.ram_available, precisions,
                        notes=notes, **common)
