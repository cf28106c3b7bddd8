"""Turn a GGUF file into a plain Hugging Face folder that the rest of iceburg trains like any base.

transformers reads GGUF (`from_pretrained(dir, gguf_file=name)`, needs `accelerate` and `gguf`):
config, tokenizer and chat template come from the file's metadata and every tensor is dequantized.
We do that once per file and save the result as safetensors in the iceburg cache, under the file's
sha256, so a second run (or a second process) reuses it. The folder appears in one `os.replace`,
so a crash never leaves a half-written base behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MissingDependencyError
from .errors import BaseModelError, CorruptGGUFError, MissingTokenizerError, UnsupportedArchitectureError

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
# llama.cpp's architecture names that transformers spells differently (transformers'
# modeling_gguf_pytorch_utils.load_gguf_checkpoint applies the same renames).
_ARCH_RENAMES = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss",
                 "minimax-m2": "minimax_m2", "t5encoder": "t5"}


@dataclass
class GgufInfo:
    path: Path
    architecture: str  # general.architecture as llama.cpp writes it
    name: str | None
    tensor_types: list[str]  # distinct ggml types of the tensors, e.g. ["F32", "Q8_0"]
    n_tokens: int  # entries in tokenizer.ggml.tokens (0: no tokenizer in the file)
    n_elements: int  # weights in all tensors (sizes the converted folder)
    has_chat_template: bool
    size: int

    @property
    def has_tokenizer(self) -> bool:
        return self.n_tokens > 0


def supported_gguf_architectures() -> set[str]:
    """Architectures the installed transformers can load from GGUF (both of its loaders)."""
    from transformers.integrations.gguf import GGUF_ARCHS  # the newer loader (qwen35, lfm2, ...)
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES  # the legacy one

    return (set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"}) | set(GGUF_ARCHS)


def read_gguf_info(path: Path) -> GgufInfo:
    """Parse the header and check the file is whole and of an architecture transformers loads.

    Uses transformers' own GGUF reader, which skips over string arrays without decoding them:
    0.04 s against 6.8 s for `gguf.GGUFReader` on a file with a 152k-token vocabulary (measured
    here on a Qwen2.5-0.5B-shaped Q8_0 file); the vocabulary is decoded later, once, by the load.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise CorruptGGUFError(f"{path}: not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r}; "
                               f"{size} bytes). Pass a .gguf model file, e.g. one written by llama.cpp, "
                               "iceburg's GGUF export or Ollama.")
    try:
        import gguf
        from transformers.integrations.gguf.reader import GgufHeader, read_gguf_metadata
    except ImportError as exc:
        raise MissingDependencyError("the gguf package (to read GGUF files)", "pip install gguf") from exc
    try:
        metadata, _ = read_gguf_metadata(str(path))
        header = GgufHeader.from_file(str(path))
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise CorruptGGUFError(f"{path}: the GGUF header ends early ({exc}); the file ({size} bytes) is "
                               "truncated or corrupt. Download or export it again (for Ollama: "
                               "`ollama pull <model>`).") from exc
    except ValueError as exc:  # unknown version, tensor type or metadata type
        raise CorruptGGUFError(f"{path}: this GGUF cannot be read: {exc}") from exc
    end = max((header.data_start + t.offset + t.nbytes for t in header.tensors), default=0)
    if end > size or not header.tensors:
        raise CorruptGGUFError(f"{path}: truncated GGUF: its tensors need {end} bytes, the file has "
                               f"{size}{' and no tensors' if not header.tensors else ''}. Download or "
                               "export it again.")
    arch = str(metadata.get("general.architecture"))
    supported = supported_gguf_architectures()
    if arch not in supported and _ARCH_RENAMES.get(arch) not in supported:
        raise UnsupportedArchitectureError(
            f"{path}: GGUF architecture {arch!r} cannot be loaded by the installed transformers "
            f"(it loads: {', '.join(sorted(supported))}). Use a model of a supported architecture, or "
            "its Hugging Face safetensors release.")
    tokens = metadata.get("tokenizer.ggml.tokens", 0)  # the reader gives string arrays as their length
    return GgufInfo(
        path=path, architecture=arch, name=metadata.get("general.name"),
        tensor_types=sorted({gguf.GGMLQuantizationType(t.ggml_type).name for t in header.tensors}),
        n_elements=sum(math.prod(t.shape) for t in header.tensors),
        n_tokens=tokens if isinstance(tokens, int) else len(tokens),
        has_chat_template="tokenizer.chat_template" in metadata, size=size)


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def storage_dtype(tensor_types: list[str]) -> str:
    """dtype to keep the dequantized weights in: exact for F32/F16/BF16 files.

    Quantized blocks are fp16 scales times small integers; fp16 keeps them to 2^-11 relative
    error, far below the quantization step itself (Q8_0: 1/127 of the block maximum), and halves
    the disk and memory of fp32. A non-finite value after the cast is checked for in `convert_gguf`.
    """
    weights = set(tensor_types) - {"F32"}  # 1-D norms stay F32 in every file type
    if not weights:
        return "float32"
    if weights == {"BF16"}:
        return "bfloat16"
    return "float16"


