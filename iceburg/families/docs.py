"""docs/families.md tables generated from the registry (tests/families/test_registry.py checks
that the committed doc equals `render_doc`): edit a record, then run
`python -m iceburg.families.docs docs/families.md` to rewrite the generated block."""

from __future__ import annotations

import sys
from pathlib import Path

from .registry import Family, GgufSpec, all_families, ollama_repo

BEGIN = "<!-- families:generated begin (python -m iceburg.families.docs docs/families.md) -->"
END = "<!-- families:generated end -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def fixture_row(family: Family) -> str:
    """One row of the fixtures table: features, vocabulary, template, Ollama tag -> HF repo."""
    doc = family.doc
    assert doc is not None, family.name
    repo = ollama_repo(family.ollama_tag) if family.ollama_tag else None
    ollama = f"{family.ollama_tag} -> {repo}" if repo else (family.ollama_tag or "-")
    ollama += f" {doc.ollama_note}" if doc.ollama_note else ""
    return "| " + " | ".join(_cell(c) for c in (family.name, doc.features, doc.vocabulary, doc.template, ollama)) + " |"


def fixtures_table(families: list[Family] | None = None) -> str:
    rows = [f for f in (families or all_families()) if f.fixture is not None and f.doc is not None]
    head = ("| family | architecture features (random weights) | vocabulary (llama.cpp asset) | template | "
            "Ollama tag -> HF repo |\n|---|---|---|---|---|")
    return "\n".join([head, *(fixture_row(f) for f in rows)])


def _gguf_text(spec: GgufSpec | None, llama_cpp_arch: str = "") -> str:
    if spec is None:
        return f"llama.cpp's converter ({llama_cpp_arch})" if llama_cpp_arch else "not written (refused by name)"
    parts = [spec.arch]
    parts += ["q/k permuted"] if spec.permute_qk else []
    parts += ["(1+w) norms"] if spec.norm_plus_one else []
    parts += [f"RoPE {'/'.join(spec.rope_types)}"] if spec.rope_types != ("default",) else []
    parts += ["sliding window"] if spec.sliding_window else []
    parts += [f"`{spec.hparams.__name__}`"] if spec.hparams else []
    return ", ".join(parts)


def registry_row(family: Family) -> str:
    archs = "; ".join(f"{a.model_type}: {_gguf_text(a.gguf, a.llama_cpp_arch)}" for a in family.archs)
    apart = "yes" if all(a.head_apart for a in family.archs) else "no"
    chat = family.chat_template or "none"
    tools = family.tool_template or "-"
    think = " ".join(f"`{m}`" for m in family.reasoning) if family.reasoning else "-"
    names = ", ".join(f"{n} ({', '.join(s for s in sizes if s != 'default')})" for n, sizes in family.ollama.items())
    fixture = "real weights" if family.fixture and family.fixture.real else ("random" if family.fixture else "-")
    cells = (family.name, archs, apart, chat, tools, think, names or "-", fixture)
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def registry_table(families: list[Family] | None = None) -> str:
    head = ("| family | HF model_type: GGUF (llama.cpp arch, special cases) | head apart | chat template | "
            "tool template | reasoning markers | Ollama names (sizes) | fixture |\n|---|---|---|---|---|---|---|---|")
    return "\n".join([head, *(registry_row(f) for f in (families or all_families()))])


def generated_block() -> str:
    return "\n\n".join([BEGIN, fixtures_table(), "Every registered family (`iceburg/families/`):", registry_table(), END])


def render_doc(text: str) -> str:
    """`text` (docs/families.md) with its generated block replaced by the registry's current one."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"docs/families.md has no generated block ({BEGIN!r} ... {END!r})")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    return head + generated_block() + tail


def main(argv: list[str]) -> int:
    path = Path(argv[0] if argv else "docs/families.md")
    text = path.read_text(encoding="utf-8")
    new = render_doc(text)
    if new != text:
        path.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
