"""Branch 3 (Ollama tag in the local store): the issue's end-to-end test, name forms, store errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from iceburg.base_models import (
    BaseModelNotFoundError,
    CorruptGGUFError,
    OllamaManifestError,
    parse_ollama_name,
    resolve_base_model,
)
from iceburg.base_models.ollama_store import default_stores

CHATS = [
    ("What does the survey show?", "Three sources agree and one contradicts them; confidence is moderate."),
    ("Is the evidence strong?", "Independent measurements agree, so the evidence is strong."),
    ("Challenge this claim.", "The claim rests on one study; the counter-argument is that it was not replicated."),
    ("Connect the findings.", "The findings across domains point to the same mechanism."),
]


def _write_chats(path, n=24):
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            q, a = CHATS[i % len(CHATS)]
            fh.write(json.dumps({"messages": [{"role": "user", "content": f"{q} (case {i})"},
                                              {"role": "assistant", "content": a}]}) + "\n")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_ollama_tag_end_to_end(arch, tiny_models, tiny_ggufs, ollama_store, iceburg_cache, tmp_path, bm):
    """The issue's test: project exporter -> Ollama store -> `tiny:latest` -> same logits -> fine-tune
    -> GGUF export -> back into the store -> resolves to the fine-tuned model."""
    from iceburg.config import TrainingConfig
    from iceburg.training.finetuner import ICEBURGFineTuner

    manifest = bm.add_to_ollama_store(ollama_store, tiny_ggufs[arch], "tiny", "latest")
    base = resolve_base_model("tiny:latest")  # store found through $OLLAMA_MODELS
    assert base.source == "ollama" and base.architecture == arch
    assert base.details["ollama_manifest"] == str(manifest)
    assert "application/vnd.ollama.image.template" in base.details["ollama_other_layers"]

    ids, expected = bm.logits(tiny_models[arch])
    ids2, got = bm.logits(base.path)
    assert torch.equal(ids, ids2)
    assert torch.allclose(got, expected, atol=1e-5, rtol=0), (got - expected).abs().max()

    cfg = TrainingConfig(base_model="tiny:latest", data_path=[str(_write_chats(tmp_path / "chats.jsonl"))],
                         output_dir=str(tmp_path / "runs"), output_name=f"ollama-{arch}", max_steps=3,
                         max_seq_length=64, eval_fraction=0.25, use_truth_filter=False,
                         use_emergence_weighting=False, export_formats=["gguf"], quantization=["f32"],
                         num_threads=2, seed=0, lora_r=4, learning_rate=1e-2, device="cpu")
    result = ICEBURGFineTuner(cfg).train()
    assert result.steps == 3 and math.isfinite(result.train_loss)
    recorded = json.loads((tmp_path / "runs" / f"ollama-{arch}" / "base_model.json").read_text())
    assert recorded["source"] == "ollama" and recorded["path"] == str(base.path)
    assert recorded["architecture"] == arch and recorded["has_chat_template"] is True
    from safetensors.torch import load_file

    adapter = load_file(next(result.adapter_dir.glob("*.safetensors")))
    lora_b = [t for k, t in adapter.items() if "lora_B" in k]
    assert lora_b and any(t.abs().max() > 0 for t in lora_b)  # LoRA B starts at zero: training moved it

    # Close the loop: the fine-tuned model's GGUF export, placed back in the store, resolves again.
    exported = next(Path(p) for p in result.export_paths["gguf"] if p.endswith(".gguf"))
    bm.add_to_ollama_store(ollama_store, exported, "tiny-ft", "latest")
    tuned = resolve_base_model("tiny-ft")
    assert tuned.source == "ollama" and tuned.architecture == arch
    _, merged = bm.logits(result.merged_dir)
    _, reloaded = bm.logits(tuned.path)
    assert torch.allclose(reloaded, merged, atol=1e-4, rtol=0), (reloaded - merged).abs().max()
    assert not torch.allclose(merged, expected, atol=1e-4)  # and it is not the base any more


def test_name_forms_resolve_in_the_store(tiny_ggufs, ollama_store, iceburg_cache, bm):
    bm.add_to_ollama_store(ollama_store, tiny_ggufs["qwen2"], "tiny", "latest")
    bm.add_to_ollama_store(ollama_store, tiny_ggufs["qwen2"], "tiny", "v1", namespace="someone")
    bm.add_to_ollama_store(ollama_store, tiny_ggufs["qwen2"], "tiny", "q8", namespace="org",
                           host="hf.co")
    paths = {resolve_base_model(spec, ollama_models=ollama_store).path
             for spec in ("tiny", "tiny:latest", "someone/tiny:v1", "hf.co/org/tiny:q8")}
    assert len(paths) == 1  # one blob -> one converted folder


def test_default_stores(monkeypatch, tmp_path):
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "store"))
    assert default_stores() == [tmp_path / "store"]
    monkeypatch.delenv("OLLAMA_MODELS")
    monkeypatch.setenv("HOME", str(tmp_path))
    # ~/.ollama/models, then where the Linux install script's systemd service keeps its models
    assert default_stores() == [tmp_path / ".ollama" / "models", Path("/usr/share/ollama/.ollama/models")]


def test_linux_service_store_is_searched_after_the_home_store(tiny_ggufs, tmp_path, monkeypatch,
                                                              iceburg_cache, bm):
    from iceburg.base_models import ollama_store

    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    service = tmp_path / "usr-share-ollama" / ".ollama" / "models"
    monkeypatch.setattr(ollama_store, "LINUX_SERVICE_STORE", service)
    bm.add_to_ollama_store(service, tiny_ggufs["llama"], "served", "latest")
    base = resolve_base_model("served")
    assert base.source == "ollama" and base.details["ollama_manifest"].startswith(str(service))
    assert any(str(tmp_path / "home" / ".ollama" / "models") in t for t in base.details["tried"])


def test_parse_ollama_name():
    n = parse_ollama_name("llama3.2:3b")
    assert (n.host, n.namespace, n.name, n.tag) == ("registry.ollama.ai", "library", "llama3.2", "3b")
    assert parse_ollama_name("me/model").parts == ("registry.ollama.ai", "me", "model", "latest")
    assert parse_ollama_name("hf.co/bartowski/Llama-3.2-1B-GGUF:Q4_K_M").host == "hf.co"
    for bad in ("../../etc/passwd:latest", "a/../b:c", "/abs/path:x", "x:../../y", "a/b/c/d:e", "~user:x",
                "name:", ".hidden:x"):
        assert parse_ollama_name(bad) is None, bad


def test_manifest_without_model_layer(tiny_ggufs, ollama_store, iceburg_cache, bm):
    manifest = bm.add_to_ollama_store(ollama_store, tiny_ggufs["llama"], "adapter-only", "latest",
                                      with_model_layer=False,
                                      extra_layers={"application/vnd.ollama.image.adapter": "lora",
                                                    "application/vnd.ollama.image.template": "{{ .Prompt }}"})
    with pytest.raises(OllamaManifestError) as err:
        resolve_base_model("adapter-only")
    msg = str(err.value)
    assert str(manifest) in msg and "application/vnd.ollama.image.model" in msg
    assert "application/vnd.ollama.image.adapter" in msg  # what was found


def test_manifest_in_per_tensor_format(tiny_ggufs, ollama_store, iceburg_cache, bm):
    bm.add_to_ollama_store(ollama_store, tiny_ggufs["llama"], "new-format", "latest", with_model_layer=False,
                           extra_layers={"application/vnd.ollama.image.tensor; name=w; dtype=F16; shape=2": "x"})
    with pytest.raises(OllamaManifestError, match="per-tensor"):
        resolve_base_model("new-format")


@pytest.mark.parametrize("digest", ["sha256:../../../../etc/passwd", "/etc/passwd", "sha256:" + "A" * 64,
                                    "sha256:" + "0" * 63, "md5:" + "0" * 32])
def test_manifest_digest_cannot_escape_the_store(digest, tiny_ggufs, ollama_store, iceburg_cache, bm):
    manifest = bm.add_to_ollama_store(ollama_store, tiny_ggufs["llama"], "evil", "latest")
    data = json.loads(manifest.read_text())
    data["layers"][0]["digest"] = digest
    manifest.write_text(json.dumps(data))
    with pytest.raises(OllamaManifestError) as err:
        resolve_base_model("evil:latest")
    assert "sha256:<64 hex>" in str(err.value) and str(manifest) in str(err.value)


def test_unreadable_manifest(ollama_store, iceburg_cache):
    path = ollama_store / "manifests" / "registry.ollama.ai" / "library" / "broken" / "latest"
    path.parent.mkdir(parents=True)
    path.write_text("{\"layers\": ")
    with pytest.raises(OllamaManifestError, match="unreadable manifest") as err:
        resolve_base_model("broken")
    assert "ollama pull broken:latest" in str(err.value)


def test_missing_blob(tiny_ggufs, ollama_store, iceburg_cache, bm):
    bm.add_to_ollama_store(ollama_store, tiny_ggufs["llama"], "gone", "latest")
    data = json.loads((ollama_store / "manifests/registry.ollama.ai/library/gone/latest").read_text())
    (ollama_store / "blobs" / data["layers"][0]["digest"].replace(":", "-")).unlink()
    with pytest.raises(OllamaManifestError, match="missing"):
        resolve_base_model("gone")


def test_truncated_blob(tiny_ggufs, ollama_store, iceburg_cache, bm):
    manifest = bm.add_to_ollama_store(ollama_store, tiny_ggufs["llama"], "cut", "latest")
    digest = json.loads(manifest.read_text())["layers"][0]["digest"]
    blob = ollama_store / "blobs" / digest.replace(":", "-")
    blob.write_bytes(blob.read_bytes()[:1000])
    with pytest.raises(CorruptGGUFError) as err:
        resolve_base_model("cut")
    assert "truncated" in str(err.value) and "ollama pull cut:latest" in str(err.value)


def test_blob_not_matching_its_digest(tiny_ggufs, ollama_store, iceburg_cache, bm):
    manifest = bm.add_to_ollama_store(ollama_store, tiny_ggufs["llama"], "flipped", "latest")
    digest = json.loads(manifest.read_text())["layers"][0]["digest"]
    blob = ollama_store / "blobs" / digest.replace(":", "-")
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF  # same size, one weight byte changed
    blob.write_bytes(bytes(data))
    with pytest.raises(CorruptGGUFError, match="sha256"):
        resolve_base_model("flipped")


def test_unresolvable_tag_names_everything_tried(ollama_store, iceburg_cache, tmp_path):
    with pytest.raises(BaseModelNotFoundError) as err:
        resolve_base_model("nosuchmodel:7b", cache_dir=tmp_path / "hf", allow_download=False)
    msg = str(err.value)
    assert "nosuchmodel:7b" in msg
    assert str(ollama_store) in msg and "manifests/registry.ollama.ai/library/nosuchmodel/7b" in msg
    assert "ollama pull nosuchmodel:7b" in msg and "iceburg-tiny" in msg
