#!/usr/bin/env python3
"""Same flags as the installed `iceburg-train` command (see README)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from iceburg.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
