"""The tokenizer half of a GGUF file, read from a Hugging Face `tokenizer.json`.

Two tokenizer families are written, the two llama.cpp implements for the bases iceburg supports:

- byte-level BPE (GPT-2, Llama 3, Qwen2, iceburg-tiny): `tokenizer.ggml.model = "gpt2"` plus the
  pre-tokenizer name llama.cpp uses to pick its split regex (`tokenizer.ggml.pre`). The name is
  found by comparing the regex in `tokenizer.json` with the ones llama.cpp hard-codes
  (src/llama-vocab.cpp); llama.cpp's own converter hashes a probe tokenization instead
  (convert_hf_to_gguf.py `get_vocab_base_pre`), which only knows downloaded hub tokenizers.
  An unknown regex is an error, never a silent "default": a wrong split gives wrong token ids.
- SentencePiece-style BPE with byte fallback (Llama 2, Mistral, TinyLlama as saved by
  transformers): `tokenizer.ggml.model = "llama"` with scores. llama.cpp's SPM tokenizer merges
  the adjacent pair whose merged token has the highest score, so a token made by BPE merge `r`
  gets score `-r`; that reproduces BPE's lowest-rank-first order (checked by the tokenization
  proof in gguf_verify.py).

Token types follow convert_hf_to_gguf.py: added tokens that are special (or look like `<|...|>`)
are CONTROL, other added tokens USER_DEFINED, ids missing from the tokenizer `[PAD{i}]` UNUSED.
The tokenizer is read as transformers loads it (`AutoTokenizer(...).backend_tokenizer`), not
from the raw file: transformers 5 picks the class by `model_type` and may rebuild the pipeline
(found by the tokenization proof: a byte-level tokenizer with the GPT-2 regex inside a qwen2
folder runs with Qwen2's regex). Special ids, add_bos/add_eos, merges and the chat template
come from gguf's `SpecialVocab`;
`add_bos_token` is then set from what the HF tokenizer actually does, so both runtimes agree.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import re
from pathlib import Path
from typing import Any

import gguf

from ..errors import ExportError

logger = logging.getLogger(__name__)

# Split regexes as written in tokenizer.json by the tokenizers library, and the llama.cpp
# pre-tokenizer whose hard-coded regexes are identical (llama-vocab.cpp, LLAMA_VOCAB_PRE_TYPE_*).
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
KNOWN_SPLIT_REGEXES: dict[str, str] = {
    # Llama 3 / 3.1 / 3.2 (tiktoken cl100k-style, digits in groups of up to 3)
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",
    # Qwen2 / Qwen2.5 / Qwen3 (single digits)
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
    # GPT-2 written out as an explicit Split (ByteLevel(use_regex=False) after it)
    GPT2_REGEX: "gpt-2",
}
SUPPORTED_PRE = ("gpt-2 (ByteLevel regex)", "llama-bpe (Llama 3 regex)", "qwen2 (Qwen2 regex)")
_LOOKS_SPECIAL = re.compile(r"^(<\|.*\|>|<｜.*｜>|<pad>|<mask>|<unk>|<s>|</s>)$")


def _load_tokenizer_json(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise ExportError(f"gguf: {path} is missing; iceburg writes GGUF tokenizers from a Hugging Face fast "
                          "tokenizer (tokenizer.json). Save the tokenizer with tokenizer.save_pretrained(<dir>) first")
    return json.loads(path.read_text(encoding="utf-8"))


def tokenizer_kind(tok_json: dict[str, Any]) -> str:
    """"gpt2" (byte-level BPE) or "llama" (SentencePiece-style BPE with byte fallback)."""
    model = tok_json.get("model", {})
    decoder = tok_json.get("decoder") or {}
    if model.get("type") == "BPE" and not model.get("byte_fallback") and decoder.get("type") == "ByteLevel":
        return "gpt2"
    if model.get("type") == "BPE" and model.get("byte_fallback"):
        return "llama"
    raise ExportError(f"gguf: unsupported tokenizer (model {model.get('type')!r}, byte_fallback="
                      f"{model.get('byte_fallback')}, decoder {decoder.get('type')!r}); supported: byte-level BPE "
                      "(GPT-2/Llama 3/Qwen2 style) and SentencePiece-style BPE with byte fallback (Llama 2/Mistral)")


def detect_pre_tokenizer(tok_json: dict[str, Any]) -> str:
    """The llama.cpp `tokenizer.ggml.pre` name for a byte-level BPE tokenizer.json."""
    pre = tok_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    regexes: list[str] = []
    for step in steps:
        if step.get("type") == "Split":
            regexes.append(step.get("pattern", {}).get("Regex") or re.escape(step.get("pattern", {}).get("String", "")))
        elif step.get("type") == "ByteLevel":
            if step.get("add_prefix_space"):
                raise ExportError("gguf: byte-level pre-tokenizer with add_prefix_space=True is not supported by "
                                  "llama.cpp's BPE tokenizer; save the tokenizer with add_prefix_space=False")
            if step.get("use_regex", True):
                regexes.append(GPT2_REGEX)
        elif step.get("type") != "Digits" or regexes:
            raise ExportError(f"gguf: unsupported pre-tokenizer step {step.get('type')!r} in tokenizer.json; "
                              f"supported: {', '.join(SUPPORTED_PRE)}")
    if len(regexes) == 1 and regexes[0] in KNOWN_SPLIT_REGEXES:
        return KNOWN_SPLIT_REGEXES[regexes[0]]
    raise ExportError(f"gguf: tokenizer.json splits text with {regexes or 'no regex'}, which matches no llama.cpp "
                      f"pre-tokenizer iceburg knows; supported: {', '.join(SUPPORTED_PRE)}")


def _merge_ranks(tok_json: dict[str, Any]) -> dict[str, int]:
    ranks: dict[str, int] = {}
    for rank, merge in enumerate(tok_json["model"].get("merges", [])):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        ranks.setdefault(left + right, rank)
    return ranks


# What `add_tokenizer` computed per (folder, vocabulary size, tokenizer files' size and mtime):
# an export writes one GGUF per quantization and each would read and convert the same tokenizer
# again (about 4 s for Llama 3's 128,256 tokens on this 2-core machine; measured).
def _cache_key(model_dir: Path, n_vocab: int) -> tuple:
    files = []
    for f in sorted(Path(model_dir).iterdir()):
        if f.is_file() and (f.name.startswith(("tokenizer", "special_tokens", "added_tokens", "chat_template"))
                            or f.name in ("config.json", "generation_config.json")):
            st = f.stat()
            files.append((f.name, st.st_size, st.st_mtime_ns))
    return str(Path(model_dir).resolve()), n_vocab, tuple(files)


@functools.lru_cache(maxsize=4)
def _cached_metadata(key: tuple) -> tuple[dict[str, Any], dict[str, Any]]:
    return _tokenizer_metadata(Path(key[0]), key[1])


def add_tokenizer(writer: gguf.GGUFWriter, model_dir: Path, n_vocab: int) -> dict[str, Any]:
    """Write tokens, types, merges/scores, special ids and chat template; return a summary."""
    meta, summary = _cached_metadata(_cache_key(model_dir, n_vocab))
    writer.add_tokenizer_model(meta["kind"])
    if meta["kind"] == "gpt2":
        writer.add_tokenizer_pre(summary["pre"])
    else:
        writer.add_tokenizer_pre("default")
        writer.add_token_scores(meta["scores"])
        writer.add_add_space_prefix(meta["space_prefix"])
    writer.add_token_list(meta["tokens"])
    writer.add_token_types(meta["types"])
    meta["special"].add_to_gguf(writer, quiet=True)
    return copy.deepcopy(summary)


def _tokenizer_metadata(model_dir: Path, n_vocab: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tokenizer's GGUF metadata (tokens, types, scores, SpecialVocab) and its summary."""
    from transformers import AutoTokenizer

    _load_tokenizer_json(model_dir)  # a clear error when there is no fast tokenizer
    hf = AutoTokenizer.from_pretrained(model_dir)
    # The pipeline transformers really runs, not the file: transformers 5 rebuilds some tokenizers
    # from vocab + merges by model_type (a qwen2 folder gets Qwen2Tokenizer's split regex whatever
    # tokenizer.json says), and the GGUF must tokenize like the model was trained.
    tok_json = json.loads(hf.backend_tokenizer.to_str())
    kind = tokenizer_kind(tok_json)
    vocab = hf.get_vocab()
    if len(vocab) > n_vocab:
        raise ExportError(f"gguf: the tokenizer in {model_dir} has {len(vocab)} tokens but the model's embedding has "
                          f"only {n_vocab} rows (config.json vocab_size); resize the embeddings before exporting")
    reverse = {i: t for t, i in vocab.items()}
    added = hf.added_tokens_decoder  # id -> AddedToken
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n_vocab):
        token = reverse.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added and (added[i].special or _LOOKS_SPECIAL.match(token)):
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL)
        elif i in added:
            tokens.append(token)
            types.append(gguf.TokenType.USER_DEFINED)
        elif kind == "llama" and re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", token):
            tokens.append(token)
            types.append(gguf.TokenType.BYTE)
        elif kind == "llama" and token == tok_json["model"].get("unk_token"):
            tokens.append(token)
            types.append(gguf.TokenType.UNKNOWN)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)

    meta: dict[str, Any] = {"kind": kind, "tokens": tokens, "types": types}
    summary: dict[str, Any] = {"model": kind, "n_tokens": len(tokens), "n_unused": types.count(gguf.TokenType.UNUSED)}
    if kind == "gpt2":
        summary["pre"] = detect_pre_tokenizer(tok_json)
    else:
        ranks = _merge_ranks(tok_json)
        worst = -float(len(ranks) + 1)
        meta["scores"] = [-float(ranks[t]) if t in ranks else (0.0 if len(t) == 1 else worst) for t in tokens]
        meta["space_prefix"] = _adds_space_prefix(tok_json)

    special = gguf.SpecialVocab(model_dir, load_merges=False, n_vocab=n_vocab)
    if kind == "gpt2":  # merges of the loaded pipeline, in SpecialVocab's "a b" form (spaces as U+0120)
        special.merges = [m if isinstance(m, str) else " ".join(p.replace(" ", "\u0120") for p in m)
                          for m in tok_json["model"].get("merges", [])]
    # What the HF tokenizer really does when asked for special tokens decides add_bos/add_eos.
    probe = hf("a", add_special_tokens=True)["input_ids"]
    bare = hf("a", add_special_tokens=False)["input_ids"]
    special.add_special_token["bos"] = hf.bos_token_id is not None and probe[:1] == [hf.bos_token_id] != bare[:1]
    special.add_special_token["eos"] = hf.eos_token_id is not None and probe[-1:] == [hf.eos_token_id] != bare[-1:]
    if special.chat_template is None and getattr(hf, "chat_template", None):
        special.chat_template = hf.chat_template
    meta["special"] = special
    summary.update(special_ids=dict(special.special_token_ids), add_bos=special.add_special_token["bos"],
                   add_eos=special.add_special_token["eos"], merges=len(special.merges),
                   chat_template=special.chat_template is not None)
    return meta, summary


def _adds_space_prefix(tok_json: dict[str, Any]) -> bool:
    """SentencePiece-style tokenizers prepend "▁" either in the normalizer or the Metaspace step."""
    text = json.dumps(tok_json.get("normalizer")) + json.dumps(tok_json.get("pre_tokenizer"))
    return '"Prepend"' in text or '"prepend_scheme": "always"' in text or '"add_prefix_space": true' in text
