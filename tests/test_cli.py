"""The CLI: flags generated from the config, every message names a real flag, every error before
any work (one `error:` line, exit 2), exports written where asked."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import json
import re
from pathlib import Path

import pytest

from iceburg.cli import build_parser, main
from iceburg.config import GGUF_QUANTIZATIONS, TrainingConfig

PKG = Path(__file__).resolve().parents[1] / "iceburg"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")


def _all_parser_flags() -> set[str]:
    """Option strings of iceburg-train and of every other `build_parser()` in the package."""
    flags: set[str] = set()
    for path in PKG.rglob("*.py"):
        if "def build_parser" not in path.read_text(encoding="utf-8"):
            continue
        mod = ".".join(path.relative_to(PKG.parent).with_suffix("").parts)
        parser = importlib.import_module(mod).build_parser()
        stack = [parser]
        while stack:  # sub-commands too
            p = stack.pop()
            for action in p._actions:
                flags.update(action.option_strings)
                if isinstance(action.choices, dict):  # a sub-parsers action: name -> parser
                    stack.extend(action.choices.values())
    return flags


def _message_strings(tree: ast.AST):
    """String pieces inside `raise ...(...)`, logger calls and `sys.stderr.write(...)`."""
    for node in ast.walk(tree):
        target = None
        if isinstance(node, ast.Raise) and node.exc is not None:
            target = node.exc
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                "warning", "error", "info", "exception", "write", "append"):
            target = node
        if target is None:
            continue
        for sub in ast.walk(target):
            if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                yield sub.value


def test_every_flag_named_in_a_message_exists():
    known = _all_parser_flags()
    missing: dict[str, str] = {}
    for path in PKG.rglob("*.py"):
        for text in _message_strings(ast.parse(path.read_text(encoding="utf-8"))):
            if "pip " in text or "CMAKE" in text or "install" in text:
                continue  # install lines name pip's and cmake's own flags
            # a `quoted command` of another program (`llama-server --jinja`) names its own flags
            text = re.sub(r"`(?!iceburg)[a-z][\w.-]* [^`]*`", "", text)
            for flag in FLAG.findall(text):
                if flag not in known:
                    missing[flag] = str(path.relative_to(PKG.parent))
    assert not missing, f"messages name flags that no parser defines: {missing}"


def test_every_config_field_with_a_flag_round_trips_through_the_parser():
    parser = build_parser()
    dests = {a.dest for a in parser._actions}
    for f_ in dataclasses.fields(TrainingConfig):
        if f_.metadata.get("flag"):
            assert f_.name in dests, f_.name
    # a tri-state boolean has both forms; an alias reaches the same key
    ns = parser.parse_args(["--no-gradient-checkpointing", "--use-qlora", "--gradient-accumulation-steps", "3"])
    assert ns.gradient_checkpointing is False and ns.use_qlora is True and ns.gradient_accumulation_steps == 3


def test_gguf_quantizations_match_the_exporter():
    from iceburg.export.gguf import FILE_TYPES

    assert set(GGUF_QUANTIZATIONS) == set(FILE_TYPES)


def _run(argv: list[str]) -> int:
    """main()'s exit status, whether it returns it or argparse exits (choices are checked there)."""
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code)


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:"), err
    return err


@pytest.mark.parametrize("argv, needle", [
    (["--model-type", "surveyor", "--quantization", "q9_k"], "--quantization"),
    (["--model-type", "surveyor", "--formats", "tflite"], "--formats"),
    (["--model-type", "surveyor", "--lora-dropout", "2"], "--lora-dropout"),
    (["--model-type", "surveyor", "--config", "/nonexistent.yaml"], "--config /nonexistent.yaml"),
])
def test_user_errors_exit_2_before_any_work(tmp_path, capsys, argv, needle):
    out = tmp_path / "runs"
    assert _run([*argv, "--output-dir", str(out), "--output-name", "r"]) == 2
    assert needle in _err(capsys)
    assert not out.exists()  # nothing was started


def test_malformed_yaml_names_the_file_and_line(tmp_path, capsys):
    y = tmp_path / "bad.yaml"
    y.write_text("epochs: 2\nlearning_rate: [0.1\n")
    assert main(["--model-type", "surveyor", "--config", str(y)]) == 2
    err = _err(capsys)
    assert str(y) in err and "line" in err and "\n" not in err.split("problem(s)):")[0]


def test_unwritable_output_dir_is_refused_up_front(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["--model-type", "surveyor", "--output-dir", str(blocker / "runs")]) == 2
    assert "--output-dir" in _err(capsys)


@pytest.mark.slow
def test_export_only_writes_to_output_dir(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "elsewhere"
    assert main(["--export-only", str(tiny_model_dir), "--formats", "huggingface", "--output-dir", str(out),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert Path(report["huggingface"]["files"][0]).is_relative_to(out)
    assert (out / "huggingface" / "merged" / "config.json").exists()
