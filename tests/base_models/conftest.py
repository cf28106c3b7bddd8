"""Fixtures for base-model resolution: real tiny models, real GGUF files, real store layouts.

Tokenizers are trained with the `tokenizers` library in the style of each family (Llama 3 split
regex + Llama 3 chat markup; Qwen2 split regex + ChatML), the models are random-weight
`build_random_model` folders shaped like the real configs, and GGUF files come from the
project's own exporter (`iceburg.export.gguf.write_gguf`). Nothing is mocked.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CORPUS = [
    "The survey found three sources that agree and one that contradicts them.",
    "Evidence is strong when independent measurements agree; say how confident you are.",
    "A dissident challenges assumptions, finds weak evidence and offers counter-arguments.",
    "The synthesis connects findings across domains: 42 studies, 7 meta-analyses, 1 review.",
    "Oracle: the verdict follows from the principles; confidence 0.8.",
] * 20
FAMILIES = {
    "llama": dict(split=LLAMA3_SPLIT, template=LLAMA3_TEMPLATE, bos="<|begin_of_text|>", eos="<|eot_id|>",
                  specials=["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]),
    "qwen2": dict(split=QWEN2_SPLIT, template=CHATML_TEMPLATE, bos=None, eos="<|im_end|>",
                  specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"]),
}
PROMPT = "The survey found 42 sources; the evidence is strong."


MISTRAL_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} "
                    "[/INST]{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}")


def build_sentencepiece_style_tokenizer(out_dir: Path) -> Path:
    """Llama 2 / Mistral style: BPE over "▁"-joined text with byte fallback and a BOS post-processor."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    hf.chat_template = MISTRAL_TEMPLATE
    hf.save_pretrained(out_dir)
    return out_dir


def build_tokenizer(family: str, out_dir: Path, chat_template: bool = True) -> Path:
    """Byte-level BPE tokenizer of a family's style, saved as an HF folder."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    f = FAMILIES[family]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(f["split"]), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=f["specials"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=f["bos"], eos_token=f["eos"],
                                 pad_token=f["eos"], clean_up_tokenization_spaces=False)
    if chat_template:
        hf.chat_template = f["template"]
    hf.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def models_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("base_models")


@pytest.fixture(scope="session")
def tiny_models(models_root) -> dict[str, Path]:
    """{"llama": folder, "qwen2": folder}: random-weight models shaped like the real families."""
    from iceburg.models.random import build_random_model

    out = {}
    for family in FAMILIES:
        tok = build_tokenizer(family, models_root / f"tok-{family}")
        out[family] = build_random_model(family, models_root / f"hf-{family}", tokenizer_dir=tok, seed=1)
    return out


@pytest.fixture(scope="session")
def tiny_ggufs(tiny_models, models_root) -> dict[str, Path]:
    """{"llama": f32 GGUF, "qwen2": f32 GGUF} written by the project's exporter."""
    from iceburg.export.gguf import write_gguf

    return {a: write_gguf(d, models_root / f"{a}-f32.gguf", "f32") for a, d in tiny_models.items()}


@pytest.fixture
def iceburg_cache(tmp_path, monkeypatch) -> Path:
    """A fresh cache for converted GGUFs, also seen by code that reads $ICEBURG_CACHE."""
    cache = tmp_path / "iceburg-cache"
    monkeypatch.setenv("ICEBURG_CACHE", str(cache))
    return cache


def add_to_ollama_store(store: Path, gguf_path: Path, name: str, tag: str, *, namespace: str = "library",
                        host: str = "registry.ollama.ai", extra_layers: dict[str, str] | None = None,
                        with_model_layer: bool = True) -> Path:
    """Lay a GGUF into an Ollama store the way `ollama pull`/`ollama create` do; returns the manifest.

    Blobs are named `sha256-<hex>` after their content, the manifest is the Docker v2 schema that
    Ollama writes (config layer + model/template/params/... layers with digest and size).
    """
    blobs = store / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)

    def blob(data: bytes | None = None, src: Path | None = None) -> tuple[str, int]:
        content = data if data is not None else src.read_bytes()
        digest = hashlib.sha256(content).hexdigest()
        target = blobs / f"sha256-{digest}"
        if not target.exists():
            if src is not None:
                shutil.copyfile(src, target)
            else:
                target.write_bytes(content)
        return f"sha256:{digest}", len(content)

    layers = []
    if with_model_layer:
        digest, size = blob(src=gguf_path)
        layers.append({"mediaType": "application/vnd.ollama.image.model", "digest": digest, "size": size})
    for media, text in (extra_layers or {"application/vnd.ollama.image.template": "{{ .Prompt }}",
                                         "application/vnd.ollama.image.params": '{"stop": ["<|im_end|>"]}'}).items():
        digest, size = blob(text.encode())
        layers.append({"mediaType": media, "digest": digest, "size": size})
    cfg_digest, cfg_size = blob(json.dumps({"model_format": "gguf", "model_family": "llama"}).encode())
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                           "digest": cfg_digest, "size": cfg_size},
                "layers": layers}
    path = store / "manifests" / host / namespace / name / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return path


def add_to_hf_cache(cache: Path, repo_id: str, folder: Path, commit: str = "0" * 40) -> Path:
    """Place `folder` in a Hugging Face hub cache as a download would: blobs, snapshot links, refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for f in sorted(folder.iterdir()):
        if f.is_file():
            data = f.read_bytes()
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            (snapshot / f.name).symlink_to(Path("../../blobs") / blob.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def logits(model_dir: Path, text: str = PROMPT):
    """(input ids, logits) of an HF folder's model on `text` (fp32, eval mode)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return ids, model(ids).logits


@pytest.fixture(scope="session")
def bm():
    """The helpers above, for test modules (conftest modules are not imported by name)."""
    from types import SimpleNamespace

    return SimpleNamespace(add_to_ollama_store=add_to_ollama_store, add_to_hf_cache=add_to_hf_cache,
                           logits=logits, build_tokenizer=build_tokenizer, PROMPT=PROMPT,
                           build_sentencepiece_style_tokenizer=build_sentencepiece_style_tokenizer)


@pytest.fixture
def ollama_store(tmp_path, monkeypatch) -> Path:
    """An empty Ollama store, also set as $OLLAMA_MODELS (as a user with a custom store would)."""
    store = tmp_path / "ollama-models"
    (store / "manifests").mkdir(parents=True)
    (store / "blobs").mkdir()
    monkeypatch.setenv("OLLAMA_MODELS", str(store))
    return store
