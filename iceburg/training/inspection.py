"""`iceburg inspect`: each record as the model sees it, the supervised tokens marked, and why a
record would be dropped.

For every record of the data files: the text the base's chat template renders (with the record's
tools, the Hermes tool template on ChatML bases as training installs it, `tool_render.tool_policy`),
split into runs of supervised and unsupervised tokens exactly as `encoding.encode_all` masks them
(the same `--train-on`, `--reasoning`, `--supervise-tool-calls`, `--max-seq-length` choices), the
token counts, and the reasons training would drop it, with their codes (docs/data.md): load
rejects (with the line), the truth filter's verdict on the record alone (`TruthFilter.assess`;
near-duplicate detection needs the whole set and is not run here), and the encode-stage refusals
(too_long, no_tool_format, template_refused, no_target_turn). Nothing is trained or written but
the optional HTML page.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..records import Record, Reject, RejectWriter


@dataclass
class Drop:
    stage: str  # load, truth, encode
    code: str  # a key of records.REJECT_CODES
    message: str


@dataclass
class Inspected:
    """One record (or one unreadable line) as training would see it."""

    source: str
    line: int
    examples: list[list[tuple[str, bool]]] = field(default_factory=list)  # per example: (text, supervised) runs
    tokens: int = 0
    supervised: int = 0
    drops: list[Drop] = field(default_factory=list)

    @property
    def kept(self) -> bool:
        return not self.drops


class _Collect(RejectWriter):
    """A RejectWriter that keeps the rejects in memory (no file)."""

    def __init__(self) -> None:
        super().__init__(None)
        self.items: list[Reject] = []

    def write(self, reject: Reject) -> None:
        super().write(reject)
        self.items.append(reject)

    def take(self) -> list[Drop]:
        out = [Drop(r.stage, c, m) for r in self.items for c, m in zip(r.codes or ["unspecified"], r.reasons)]
        self.items = []
        return out


def runs(tokenizer, ids: list[int], mask: list[int]) -> list[tuple[str, bool]]:
    """`ids` decoded in maximal runs of equal mask value: [(text, supervised), ...]."""
    out: list[tuple[str, bool]] = []
    start = 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or bool(mask[i]) != bool(mask[start]):
            out.append((tokenizer.decode(ids[start:i]), bool(mask[start])))
            start = i
    return out


def inspect_records(tokenizer, paths: Iterable[str | Path], *, agent_type: str | None = None,
                    max_length: int = 2048, eos: set[int] | None = None, truth=None,
                    **encode_options: Any) -> list[Inspected]:
    """Every record of `paths` (and every line that does not load) as an `Inspected`.

    `tokenizer`: the base's (its template may be switched to the Hermes tool template, as
    training does). `truth`: a `TruthFilter` (default: `TruthFilter()`, the run's defaults).
    `encode_options`: `encode_all`'s (train_on, reasoning, supervise_tool_calls,
    split_parallel_calls, overflow)."""
    from ..data.loader import read_records
    from ..truth.from_config import truth_filter_from
    from .encoding import encode_all, eos_ids
    from .tool_render import tool_policy

    collect = _Collect()
    out: list[Inspected] = []
    records = list(read_records(paths, collect))
    out += [Inspected(r.source, r.line, drops=[Drop(r.stage, c, m) for c, m in zip(r.codes, r.reasons)])
            for r in collect.items]
    collect.items = []
    truth = truth or truth_filter_from({})  # the one factory; {} = TruthFilter's own defaults
    eos = eos if eos is not None else eos_ids(tokenizer)
    _, skip = tool_policy(tokenizer, records)
    for record in records:
        item = Inspected(record.source, record.line)
        item.drops += [Drop("truth", r.code, r.message) for r in truth.assess(record, agent_type).reasons]
        enc = encode_all(tokenizer, [record], max_length, eos, collect, skip=skip, **encode_options)
        item.drops += collect.take()
        for ex in enc.examples:
            item.examples.append(runs(tokenizer, list(ex.input_ids), list(ex.mask)))
            item.tokens += len(ex.input_ids)
            item.supervised += sum(1 for m in ex.mask if m)
        out.append(item)
    return sorted(out, key=lambda i: (i.source, i.line))


def inspect_base(base_model: str, paths: Iterable[str | Path], *, min_quality_score: float | None = None,
                 **options: Any) -> list[Inspected]:
    """`inspect_records` with the tokenizer of `base_model` (any spec `--base-model` takes), loaded
    as training loads it (a ChatML template added when it has none; EOS ids from its generation
    config). `min_quality_score`: the truth filter's threshold (None: the run default)."""
    from types import SimpleNamespace

    from ..base_models.resolve import resolve_base_model
    from ..truth.from_config import truth_filter_from
    from .run_parts import run_tokenizer

    path = resolve_base_model(base_model).path
    tokenizer, eos, _ = run_tokenizer(path, SimpleNamespace(trust_remote_code=False))
    truth = truth_filter_from({"min_quality_score": min_quality_score})
    return inspect_records(tokenizer, paths, eos=eos, truth=truth, **options)


def write_html(path: str | Path, items: list[Inspected], title: str) -> Path:
    """`html_page` written atomically (temp file + rename)."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(html_page(items, title), encoding="utf-8")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------- views


def summary_line(item: Inspected) -> str:
    verdict = "kept" if item.kept else "dropped: " + ", ".join(f"{d.stage}:{d.code}" for d in item.drops)
    return (f"{item.source}:{item.line}  {len(item.examples)} example(s), {item.tokens} tokens, "
            f"{item.supervised} supervised  [{verdict}]")


def print_terminal(items: list[Inspected], console=None) -> None:
    """The records with rich: supervised tokens in green on a dark background, the rest dim."""
    from rich.console import Console
    from rich.text import Text

    console = console or Console()
    for item in items:
        console.rule(style="red" if item.drops else "green")
        console.print(Text(summary_line(item), style="bold"))
        for d in item.drops:
            console.print(Text(f"  {d.stage}:{d.code}  {d.message}", style="bold red"))
        for ex in item.examples:
            text = Text()
            for chunk, sup in ex:
                text.append(chunk, style="bold green on grey15" if sup else "dim")
            console.print(text)
    kept = sum(i.kept for i in items)
    console.print(Text(f"{len(items)} records: {kept} kept, {len(items) - kept} would be dropped; "
                       f"{sum(i.supervised for i in items)} supervised of {sum(i.tokens for i in items)} tokens"))


_CSS = ("body{font-family:sans-serif;margin:2em}pre{white-space:pre-wrap;background:#f6f6f6;padding:.6em}"
        ".s{background:#c8f7c5;color:#064}.u{color:#777}.drop{color:#b00}h2{font-size:1em}")


def html_page(items: list[Inspected], title: str = "iceburg inspect") -> str:
    """A self-contained HTML page (inline CSS, no scripts): supervised tokens highlighted green."""
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{esc(title)}</h1>"
             "<p><span class='s'>supervised</span> tokens are trained on; <span class='u'>grey</span> is context.</p>"]
    for item in items:
        parts.append(f"<h2>{esc(summary_line(item))}</h2>")
        parts += [f"<p class='drop'>{esc(d.stage)}:{esc(d.code)} {esc(d.message)}</p>" for d in item.drops]
        for ex in item.examples:
            body = "".join(f"<span class='{'s' if sup else 'u'}'>{esc(chunk)}</span>" for chunk, sup in ex)
            parts.append(f"<pre>{body}</pre>")
    return "".join(parts) + "</body></html>"
