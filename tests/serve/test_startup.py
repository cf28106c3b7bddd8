"""`iceburg collect` starts without transformers (logs.setup_logging imported it in every process:
1.5 s at each proxy start, docs/loop.md), and the quiet logging still reaches transformers when a
process imports it later."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

from iceburg.serve.launch import free_port, start_service

# the switches logs.quiet_transformers sets; stripped so the child starts as a user's shell would
_SWITCHES = ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS")


def _imported(log: str) -> set[str]:
    """Module names of `-X importtime` lines ("import time: self | cumulative | name")."""
    return {m.group(1) for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)\s*$", log, re.M)}


def test_collect_starts_without_importing_transformers_or_torch(tmp_path):
    port = free_port()
    # the upstream is never contacted: the probe is answered by the proxy itself
    service = start_service(["collect", "--upstream", "http://127.0.0.1:9/v1", "--log", str(tmp_path / "logs"),
                             "--port", str(port)], "/_iceburg/stats", tmp_path / "collect.log", port=port,
                            env={"PYTHONPROFILEIMPORTTIME": "1"})
    try:
        names = _imported(service.log_text())
    finally:
        service.stop(signal.SIGTERM)
    assert {"uvicorn", "httpx", "starlette", "iceburg.logs"} <= names, sorted(names)[:20]  # the profile ran
    heavy = sorted(n for n in names if n.split(".")[0] in ("transformers", "torch", "huggingface_hub"))
    assert not heavy, heavy[:10]


def _child_settings(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in _SWITCHES}
    probe = ("import sys, transformers.utils.logging as hf; "
             "print(hf.get_verbosity(), hf.is_progress_bar_enabled(), 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code.replace("PROBE", probe)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()


def test_quiet_logging_reaches_transformers_imported_before_or_after():
    setup = "from iceburg.logs import setup_logging; setup_logging({verbose})"
    # 40 = logging.ERROR; transformers' own default is WARNING (30) with its progress bars on
    after = _child_settings("import sys; " + setup.format(verbose=False)
                            + "; print('transformers' in sys.modules); PROBE")
    assert after == ["False", "40 False True"], after  # not imported by setup_logging, quiet once imported
    before = _child_settings("import transformers; " + setup.format(verbose=False) + "; PROBE")
    assert before == ["40 False True"], before
    hub = _child_settings("import huggingface_hub; " + setup.format(verbose=False) + "; PROBE")
    assert hub == ["40 False True"], hub  # huggingface_hub already imported: its switch set by call
    verbose = _child_settings(setup.format(verbose=True) + "; PROBE")
    assert verbose == ["30 True True"], verbose  # -v leaves transformers' defaults: the check can tell
