"""Build the migration engine's Linux programs (the test bed's tbvm and tbctl)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from harness.errors import HarnessError

REPO = Path(__file__).resolve().parent.parent
TESTBED_SRC = REPO / "testbed"
DEFAULT_OUT = REPO / "build" / "testbed"
PROGRAMS = ("tbvm", "tbctl")


def build_testbed_programs(
    out_dir: Path = DEFAULT_OUT, targets: tuple[str, ...] = (), sanitize: bool = False
) -> Path:
    """Compile the engine and the test-bed programs into out_dir; return out_dir.

    make decides what is out of date, so calling this before every run is cheap.
    """
    if shutil.which("make") is None or shutil.which("cc") is None:
        raise HarnessError(
            "building the test bed needs make and a C compiler (apt: build-essential)"
        )
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    argv = ["make", "-s", "-C", str(TESTBED_SRC), f"OUT={out_dir}", f"-j{os.cpu_count() or 2}"]
    if sanitize:
        argv.append("SAN=1")
    argv.extend(targets)
    proc = subprocess.run(argv, capture_output=True, text=True, errors="replace")
    if proc.returncode != 0:
        raise HarnessError(
            f"building the test bed failed (`{' '.join(argv)}`):\n{proc.stdout}{proc.stderr}"
        )
    for name in targets or PROGRAMS:
        if not (out_dir / name).exists():
            raise HarnessError(f"build finished but {out_dir / name} is missing")
    return out_dir
