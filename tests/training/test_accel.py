"""GPU options testable on CPU: the padding-free varlen layout gives the padded batch's loss (under
sdpa, transformers' block-diagonal mask from position ids; on CUDA flash-attention reads the same
position ids as cu_seqlens), clear refusals of CUDA-only options, and bench/gpu.py's CPU parts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from iceburg.training.encoding import Example

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _examples(vocab: int) -> list[Example]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i, k in enumerate((40, 23, 57, 31, 12, 48)):
        ids = torch.randint(0, vocab, (k,), generator=g).tolist()
        out.append(Example(ids, [j >= k // 3 for j in range(k)], f"e{i}", 0.5 + 0.25 * i))
    return out


def test_varlen_layout_gives_the_padded_batch_loss(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from iceburg.training.accel import collate_varlen
    from iceburg.training.packing import collate, pack
    from iceburg.training.trainer import TrainArgs, _forward_loss, weighted_token_loss

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    rows = pack(_examples(model.config.vocab_size), 100)
    assert len(rows) >= 2 and any(len(r.example_ids) > 1 for r in rows)  # packed rows of unequal length
    args = TrainArgs(segment_attention=False)  # transformers' block-diagonal mask (segments: test_segment_attention.py)
    with torch.no_grad():
        padded, n_padded = _forward_loss(model, collate(rows, 0), args, weighted_token_loss)
        flat_batch = collate_varlen(rows)
        flat, n_flat = _forward_loss(model, flat_batch, args, weighted_token_loss)
    assert flat_batch["input_ids"].shape == (1, sum(len(r) for r in rows))  # no padding at all
    print("padded vs varlen layout loss:", float(padded), float(flat))
    assert n_padded == n_flat
    assert abs(float(padded) - float(flat)) < 1e-4 * float(padded)


def test_cuda_only_options_are_refused_on_cpu():
    from iceburg.training.accel import gpu_option_problems

    probs = gpu_option_problems("flash_attention_2", True, "cpu")
    assert any("--attn-implementation" in p and "CUDA only" in p for p in probs)
    assert any("--liger" in p and "CUDA only" in p for p in probs)
    assert gpu_option_problems("sdpa", False, "cpu") == []


def test_missing_packages_named_with_install_line():
    import importlib.util

    from iceburg.config import TrainingConfig

    cfg = TrainingConfig(use_liger=True, attn_implementation="flash_attention_2")
    probs = cfg.problems()
    if importlib.util.find_spec("liger_kernel") is None:
        assert any("pip install liger-kernel" in p for p in probs)
    if importlib.util.find_spec("flash_attn") is None:
        assert any("pip install flash-attn" in p for p in probs)
    mlx = TrainingConfig(backend="mlx", use_liger=True).problems()
    assert any("--liger runs on torch only" in p for p in mlx)
    assert any("--liger" in p and "one process" in p for p in TrainingConfig(use_liger=True, nproc=2).problems())


def test_liger_requested_without_the_package_raises_the_install_line():
    import importlib.util

    from iceburg.errors import MissingDependencyError
    from iceburg.training.accel import liger_functional

    if importlib.util.find_spec("liger_kernel") is not None:
        pytest.skip("liger-kernel is installed")
    with pytest.raises(MissingDependencyError, match="pip install liger-kernel"):
        liger_functional()


def test_liger_path_weights_and_positions_match_the_trainer_loss(tiny_model_dir, monkeypatch):
    """Our side of the Liger path (hidden states at supervised positions, per-example weights as a
    sum over distinct weights) against the trainer's loss, with the kernel replaced by the plain
    torch computation it fuses (lm-head matmul + summed cross-entropy; Liger's own kernel needs CUDA)."""
    from transformers import AutoModelForCausalLM

    from iceburg.training import accel
    from iceburg.training.packing import collate, pack
    from iceburg.training.trainer import TrainArgs, _autocast, _forward_loss, weighted_token_loss

    def flce(h, w, t, b=None, reduction="mean"):
        return torch.nn.functional.cross_entropy(torch.nn.functional.linear(h, w, b).float(), t, reduction=reduction)

    monkeypatch.setattr(accel, "liger_functional", lambda: flce)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    rows = pack(_examples(model.config.vocab_size), 100)
    batch = collate(rows, 0)
    with torch.no_grad():
        ref, n_ref = _forward_loss(model, batch, TrainArgs(), weighted_token_loss)
        fused, n = accel.liger_forward_loss(model, batch, "cpu", _autocast(TrainArgs()))
    assert n == n_ref and len({w for r in rows for w in r.weights}) > 2  # several weights in play
    assert abs(float(fused) - float(ref)) < 1e-4 * float(ref)


@pytest.fixture
def gpu_bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu

    yield gpu
    sys.modules.pop("gpu", None)


def test_gpu_bench_refuses_cpu(gpu_bench):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(SystemExit, match="no CUDA device"):
        gpu_bench.main(["--steps", "2", "--warmup", "1"])


def test_gpu_bench_arguments_and_shapes(gpu_bench):
    from iceburg.hardware.model_shape import shape_from_config

    a = gpu_bench.parse_args(["--shapes", "qwen2.5-0.5b", "--modes", "iceburg-sdpa", "trl-bfd"])
    assert a.shapes == ["qwen2.5-0.5b"] and a.modes == ["iceburg-sdpa", "trl-bfd"] and a.seq_len == 2048
    with pytest.raises(SystemExit):
        gpu_bench.parse_args(["--steps", "3", "--warmup", "3"])
    # the configs build on the meta device and have the published sizes (Qwen2.5 model cards: 0.49B, 1.54B)
    for name, billions in (("qwen2.5-0.5b", 0.49), ("qwen2.5-1.5b", 1.54)):
        shape = shape_from_config(gpu_bench.model_config(name))
        assert abs(shape.param_count / 1e9 - billions) < 0.01, (name, shape.param_count)
    assert gpu_bench.peak_tflops("NVIDIA H200", None) == 989.0
    with pytest.raises(SystemExit, match="--peak-tflops"):
        gpu_bench.peak_tflops("Mystery GPU", None)
