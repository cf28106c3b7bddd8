"""Progress bars for the long stages: shown when asked, one line per export, silent under --json."""

from __future__ import annotations

import pytest

from iceburg import progress


@pytest.fixture(autouse=True)
def _restore():
    yield
    progress.set_enabled(None)


def test_step_bar_names_the_running_step_and_is_silent_when_disabled(capsys):
    progress.set_enabled(True)
    with progress.StepBar("building base from x.gguf", ["load + dequantize", "save weights"]) as s:
        s.step("load + dequantize")
        s.step("save weights")
        s.write("a finished step")
    err = capsys.readouterr().err
    assert "building base from x.gguf: 2/2" in err and "save weights" in err and "a finished step" in err
    progress.set_enabled(False)
    with progress.StepBar("quiet", ["a"]) as s:
        s.step("a")
        s.write("nothing")
    assert capsys.readouterr().err == ""


def test_export_shows_one_line_per_export(tiny_model_dir, tmp_path, capsys):
    from iceburg.export import ExportContext, export_model

    progress.set_enabled(True)
    export_model(tiny_model_dir, tmp_path, ["huggingface"], ExportContext(name="tiny"))
    err = capsys.readouterr().err
    assert "export: " in err and "huggingface (write + proof)" in err and "export huggingface: done" in err


def test_json_turns_bars_off(capsys):
    from iceburg.cli import main

    progress.set_enabled(True)
    assert main(["--detect-hardware", "--json"]) == 0
    assert progress.disable_flag() is True  # tqdm's disable=True
    assert capsys.readouterr().out.lstrip().startswith("{")
