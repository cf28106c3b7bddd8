"""Text reports behind the CLI flags `--detect-hardware`, `--features` and `--configs`.

They sit above the stages (they read the hardware stage and resolve base models), so they live
here and not in `hardware/`, which stays a leaf layer."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

from .config import ModelType, TrainingConfig
from .hardware.detect import HardwareInfo, SystemDescription, describe_hardware, probe_system
from .hardware.planner import plan_training


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.1f} GiB"


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def hardware_report(as_json: bool = False, hw: HardwareInfo | None = None,
                   config: TrainingConfig | None = None) -> str:
    """`--detect-hardware`: the detected device as a readable table, or JSON with `--json`. With a
    `config` (`--detect-hardware --base-model B [--max-seq-length N ...]`) also the plan for that base:
    whether it fits, with which settings, the estimated peak and (CPU) about how long it trains."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="iceburg-shape-") as tmp:
        model_dir, source = planning_base(config, Path(tmp)) if config is not None else (None, None)
        if hw is None:
            from .hardware import get_m4_optimizer

            hw = get_m4_optimizer().detect_hardware(model_dir, config)  # plans the base: fills the micro-batch
        plan = _plan_or_refusal(config, hw, model_dir) if config is not None else None
    if plan is not None:
        plan["base_source"] = source or f"{config.base_model} ({model_dir})"
        plan["time_estimate"] = _time_estimate(plan, config)
    if as_json:
        return json.dumps(hw.to_dict() if plan is None else {**hw.to_dict(), "plan": plan}, indent=2)
    rows = [("device", f"{hw.device_kind} ({hw.device_name})"),
            ("torch device", str(hw.torch_device())),
            ("memory total", _gib(hw.total_memory)),
            ("memory available", _gib(hw.available_memory)),
            ("precisions", ", ".join(hw.supported_precisions) + f" (training uses {hw.best_precision()})"),
            ("CPU cores", str(hw.cpu_cores)),
            ("torch", hw.torch_version),
            ("CUDA", hw.cuda_version or "no (CPU/MPS build)"),
            ("MLX", "yes" if hw.mlx_available else "no"),
            ("bitsandbytes", "yes" if hw.bitsandbytes_available else "no")]
    if hw.compute_capability:
        rows.append(("compute capability", ".".join(map(str, hw.compute_capability))))
    if hw.recommended_batch_size is not None:
        rows.append(("recommended micro-batch", str(hw.recommended_batch_size)))
    rows += [("note", n) for n in hw.notes]
    if plan is not None:
        rows += [("base model", plan["base_source"]), ("plan", _plan_line(plan)), ("about how long", _time_line(plan))]
    return _table(rows)


def planning_base(config: TrainingConfig, scratch: Path) -> tuple[Path, str | None]:
    """(folder the planner reads, where its shape came from). The base as training resolves it, but
    never downloaded; an Ollama tag or Hub id found nowhere on this machine is planned from its
    published shape (families/published.py) as a config-only folder under `scratch`; a base with
    neither raises the resolver's error (what was tried, how to fix)."""
    from .base_models import resolve_base_model
    from .base_models.errors import BaseModelNotFoundError

    spec = config.base_model
    if Path(spec).is_dir():
        return Path(spec), None
    try:
        return Path(resolve_base_model(spec, trust_remote_code=config.trust_remote_code, allow_download=False).path), None
    except BaseModelNotFoundError as e:
        repo, shape = _published(spec)
        if shape is None:
            tried = [*e.tried, f"published shapes (iceburg/families/published.py): none listed for {repo or spec!r}"]
            raise BaseModelNotFoundError(spec, tried, str(e).split("\n")[-1]) from None
    from transformers import AutoConfig

    AutoConfig.for_model(**shape).save_pretrained(scratch / "config")
    return scratch / "config", (f"{spec}: not on this machine; planned from the published shape of {repo} "
                                "(config.json values only, nothing downloaded)")


def _published(spec: str) -> tuple[str | None, dict | None]:
    from .base_models.hub import is_repo_id, map_ollama_tag
    from .families.published import published_shape

    if is_repo_id(spec) and "/" in spec:
        repo = spec
    else:
        name, _, tag = spec.partition(":")
        repo = map_ollama_tag(name, tag or "latest")
    return repo, published_shape(repo) if repo else None


def _time_estimate(plan: dict, config: TrainingConfig) -> dict | None:
    if not plan["fits"]:
        return None
    from .hardware.timing import estimate_cpu_time, matmul_gflops

    if plan.get("device", "cpu") != "cpu":
        return None
    return estimate_cpu_time(plan, config.max_seq_length, matmul_gflops(config.num_threads))


def _time_line(plan: dict) -> str:
    est = plan.get("time_estimate")
    if not plan["fits"]:
        return "-"
    if est is None:
        return ("not estimated: no training efficiency has been measured for this device or allocator "
                "(iceburg/hardware/timing.py)")
    return (f"~{est['seconds_per_step']:.0f} s per optimizer step, ~{_duration(est['seed_table_seconds'])} for 3 epochs "
            f"of 1,000 records at full length ({est['basis']})")


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


def _plan_or_refusal(config: TrainingConfig, hw: HardwareInfo, model_dir: Path) -> dict:
    """The planner's settings for `config` on `hw`, or {"fits": False, "reason": ...} when none fits."""
    from .errors import IceburgError

    try:
        plan = plan_training(model_dir, config, hw)
    except IceburgError as e:
        return {"fits": False, "reason": str(e)}
    return {"fits": True, **plan.to_dict()}


