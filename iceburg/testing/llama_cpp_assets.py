"""llama.cpp's own tokenizer test assets and real chat templates, fetched once from PyPI.

llama-cpp-python's source distribution vendors llama.cpp's `models/` folder: vocab-only GGUFs
(`ggml-vocab-<name>.gguf`: the real tokenizers of Llama 3, Qwen2, Phi-3, Gemma, ...) with
tokenization test vectors (`.gguf.inp` texts, `.gguf.out` expected ids) and `models/templates/`
with the real chat templates of the instruct models people fine-tune. `ensure_llama_cpp_assets()`
downloads the sdist with pip (the version the Makefile builds), extracts only those files into
`$ICEBURG_CACHE/llama-cpp-assets/<version>/` and returns that folder; later calls return at once.
Nothing of it is committed (the vocabularies are ~40 MB).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from ..errors import IceburgError

logger = logging.getLogger(__name__)

LLAMA_CPP_PYTHON_VERSION = "0.3.36"  # the version the Makefile's `llama` extra builds
_MEMBER = re.compile(r"^[^/]+/vendor/llama\.cpp/models/(ggml-vocab-[\w.-]+\.gguf(\.inp|\.out)?|templates/[^/]+\.jinja)$")
_DONE = ".complete"


def cache_root() -> Path:
    return Path(os.environ.get("ICEBURG_CACHE", Path.home() / ".cache" / "iceburg"))


def assets_dir(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    return cache_root() / "llama-cpp-assets" / version


def ensure_llama_cpp_assets(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    """Folder with `vocab/ggml-vocab-*.gguf{,.inp,.out}` and `templates/*.jinja` (cached)."""
    final = assets_dir(version)
    if (final / _DONE).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    # one builder at a time (parallel test workers share the cache); the others wait and reuse it
    with FileLock(str(final.parent / f".{final.name}.lock")):
        if (final / _DONE).is_file():
            return final
        return _extract_assets(final, version)


def _extract_assets(final: Path, version: str) -> Path:
    with tempfile.TemporaryDirectory(dir=final.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q",
               "-d", tmp, f"llama-cpp-python=={version}"]
        logger.info("fetching llama.cpp test assets: %s", " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        sdists = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if proc.returncode != 0 or not sdists:
            raise IceburgError(f"could not download llama-cpp-python=={version}'s source distribution "
                               f"(pip exit {proc.returncode}): {proc.stderr.strip()[-500:]}; run the command "
                               f"by hand: {' '.join(cmd)}")
        staged = Path(tmp) / "assets"
        with tarfile.open(sdists[0]) as tar:
            for member in tar:
                m = _MEMBER.match(member.name)
                if not m or not member.isfile():
                    continue
                rel = m.group(1)
                dest = staged / ("templates" if rel.startswith("templates/") else "vocab") / Path(rel).name
                dest.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(dest, "wb") as out:  # type: ignore[union-attr]
                    shutil.copyfileobj(src, out)
        if not any((staged / "vocab").glob("*.gguf")):
            raise IceburgError(f"{sdists[0].name} holds no vendor/llama.cpp/models/ggml-vocab-*.gguf files")
        (staged / _DONE).write_text(version)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staged, final)
    return final


def vocab_path(name: str) -> Path:
    """`ggml-vocab-<name>.gguf` (e.g. "llama-bpe", "qwen2", "phi-3")."""
    path = ensure_llama_cpp_assets() / "vocab" / f"ggml-vocab-{name}.gguf"
    if not path.is_file():
        raise IceburgError(f"llama.cpp ships no vocabulary {name!r}; have: "
                           + ", ".join(sorted(p.name[11:-5] for p in path.parent.glob("*.gguf"))))
    return path


def template_path(name: str) -> Path:
    """`templates/<name>.jinja` (e.g. "meta-llama-Llama-3.2-3B-Instruct")."""
    path = ensure_llama_cpp_assets() / "templates" / f"{name}.jinja"
    if not path.is_file():
        raise IceburgError(f"llama.cpp ships no chat template {name!r} in {path.parent}")
    return path


def read_vectors(vocab: Path) -> list[tuple[str, list[int]]]:
    """The (text, expected ids) pairs of `<vocab>.inp` / `<vocab>.out`.

    Format (llama.cpp tests/test-tokenizer-0.cpp): texts separated by a line
    "\\n__ggml_vocab_test__\\n"; `.out` holds one line of space-separated ids per text.
    """
    sep = "\n__ggml_vocab_test__\n"
    texts = Path(f"{vocab}.inp").read_text(encoding="utf-8").split(sep)
    if texts and texts[-1] == "":
        texts = texts[:-1]
    outs = Path(f"{vocab}.out").read_text(encoding="utf-8").split("\n")
    if len(outs) > len(texts) and outs[-1] == "":
        outs = outs[:-1]
    if len(outs) != len(texts):
        raise IceburgError(f"{vocab}.inp has {len(texts)} texts but .out {len(outs)} lines")
    return [(t, [int(x) for x in o.split()]) for t, o in zip(texts, outs)]
