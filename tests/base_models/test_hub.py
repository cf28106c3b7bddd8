"""Branches 4-5: Hugging Face cache (repo ids and the Ollama tag map), downloads, iceburg-tiny."""

from __future__ import annotations

import shutil

import pytest
import torch

from iceburg.base_models import (
    OLLAMA_TO_HF,
    BaseModelNotFoundError,
    UnsafeWeightsError,
    map_ollama_tag,
    resolve_base_model,
)


def test_repo_id_from_the_hf_cache(tiny_models, tmp_path, bm):
    cache = tmp_path / "hub"
    snapshot = bm.add_to_hf_cache(cache, "acme/tiny-llama", tiny_models["llama"])
    base = resolve_base_model("acme/tiny-llama", cache_dir=cache, allow_download=False)
    assert base.source == "hf-cache" and base.path == snapshot
    assert base.architecture == "llama" and base.details["hf_repo"] == "acme/tiny-llama"


def test_ollama_tag_falls_back_to_the_mapped_hf_repo(tiny_models, tiny_ggufs, tmp_path, ollama_store,
                                                     iceburg_cache, bm):
    cache = tmp_path / "hub"
    snapshot = bm.add_to_hf_cache(cache, "Qwen/Qwen2.5-0.5B-Instruct", tiny_models["qwen2"])
    for spec in ("qwen2.5:0.5b", "qwen2.5:0.5b-instruct-q4_K_M"):
        base = resolve_base_model(spec, cache_dir=cache, allow_download=False)
        assert base.source == "hf-cache" and base.path == snapshot
        assert base.details["hf_repo"] == "Qwen/Qwen2.5-0.5B-Instruct"
        assert "tag map" in base.details["hf_match"]
        assert any("no manifest" in t for t in base.details["tried"])  # the store was looked at first
    # Once the store has the tag, the store wins over the map.
    bm.add_to_ollama_store(ollama_store, tiny_ggufs["qwen2"], "qwen2.5", "0.5b")
    assert resolve_base_model("qwen2.5:0.5b", cache_dir=cache, allow_download=False).source == "ollama"


def test_tag_map():
    assert map_ollama_tag("llama3.2", "latest") == "meta-llama/Llama-3.2-3B-Instruct"
    assert map_ollama_tag("llama3.2", "1b") == "meta-llama/Llama-3.2-1B-Instruct"
    assert map_ollama_tag("llama3.1", "8b-instruct-q8_0") == "meta-llama/Llama-3.1-8B-Instruct"
    assert map_ollama_tag("mistral", "7b") == "mistralai/Mistral-7B-Instruct-v0.3"
    assert map_ollama_tag("mistral", "instruct") == "mistralai/Mistral-7B-Instruct-v0.3"
    assert [map_ollama_tag("qwen2.5", s) for s in ("0.5b", "1.5b", "3b", "7b", "14b")] == [
        f"Qwen/Qwen2.5-{s}-Instruct" for s in ("0.5B", "1.5B", "3B", "7B", "14B")]
    assert map_ollama_tag("phi4", "latest") == "microsoft/phi-4"
    assert map_ollama_tag("gemma2", "27b") == "google/gemma-2-27b-it"
    assert map_ollama_tag("gemma", "2b") == "google/gemma-2b-it"
    assert map_ollama_tag("llama3.2", "3b-text-q4_K_M") is None  # a base model, not the instruct repo
    assert map_ollama_tag("qwen2.5", "72b") == "Qwen/Qwen2.5-72B-Instruct"  # siblings: docs/families.md
    assert map_ollama_tag("qwen2.5", "110b") is None and map_ollama_tag("nosuch", "7b") is None
    for name, sizes in OLLAMA_TO_HF.items():
        assert sizes["default"] in sizes, name


def test_offline_error_names_everything_tried(tmp_path, ollama_store):
    cache = tmp_path / "hub"
    with pytest.raises(BaseModelNotFoundError) as err:
        resolve_base_model("llama3.2:3b", cache_dir=cache, allow_download=False)
    msg = str(err.value)
    assert "manifests/registry.ollama.ai/library/llama3.2/3b" in msg  # Ollama store
    assert "meta-llama/Llama-3.2-3B-Instruct" in msg and "not cached" in msg  # tag map + HF cache
    assert "not attempted" in msg  # no download
    assert "ollama pull llama3.2:3b" in msg and "hf download meta-llama/Llama-3.2-3B-Instruct" in msg


def test_failed_download_is_named(tmp_path, ollama_store, monkeypatch):
    # conftest switches the Hub off (HF_HUB_OFFLINE=1): an allowed download fails and says why.
    with pytest.raises(BaseModelNotFoundError) as err:
        resolve_base_model("acme/not-cached", cache_dir=tmp_path / "hub", allow_download=True)
    msg = str(err.value)
    assert "download of acme/not-cached failed" in msg and "not cached" in msg
    assert "ollama pull" not in msg  # a Hugging Face id written as one: no Ollama advice for it
    assert "hf download acme/not-cached" in msg


def test_allow_download_defaults_to_the_hub_offline_switch(tmp_path, ollama_store):
    with pytest.raises(BaseModelNotFoundError, match="not attempted"):
        resolve_base_model("acme/not-cached", cache_dir=tmp_path / "hub")


def test_pickle_only_repo_in_cache_is_refused(tiny_models, tmp_path, bm):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_models["llama"], folder)
    (folder / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(1)}, folder / "pytorch_model.bin")
    cache = tmp_path / "hub"
    bm.add_to_hf_cache(cache, "acme/old-checkpoint", folder)
    with pytest.raises(UnsafeWeightsError, match="pytorch_model.bin"):
        resolve_base_model("acme/old-checkpoint", cache_dir=cache, allow_download=False)


@pytest.mark.slow
def test_embedded_default(tiny_model_dir, tmp_path, ollama_store):
    base = resolve_base_model("iceburg-tiny", cache_dir=tmp_path / "hub", allow_download=True)
    assert base.source == "embedded" and base.path == tiny_model_dir
    assert base.architecture == "llama" and base.has_chat_template and base.param_count > 0
    assert not any("download" in t for t in base.details["tried"])  # the reserved name never hits the Hub
