"""Branch 1 (local Hugging Face folder) and the folder-level errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from iceburg.base_models import (
    BaseModelError,
    BaseModelNotFoundError,
    MissingTokenizerError,
    UnsafeWeightsError,
    UnsupportedArchitectureError,
    resolve_base_model,
)
from iceburg.errors import IceburgError


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_folder_resolves_with_facts_read_from_the_model(arch, tiny_models):
    from transformers import AutoModelForCausalLM

    base = resolve_base_model(str(tiny_models[arch]))
    assert base.source == "folder" and base.path == tiny_models[arch]
    assert base.architecture == arch
    model = AutoModelForCausalLM.from_pretrained(tiny_models[arch])
    assert base.param_count == sum(p.numel() for p in model.parameters())  # tied qwen2 embeddings counted once
    assert base.has_chat_template
    data = base.to_dict()
    assert json.loads(json.dumps(data)) == data  # JSON-ready for base_model.json
    assert data["path"] == str(tiny_models[arch]) and data["source"] == "folder"


def test_folder_without_chat_template(tmp_path, bm):
    from iceburg.models.random import build_random_model

    tok = bm.build_tokenizer("qwen2", tmp_path / "tok", chat_template=False)
    folder = build_random_model("qwen2", tmp_path / "m", tokenizer_dir=tok)
    base = resolve_base_model(str(folder))
    assert base.source == "folder" and base.has_chat_template is False


def test_pickle_only_folder_is_refused_without_unpickling(tmp_path, tiny_models):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_models["llama"], folder)
    (folder / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(1)}, folder / "pytorch_model.bin")
    with pytest.raises(UnsafeWeightsError) as err:
        resolve_base_model(str(folder))
    msg = str(err.value)
    assert str(folder) in msg and "pytorch_model.bin" in msg and "safetensors" in msg
    assert isinstance(err.value, IceburgError)


def test_folder_without_tokenizer(tmp_path, tiny_models):
    folder = tmp_path / "no-tok"
    shutil.copytree(tiny_models["llama"], folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(MissingTokenizerError) as err:
        resolve_base_model(str(folder))
    assert str(folder) in str(err.value) and "tokenizer.json" in str(err.value)
    assert "model.safetensors" in str(err.value)  # says what was found


def test_folder_with_broken_tokenizer(tmp_path, tiny_models):
    folder = tmp_path / "bad-tok"
    shutil.copytree(tiny_models["llama"], folder)
    (folder / "tokenizer.json").write_text("{not json")
    with pytest.raises(MissingTokenizerError, match="could not be loaded"):
        resolve_base_model(str(folder))


def test_unsupported_architecture_encoder_decoder_model(tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration

    folder = tmp_path / "t5"
    cfg = T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2)
    T5ForConditionalGeneration(cfg).save_pretrained(folder)
    with pytest.raises(UnsupportedArchitectureError) as err:
        resolve_base_model(str(folder))
    assert "'t5'" in str(err.value) and str(folder) in str(err.value)
    assert "causal language model" in str(err.value)


def test_remote_code_architecture_needs_the_flag(tmp_path, tiny_models):
    folder = tmp_path / "custom"
    shutil.copytree(tiny_models["llama"], folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(model_type="my_custom_lm", architectures=["MyCustomLM"],
               auto_map={"AutoConfig": "modeling_custom.MyConfig",
                         "AutoModelForCausalLM": "modeling_custom.MyCustomLM"})
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedArchitectureError) as err:
        resolve_base_model(str(folder))
    assert "--trust-remote-code" in str(err.value) and "my_custom_lm" in str(err.value)


def test_folder_without_config_points_at_its_gguf(tmp_path):
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "model-q4.gguf").write_bytes(b"GGUF")
    with pytest.raises(BaseModelError) as err:
        resolve_base_model(str(folder))
    assert "no config.json" in str(err.value) and "model-q4.gguf" in str(err.value)


def test_missing_path_and_empty_spec(tmp_path):
    missing = tmp_path / "nope" / "model.gguf"
    with pytest.raises(BaseModelNotFoundError) as err:
        resolve_base_model(str(missing))
    assert str(missing) in str(err.value)
    with pytest.raises(BaseModelError, match="empty"):
        resolve_base_model("  ")


def test_sharded_folder_and_a_missing_shard(tmp_path, tiny_models):
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(tiny_models["llama"]).save_pretrained(folder, max_shard_size="200KB")
    for f in tiny_models["llama"].glob("*token*"):
        shutil.copy(f, folder / f.name)
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 1
    assert resolve_base_model(str(folder)).param_count == resolve_base_model(str(tiny_models["llama"])).param_count
    shards[-1].unlink()
    with pytest.raises(BaseModelError, match="incomplete weights") as err:
        resolve_base_model(str(folder))
    assert shards[-1].name in str(err.value)
