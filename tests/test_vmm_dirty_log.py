"""Build sys/dev/vmm/vmm_dirty_log.c for the host and run its C test cases.

The same file compiles into vmm.ko; here the host's cc builds it in userland with the
driver in tests/c/dirty_log_test.c, which checks request validation (misaligned, zero,
overflow, over the per-call cap, out of segment), get-and-clear, merging into the log (a
harvest, a failed copyout), sticky bits across collections, a random model, a
marker/collector race, the record of a superpage the harvest could not split (failed
demotion, 1 GiB leaf), the owner rule, the order of the two ways tracking ends, and
markers racing other VMs' start/stop.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "sys" / "dev" / "vmm" / "vmm_dirty_log.c"
DRIVER = ROOT / "tests" / "c" / "dirty_log_test.c"
CASES = [
    "validation",
    "lookup",
    "get_and_clear",
    "merge",
    "sticky",
    "model",
    "race",
    "superpage_report",
    "owner",
    "end_order",
    "registry_race",
]


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc")
    if cc is None:
        pytest.fail("no host C compiler: install build-essential (cc)")
    exe = tmp_path_factory.mktemp("dirty_log") / "dirty_log_test"
    cmd = [
        cc,
        "-std=c11",
        "-O2",
        "-g",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-pthread",
        "-D_GNU_SOURCE",
        f"-I{SRC.parent}",
        "-o",
        str(exe),
        str(DRIVER),
        str(SRC),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"build failed: {' '.join(cmd)}\n{proc.stderr}"
    return exe


def test_driver_lists_every_case(driver: Path) -> None:
    proc = subprocess.run([str(driver), "list"], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == CASES


@pytest.mark.parametrize("case", CASES)
def test_case(driver: Path, case: str) -> None:
    runs = 3 if case.endswith("race") else 1
    for _ in range(runs):
        proc = subprocess.run(
            [str(driver), case], capture_output=True, text=True, timeout=120, check=False
        )
        assert proc.returncode == 0, f"{case} failed:\n{proc.stderr}{proc.stdout}"
        assert proc.stdout.strip() == f"ok {case}"


def test_unknown_case_is_an_error(driver: Path) -> None:
    proc = subprocess.run([str(driver), "nosuch"], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
