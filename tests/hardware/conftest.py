"""Model folders with real published shapes (config.json only: the planner never reads weights),
and injected machine descriptions for the CUDA and Apple paths."""

from __future__ import annotations

import pytest
from transformers import AutoConfig

from iceburg.hardware import CudaDevice, MpsDevice, SystemDescription

GIB = 2**30

# config.json values of the published models (Hugging Face repos of the same names).
LLAMA_3_2_3B = dict(model_type="llama", hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                    num_attention_heads=24, num_key_value_heads=8, head_dim=128, vocab_size=128256,
                    tie_word_embeddings=True, max_position_embeddings=131072)
QWEN_2_5_14B = dict(model_type="qwen2", hidden_size=5120, intermediate_size=13824, num_hidden_layers=48,
                    num_attention_heads=40, num_key_value_heads=8, vocab_size=152064,
                    tie_word_embeddings=False, max_position_embeddings=32768)
SMALL_QWEN = dict(model_type="qwen2", hidden_size=128, intermediate_size=352, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, vocab_size=512, tie_word_embeddings=True)


def config_dir(tmp_path_factory, name: str, values: dict):
    d = tmp_path_factory.mktemp(name)
    AutoConfig.for_model(**values).save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def llama_3b_dir(tmp_path_factory):
    return config_dir(tmp_path_factory, "llama-3.2-3b", LLAMA_3_2_3B)


@pytest.fixture(scope="session")
def qwen_14b_dir(tmp_path_factory):
    return config_dir(tmp_path_factory, "qwen2.5-14b", QWEN_2_5_14B)


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory):
    return config_dir(tmp_path_factory, "gpt2-small",
                      dict(model_type="gpt2", n_embd=128, n_layer=2, n_head=4, vocab_size=512,
                           bos_token_id=0, eos_token_id=0))


@pytest.fixture(scope="session")
def small_qwen_dir(tmp_path_factory):
    return config_dir(tmp_path_factory, "small-qwen", SMALL_QWEN)


def mac(ram_gib: float = 16, working_set_gib: float = 10.67, macos=(14, 5), mlx: bool = False):
    """An Apple-silicon Mac as torch reports it (working set: Metal's recommendedMaxWorkingSetSize)."""
    return SystemDescription("Darwin", "arm64", "M2", 8, int(ram_gib * GIB), int(ram_gib * 0.7 * GIB),
                             "2.13.0", mps=MpsDevice(int(working_set_gib * GIB), 0, macos),
                             packages={"mlx": mlx, "bitsandbytes": False})


def cuda_box(total_gib: float = 24, free_gib: float = 23.5, capability=(8, 9), bnb: bool = True,
             name: str = "NVIDIA GeForce RTX 4090", extra: list | None = None):
    devices = [CudaDevice(name, int(total_gib * GIB), int(free_gib * GIB), capability)] + (extra or [])
    return SystemDescription("Linux", "x86_64", "AMD Ryzen 9", 16, 64 * GIB, 60 * GIB, "2.13.0",
                             cuda_version="12.8", cuda_devices=devices,
                             packages={"mlx": False, "bitsandbytes": bnb})


def cpu_box(ram_gib: float = 8, available_gib: float = 6, bnb: bool = False):
    return SystemDescription("Linux", "x86_64", "Xeon", 4, int(ram_gib * GIB), int(available_gib * GIB),
                             "2.13.0", packages={"mlx": False, "bitsandbytes": bnb})


@pytest.fixture(scope="session")
def machines():
    """Factories of injected machine descriptions: machines.mac(...), .cuda_box(...), .cpu_box(...)."""
    import types

    return types.SimpleNamespace(mac=mac, cuda_box=cuda_box, cpu_box=cpu_box)
