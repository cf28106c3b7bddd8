"""Ollama export: a Modelfile beside a GGUF file, with a TEMPLATE proven against the chat template.

Files (in `out_dir`, beside the GGUF exporter's `<name>-<type>.gguf`): `Modelfile`,
`README.ollama.md`, and with an adapter run `Modelfile.adapter` + `<name>-adapter/`.

- FROM: `./<name>-<type>.gguf` for the first of `ctx.quantization` (reused when the GGUF exporter
  already wrote it, else written with `iceburg.export.gguf.write_gguf`).
- TEMPLATE: the chat family identified from the model's own Jinja template (chat_templates.py),
  proven with Go's text/template when Go is installed and `ctx.verify`.
- PARAMETER stop: the family's turn markers and the tokenizer's EOS tokens; PARAMETER num_ctx:
  `ctx.max_seq_length`; SYSTEM: `ctx.system` (left out when the template rejects system messages).
- User text cannot break the file: every value is quoted in a form that Ollama's Modelfile parser
  reads back verbatim, checked by re-parsing the written file with `parse_modelfile` (a
  re-implementation of the rules of ollama/ollama `parser/parser.go`); text that no form can carry
  (multi-line text in which a line other than the last ends with `\"\"\"`) is refused with the reason.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path

from ..config import EMBEDDED_BASE
from ..errors import ExportError
from .base import PROVEN, ExportContext, ExporterSpec, ExportResult, atomic_path, not_verified
from .chat_templates import TemplateMatch, match_family, verify_template
from .think_switch import think_switch
from .tool_templates import model_tool_template

logger = logging.getLogger(__name__)

# What the proof applies, recorded in every report beside the measured figures.
LIMITS = {
    "template": {"limit": "Go text/template output equals apply_chat_template byte for byte on every probe chat",
                 "source": "Ollama renders TEMPLATE with Go's text/template (ollama/ollama template/); any byte "
                           "of difference changes what the model sees"},
    "modelfile": {"limit": "the written Modelfile parses back to the commands meant",
                  "source": "re-implementation of ollama/ollama parser/parser.go (parse_modelfile)"},
    "gguf": {"limit": "the GGUF file's own proof (gguf_verify.judge)", "source": "docs/export_gguf.md"},
}

# ---------------------------------------------------------------- Modelfile syntax


def _unquote(s: str) -> tuple[str, bool]:
    if s.startswith('"""'):
        return (s[3:-3], True) if len(s) >= 6 and s.endswith('"""') else ("", False)
    if s.startswith('"'):
        return (s[1:-1], True) if len(s) >= 2 and s.endswith('"') else ("", False)
    return s, True


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """Commands as Ollama's parser reads them: [(name, value)], FROM as "model", PARAMETER by name.

    Follows ollama/ollama parser/parser.go: a value ends at the first newline after which the
    stripped text so far is a complete (unquoted, "quoted" or \"\"\"quoted\"\"\") value; there are no
    escapes, and non-printable characters other than spaces and newlines are dropped.
    """
    cmds: list[tuple[str, str]] = []
    state, buf, name = "nil", "", ""
    for ch in text + "\n":
        space, newline = ch in " \t", ch in "\r\n"
        if state == "nil":
            nxt, keep = ("comment", "") if ch == "#" else ("nil", "") if space or newline else ("name", ch)
        elif state == "name":
            if ch.isascii() and ch.isalpha():
                nxt, keep = "name", ch
            elif space:
                nxt, keep = "value", ""
            else:
                raise ExportError(f"Modelfile: invalid command {buf + ch!r}")
        elif state == "value":
            nxt, keep = ("nil", ch) if space or newline else ("value", ch)
        elif state == "param":
            if ch.isascii() and (ch.isalnum() or ch == "_"):
                nxt, keep = "param", ch
            elif space:
                nxt, keep = "value", ""
            else:
                raise ExportError("Modelfile: unexpected end of parameter name")
        else:  # comment
            nxt, keep = ("nil", "") if newline else ("comment", "")
        if nxt != state:
            if state == "name":
                word = buf.lower()
                if word not in {"from", "license", "template", "system", "adapter", "parameter", "message"}:
                    raise ExportError(f"Modelfile: invalid command {buf!r}")
                name = "model" if word == "from" else word
                nxt = "param" if word == "parameter" else nxt
            elif state == "param":
                name = buf
            elif state == "value":
                value, ok = _unquote(buf.strip())
                if not ok or space:
                    buf += ch
                    continue
                cmds.append((name, value))
            buf, state = "", nxt
        if keep and (keep.isprintable()):
            buf += keep
    if state not in ("nil", "comment"):
        raise ExportError("Modelfile: unexpected end of file (unterminated quote?)")
    return cmds