def convert_gguf(info: GgufInfo, sha256: str, cache_root: Path, *, trust_remote_code: bool = False) -> Path:
    """Return the cached HF folder for this GGUF, converting it (once, atomically) when needed."""
    final = Path(cache_root) / "gguf" / sha256
    if (final / "config.json").is_file():
        logger.info("GGUF %s already converted: %s", info.path, final)
        return final
    if not info.has_tokenizer:
        raise MissingTokenizerError(
            f"{info.path}: the GGUF has no tokenizer (no tokenizer.ggml.tokens). Use a GGUF that "
            "embeds its tokenizer (llama.cpp's converter, iceburg's GGUF export and Ollama models do).")
    final.parent.mkdir(parents=True, exist_ok=True)
    dtype = storage_dtype(info.tensor_types)
    needed = info.n_elements * (4 if dtype == "float32" else 2)
    free = shutil.disk_usage(final.parent).free
    if free < needed * 1.1:  # 10% headroom for the tokenizer and filesystem overhead
        raise BaseModelError(f"{info.path}: converting it needs about {needed / 2**30:.2f} GiB ({dtype} "
                             f"safetensors) in {final.parent}, only {free / 2**30:.2f} GiB free; free some "
                             "space or point ICEBURG_CACHE at a larger disk.")
    logger.info("converting GGUF %s (%s, %s) to safetensors (%s) in %s", info.path, info.architecture,
                "/".join(info.tensor_types), dtype, final)
    tmp = final.with_name(f".{sha256}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_dense_folder(info, tmp, dtype, trust_remote_code)
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / "config.json").is_file():  # not a concurrent conversion that finished first
                raise
    except NotImplementedError as exc:  # e.g. a name/architecture pair transformers' GGUF maps lack
        raise UnsupportedArchitectureError(f"{info.path}: transformers cannot load this GGUF "
                                           f"({info.architecture}, named {info.name!r}): {exc}") from exc
    except (ValueError, KeyError, IndexError) as exc:
        raise CorruptGGUFError(f"{info.path}: transformers could not load this GGUF "
                               f"({type(exc).__name__}: {exc}). Re-export or re-download it.") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _write_dense_folder(info: GgufInfo, out: Path, dtype: str, trust_remote_code: bool) -> None:
    """Load the GGUF with transformers (dequantized) and save model + tokenizer into `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    src_dir, name = str(info.path.parent), info.path.name

    def load(dtype: str) -> Any:
        # dequantize=True: plain dense weights, never the packed kernels fetched from the Hub.
        return AutoModelForCausalLM.from_pretrained(
            src_dir, gguf_file=name, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code,
            quantization_config=GgufConfig(dequantize=True))

    started = time.perf_counter()
    model = load(dtype)
    if dtype == "float16" and any(_has_fp16_overflow(p) for p in model.parameters()):
        logger.warning("GGUF %s overflows float16 once dequantized; loading it as bfloat16", info.path)
        del model  # free it before the second load
        model = load("bfloat16")
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name, trust_remote_code=trust_remote_code)
    logger.info("GGUF %s loaded and dequantized in %.1fs", info.path, time.perf_counter() - started)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _drop_foreign_tokens(out, info.n_tokens)


def _has_fp16_overflow(param: Any) -> bool:
    """Whether a float16 tensor holds inf/nan: exponent bits all set (2x faster than isfinite on CPU)."""
    import torch

    return bool(((param.detach().view(torch.int16) & 0x7C00) == 0x7C00).any())


def _drop_foreign_tokens(folder: Path, n_tokens: int) -> None:
    """Remove added tokens the GGUF does not have (ids >= its token count).

    transformers builds byte-level GGUF tokenizers on the GPT-2 tokenizer class, whose default
    `<|endoftext|>` gets appended when the vocabulary lacks it (measured on a Llama-3-style
    vocabulary: 400 tokens in the file, 401 after loading). Its id is outside the embedding
    matrix, so text containing it would crash training; the converted base keeps the file's tokens.
    """
    path = folder / "tokenizer.json"
    if not path.is_file():
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    added = data.get("added_tokens") or []
    foreign = [t["content"] for t in added if t.get("id", 0) >= n_tokens]
    if not foreign:
        return
    logger.info("dropping token(s) %s added by the GGUF tokenizer loader (not in the file)", foreign)
    data["added_tokens"] = [t for t in added if t.get("id", 0) < n_tokens]
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    config_path = folder / "tokenizer_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        for key in ("unk_token", "bos_token", "eos_token", "pad_token"):
            if config.get(key) in foreign:
                config[key] = None
        decoder = config.get("added_tokens_decoder")
        if isinstance(decoder, dict):
            config["added_tokens_decoder"] = {k: v for k, v in decoder.items() if int(k) < n_tokens}
        config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
