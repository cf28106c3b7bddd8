"""CPU allocator policy (hardware/memory.py, training/run_parts.py): glibc's faster default is kept
only where twice the planner's estimate fits; otherwise freed memory is returned to the OS."""

from __future__ import annotations

from pathlib import Path

import pytest

import iceburg.hardware as hardware
import iceburg.hardware.memory as memory
from iceburg.config import TrainingConfig
from iceburg.hardware import fixed_mmap_threshold_needed
from iceburg.training.run_parts import plan_run

GIB = 2**30


def test_rule():
    assert memory.DYNAMIC_HEAP_FACTOR == 2.0
    assert not fixed_mmap_threshold_needed(4 * GIB, 10 * GIB)
    assert fixed_mmap_threshold_needed(6 * GIB, 10 * GIB)


def test_plan_run_applies_it(tiny_model_dir, monkeypatch):
    calls = []
    monkeypatch.setattr(hardware, "configure_cpu_allocator", lambda: calls.append(1) or True)
    cfg = TrainingConfig(max_seq_length=128, batch_size=2, gradient_accumulation_steps=1)
    plan = plan_run(Path(tiny_model_dir), cfg, [])
    if plan.device != "cpu":
        pytest.skip(f"the plan runs on {plan.device}: the allocator policy is for CPU training")
    assert calls == []  # a 2M-parameter model fits many times over
    assert any("keeps freed memory" in n for n in plan.notes)
    monkeypatch.setattr(memory, "DYNAMIC_HEAP_FACTOR", 1e9)  # as if memory were tight
    plan = plan_run(Path(tiny_model_dir), cfg, [])
    assert calls == [1]
    assert any("returned to the OS" in n for n in plan.notes)