def modelfile_value(value: str, what: str, prefer_plain: bool = False) -> str:
    """`value` in the first quoting form that Ollama's parser reads back unchanged."""
    forms = [f'"""{value}"""', f'"{value}"', value]
    for form in ([value] if prefer_plain else [f'"{value}"'] if "\n" not in value else []) + forms:
        try:
            if parse_modelfile(f"SYSTEM {form}") == [("system", value)]:
                return form
        except ExportError:
            continue
    bad = sorted({repr(c) for c in value if not (c.isprintable() or c in " \t\r\n")})
    why = f"it contains characters Ollama drops ({', '.join(bad)})" if bad else \
        'Ollama\'s Modelfile has no escape, and in this multi-line text a line other than the last ends with \'"""\''
    raise ExportError(f"ollama: the {what} cannot be written into a Modelfile unchanged: {why}; "
                      f"rephrase it (e.g. use ''' instead of \"\"\") or pass another --system-prompt")


def render_modelfile(commands: list[tuple[str, str]], header: str) -> str:
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for name, value in commands:
        if name == "model":
            lines.append(f"FROM {value}")
        elif name in ("template", "system", "adapter", "license"):
            lines.append(f"{name.upper()} {modelfile_value(value, name.upper())}")
        else:
            lines.append(f"PARAMETER {name} {modelfile_value(value, f'PARAMETER {name}', prefer_plain=value.isdigit())}")
    text = "\n".join(lines) + "\n"
    if parse_modelfile(text) != commands:  # the proof that nothing was altered or broken
        raise ExportError("ollama: the written Modelfile does not parse back to what was meant (a bug in iceburg)")
    return text


# ---------------------------------------------------------------- model facts


def _tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if not getattr(tok, "chat_template", None):
        raise ExportError(f"ollama: {model_dir} has no chat template (chat_template.jinja or tokenizer_config.json "
                          "'chat_template'); Ollama needs one to format chats")
    return tok


def _runtime_adds_bos(tok, gguf_path: Path | None) -> bool:
    """Whether llama.cpp will put BOS in front of the prompt (GGUF flag, else the HF tokenizer's habit)."""
    if gguf_path is not None and gguf_path.exists():
        # the header alone (transformers' reader): gguf's GGUFReader decodes the whole vocabulary
        # first, 1-11 s per file for a 32k-256k vocabulary vs 0.01-0.06 s here (same flag read)
        from transformers.integrations.gguf.reader import read_gguf_metadata

        flag = read_gguf_metadata(str(gguf_path))[0].get("tokenizer.ggml.add_bos_token")
        if flag is not None:
            return bool(flag)
    if tok.bos_token_id is None:
        return False
    return tok("a")["input_ids"][:1] == [tok.bos_token_id] != tok("a", add_special_tokens=False)["input_ids"][:1]