def _plan_line(plan: dict) -> str:
    if not plan["fits"]:
        return f"does not fit: {plan['reason']}"
    alloc = f", allocator {plan['cpu_allocator']}" if plan.get("cpu_allocator") else ""
    return (f"fits: micro-batch {plan['micro_batch_size']} x {plan['gradient_accumulation_steps']} accumulation, "
            f"gradient checkpointing {'yes' if plan['gradient_checkpointing'] else 'no'}, {plan['precision']}"
            f"{', QLoRA' if plan['use_qlora'] else ''}, LoRA r{plan['lora_r']}/a{plan['lora_alpha']}{alloc}; "
            f"expected peak {_gib(plan['expected_peak_bytes'])} of {_gib(plan['available_bytes'])} available")


def _feature_rows(system: SystemDescription) -> list[tuple[str, str]]:
    def pkg(name: str) -> bool:
        return importlib.util.find_spec(name) is not None

    rows = []
    if system.cuda_devices:
        rows.append(("CUDA", f"available: {len(system.cuda_devices)} x {system.cuda_devices[0].name}"))
    elif system.cuda_version:
        rows.append(("CUDA", "not available: torch has CUDA but no GPU/driver was found (check nvidia-smi)"))
    else:
        rows.append(("CUDA", "not available: torch is a CPU build and there is no NVIDIA GPU here; on a "
                             "GPU machine install a CUDA torch: pip install torch==2.13.0 --index-url "
                             "https://download.pytorch.org/whl/cu128"))
    rows.append(("MPS", "available" if system.mps else "not available: needs macOS on Apple silicon"))
    if not system.apple_silicon:
        rows.append(("MLX", "not available: needs Apple silicon (pip install mlx)"))
    else:
        rows.append(("MLX", "available" if system.packages.get("mlx") else "not installed: pip install mlx"))
    if not system.packages.get("bitsandbytes"):
        rows.append(("QLoRA (bitsandbytes)", "not installed: pip install 'iceburg[qlora]' (CUDA or CPU)"))
    elif system.cuda_devices:
        rows.append(("QLoRA (bitsandbytes)", "available (CUDA)"))
    else:  # bitsandbytes 0.50.2 runs NF4 layers on CPU (tests/training/test_qlora.py)
        rows.append(("QLoRA (bitsandbytes)", "available on CPU (--device cpu on Apple silicon; "
                                             "slower than fp32 LoRA, for bases that do not fit otherwise)"))
    rows.append(("llama.cpp (llama_cpp)", "available" if pkg("llama_cpp") else
                 "not installed: CMAKE_ARGS=-DGGML_NATIVE=OFF pip install 'iceburg[llama]' (builds 10-14 min)"))
    rows.append(("onnxruntime", "available" if pkg("onnxruntime") else "not installed: pip install onnxruntime"))
    rows.append(("curation on datatrove (--curate-tasks)", "available" if pkg("datatrove") else
                 "not installed: pip install 'iceburg[curate]'"))
    go = shutil.which("go")
    if go:
        ver = subprocess.run([go, "version"], capture_output=True, text=True, check=False).stdout.strip()
        rows.append(("Go (template checks)", f"available: {ver}"))
    else:
        rows.append(("Go (template checks)", "not found on PATH: apt-get install golang-go (or https://go.dev/dl)"))
    return rows


def features_report(system: SystemDescription | None = None) -> str:
    """`--features`: every optional capability, "available" or the reason and the install command."""
    return _table(_feature_rows(system or probe_system()))


def base_model_dir(config: TrainingConfig) -> Path:
    """The local HF folder for `config.base_model` (the base-model stage resolves non-local specs)."""
    spec = config.base_model
    if Path(spec).is_dir():
        return Path(spec)
    from .base_models import resolve_base_model

    return Path(resolve_base_model(spec, trust_remote_code=config.trust_remote_code).path)


def configs_report(config: TrainingConfig, hw: HardwareInfo | None = None,
                   model_dir: Path | None = None) -> str:
    """`--configs`: the plan for each model type on this machine, with the configured base model."""
    hw = hw or describe_hardware(probe_system(), device=config.device)
    model_dir = model_dir or base_model_dir(config)
    header = ("type", "LoRA r/alpha", "micro-batch", "grad accum", "grad ckpt", "precision", "QLoRA", "peak")
    lines = [f"base model: {config.base_model} ({model_dir}); device: {hw.device_kind} ({hw.device_name}), "
             f"{_gib(hw.available_memory)} available; max_seq_length {config.max_seq_length}", ""]
    rows = [header]
    for mt in ModelType:
        plan = plan_training(model_dir, dataclasses.replace(config, model_type=mt), hw)
        rows.append((mt.short, f"{plan.lora_r}/{plan.lora_alpha}", str(plan.micro_batch_size),
                     str(plan.gradient_accumulation_steps), "yes" if plan.gradient_checkpointing else "no",
                     plan.precision, "yes" if plan.use_qlora else "no", _gib(plan.expected_peak_bytes)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines += ["", f"LoRA targets: {', '.join(plan.lora_target_modules)}"]
    return "\n".join(lines)