def _eos_tokens(tok, model_dir: Path) -> list[str]:
    ids: list[int] = [tok.eos_token_id] if tok.eos_token_id is not None else []
    gen = model_dir / "generation_config.json"
    if gen.exists():
        eos = json.loads(gen.read_text()).get("eos_token_id")
        ids += eos if isinstance(eos, list) else [eos] if eos is not None else []
    return [t for t in dict.fromkeys(tok.convert_ids_to_tokens(list(dict.fromkeys(ids)))) if t]


def template_vars(tok) -> dict:
    """Variables the chat template is rendered with, as training renders it: a template whose
    generation prompt opens the think block only with `enable_thinking=True` (llama.cpp's copy of the
    DeepSeek-R1-Distill-Qwen template appends `</think>` unless it is set) gets it, which gives
    DeepSeek's original prompt (training/reasoning.py, "forced"); every other template its defaults."""
    from jinja2.exceptions import TemplateError

    user = [{"role": "user", "content": "x"}]
    try:
        prompt = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    except TemplateError:
        return {}
    return {"enable_thinking": True} if prompt.endswith("<think>\n") else {}


def translate_chat_template(model_dir: Path, system: str, gguf_path: Path | None = None) -> TemplateMatch:
    """Identify the model's chat family and build its Ollama TEMPLATE and stop list."""
    tok = _tokenizer(model_dir)
    extra = template_vars(tok)

    def render(messages: list[dict]) -> str:
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **extra)

    match = match_family(render, {"bos": tok.bos_token, "eos": tok.eos_token}, system, _runtime_adds_bos(tok, gguf_path))
    match.stops = list(dict.fromkeys([*match.stops, *_eos_tokens(tok, model_dir)]))
    return match


# ---------------------------------------------------------------- export


def _gguf_file(model_dir: Path, out_dir: Path, ctx: ExportContext) -> tuple[Path, dict]:
    """The GGUF the Modelfile points at: reused only when it was written from this very model
    (its `iceburg.source_fingerprint` equals the folder's), else written and proven by the GGUF
    exporter, exactly as `--formats gguf` does (so `--formats ollama` alone proves it too)."""
    from . import gguf as gguf_export

    file_type = (ctx.quantization or ["q8_0"])[0]
    path = out_dir / f"{ctx.name}-{file_type}.gguf"
    replaced = path.exists()
    if replaced:
        theirs, ours = gguf_export.read_fingerprint(path), gguf_export.source_fingerprint(model_dir)
        if theirs == ours:
            # The file's proof is the GGUF export's (export_model copies it in when both ran); a file
            # written with verification off also has its final name, so reuse alone proves nothing.
            return path, {"reused": True, "fingerprint": ours,
                          "proof": "reused: written from this model (fingerprint matches); its proof is the GGUF "
                                   "export's, not repeated here"}
        logger.warning("ollama: %s was not written from %s (fingerprint %s, expected %s); writing it again",
                       path, model_dir, theirs, ours)
    single = dataclasses.replace(ctx, quantization=[file_type])
    result = gguf_export.export(model_dir, out_dir, single)
    entry = result.report["files"][path.name]
    return path, {"reused": False, "replaced_foreign_file": replaced,
                  "proof": entry["proof"], "verify": entry.get("verify")}


def _readme(ctx: ExportContext, out_dir: Path, gguf_name: str, match: TemplateMatch, check: dict, adapter: bool) -> str:
    name = ctx.name
    lines = [f"# {name} for Ollama", "", f"`Modelfile` points at `./{gguf_name}` (in this folder).", "",
             "```sh", f"cd {out_dir}", f"ollama create {name} -f Modelfile",
             f"ollama run {name}", "```", ""]
    if adapter:
        lines += ["Adapter-only variant (needs the base model in Ollama under the name in its FROM line):", "",
                  "```sh", f"ollama create {name}-adapter -f Modelfile.adapter", f"ollama run {name}-adapter", "```", ""]
    lines += [f"Chat template: `{match.family}` family; stop strings: {', '.join(f'`{s}`' for s in match.stops)}.",
              f"Template check: {check['status']}.", ""]
    if match.notes:
        lines += ["Notes:", *[f"- {n}" for n in match.notes], ""]
    return "\n".join(lines)


def export(model_dir: Path, out_dir: Path, ctx: ExportContext) -> ExportResult:
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The template first: a chat template no family matches stops the export before any file.
    file_type = (ctx.quantization or ["q8_0"])[0]
    match = translate_chat_template(model_dir, ctx.system, out_dir / f"{ctx.name}-{file_type}.gguf")
    gguf_path, gguf_report = _gguf_file(model_dir, out_dir, ctx)
    reused = gguf_report["reused"]
    if not reused:  # the new GGUF's add_bos_token flag decides whether the template writes BOS
        match = translate_chat_template(model_dir, ctx.system, gguf_path)
    if ctx.verify:
        check = verify_template(match.go_template, match.probes)
        if check.get("mismatches"):  # Go disagrees with the family's Python renderer: never ship that
            raise ExportError(f"ollama: {check['status']}; first difference: {check['mismatches'][0]}")
    else:
        check = {"verified": False, "status": "not verified: verification turned off", "cases": 0}

    # A tool-capable TEMPLATE (.Tools, tool calls, tool results) where the family has one, proven
    # with Go like the plain one (export/tool_templates.py); otherwise the report says why not.
    tok = _tokenizer(model_dir)
    tools = model_tool_template(tok, match, _runtime_adds_bos(tok, gguf_path), verify=ctx.verify,
                                template_vars=template_vars(tok))
    match.notes.append(f"tools: {tools['status']}")
    template = tools["go_template"] if tools["supported"] else match.go_template
    think = _think_template(tok, match, template, tools, _runtime_adds_bos(tok, gguf_path), ctx)
    match.notes.append(f"think: {think['status']}")
    params = [("stop", s) for s in match.stops] + [("num_ctx", str(int(ctx.max_seq_length)))]
    body = [("template", think["go_template"] if think["supported"] else template)]
    if match.system_supported and ctx.system:
        body.append(("system", ctx.system))
    header = (f"Modelfile for {ctx.name}, written by iceburg.\nChat template family: {match.family}. "
              f"Template check: {check['status']}.")
    files: list[Path] = []
    modelfile = out_dir / "Modelfile"
    text = render_modelfile([("model", f"./{gguf_path.name}"), *body, *params], header)
    with atomic_path(modelfile) as tmp:
        tmp.write_text(text, encoding="utf-8")
    files += [modelfile, gguf_path]

    report: dict = {"gguf": gguf_path.name, "gguf_reused": reused, "gguf_proof": gguf_report, "template": match.summary(),
                    "template_check": check, "num_ctx": int(ctx.max_seq_length),
                    "tools": {k: v for k, v in tools.items() if k != "go_template"},
                    "think": {k: v for k, v in think.items() if k != "go_template"},
                    "system": bool(match.system_supported and ctx.system), "limits": LIMITS,
                    "modelfile_roundtrip": "passed: parse_modelfile reads back every command unchanged"}
    adapter = ctx.adapter_dir is not None and ctx.base_model is not None
    if adapter:
        files += _write_adapter_variant(out_dir, ctx, body, params, header)
        report["adapter_variant"] = ("written; not run here (no Ollama server on this machine). Ollama takes "
                                     "safetensors LoRA adapters for Llama, Mistral and Gemma bases")
    elif ctx.adapter_dir is not None:
        report["adapter_variant"] = "skipped: the base model name is unknown (ctx.base_model)"
    readme = out_dir / "README.ollama.md"
    with atomic_path(readme) as tmp:
        tmp.write_text(_readme(ctx, out_dir.resolve(), gguf_path.name, match, check, adapter), encoding="utf-8")
    files.append(readme)
    logger.info("ollama: %s (%s family; %s)", modelfile, match.family, check["status"])
    return ExportResult("ollama", files, report)


def _think_template(tok, match: TemplateMatch, template: str, tools: dict, runtime_adds_bos: bool,
                    ctx: ExportContext) -> dict:
    """`template` with the chat template's `enable_thinking=False` mode behind Ollama's `think: false`,
    proven with Go (export/think_switch.py), or why not."""
    if not ctx.verify:
        return {"supported": False, "status": "think: false not verified (verification turned off), so not translated"}
    extra = template_vars(tok)

    def render(messages: list[dict], tools_: list[dict] | None = None) -> str:
        return tok.apply_chat_template(messages, tools=tools_, tokenize=False, add_generation_prompt=True, **extra)

    def render_off(messages: list[dict], tools_: list[dict] | None = None) -> str:
        return tok.apply_chat_template(messages, tools=tools_, tokenize=False, add_generation_prompt=True,
                                       **{**extra, "enable_thinking": False})

    from jinja2.exceptions import TemplateError

    names = [n for n in tools.get("probes", []) if not n.startswith("plain:")] if tools["supported"] else []
    try:
        return think_switch(match, template, render, render_off, {"bos": tok.bos_token, "eos": tok.eos_token},
                            ctx.system, runtime_adds_bos, names)
    except (ExportError, TemplateError) as e:  # the off mode fails on a probe: keep the default mode
        return {"supported": False, "status": f"think: false not translated (enable_thinking=False: {e})"}


def _write_adapter_variant(out_dir: Path, ctx: ExportContext, body: list, params: list, header: str) -> list[Path]:
    src = Path(ctx.adapter_dir)  # type: ignore[arg-type]
    if not (src / "adapter_config.json").exists():
        raise ExportError(f"ollama: {src} is not a PEFT adapter folder (adapter_config.json missing)")
    dest = out_dir / f"{ctx.name}-adapter"
    with atomic_path(dest) as tmp:
        tmp.mkdir()
        for f in sorted(src.iterdir()):
            if f.name == "adapter_config.json" or f.suffix == ".safetensors":
                shutil.copy2(f, tmp / f.name)
        if dest.exists():
            shutil.rmtree(dest)
    base = str(ctx.base_model)
    if base == EMBEDDED_BASE:  # Ollama does not know iceburg's embedded base by name: import its folder
        from ..models.tiny import ensure_tiny_model

        base = str(ensure_tiny_model())
    base = str(Path(base).resolve()) if os.path.exists(base) else base  # else an Ollama model name
    text = render_modelfile([("model", base), ("adapter", f"./{dest.name}"), *body, *params],
                            header + "\nAdapter-only variant: FROM must be the base model the adapter was trained on.")
    path = out_dir / "Modelfile.adapter"
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return [path, dest]


# ---------------------------------------------------------------- what the exporter says about itself


def _status(report: dict) -> str:
    """proven only when Go rendered the TEMPLATE identically and the GGUF it points at is proven."""
    from .gguf_verify import file_status

    check = report.get("template_check") or {}
    if not check.get("verified"):
        reason = str(check.get("status", "no template check recorded"))
        return not_verified(reason.removeprefix("not verified: "))
    gguf = report.get("gguf_proof") or {}
    if gguf.get("reused") and not gguf.get("verify"):
        return not_verified(f"{report.get('gguf')} was reused from an earlier export; its proof is that export's")
    gguf_status = file_status(str(report.get("gguf")), gguf)
    return PROVEN if gguf_status == PROVEN else gguf_status


def _headline(report: dict) -> str:
    template, check = report.get("template") or {}, report.get("template_check") or {}
    return f"template {template.get('family', '?')}, Go check: {check.get('status', 'not recorded')}"


SPEC = ExporterSpec(name="ollama", order=2, module="iceburg.export.ollama", options=("system_prompt", "quantization", "max_seq_length"),
                    headline=_headline, status=_status,
                    summary="a Modelfile whose TEMPLATE is proven with Go against the chat template, FROM a proven GGUF")
