"""Build and run the engine's libFuzzer targets (tests/fuzz): the wire decoders, the control
plane's codec, the destination's receive loop after a real handshake and before one.

Each run starts from the seed corpus in the repository (tests/fuzz/corpus/TARGET) and grows
a working corpus outside it; a crash, a leak or undefined behaviour ends the run with
libFuzzer's report and the input that caused it (ARTIFACTS/TARGET-crash-...).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError

REPO = Path(__file__).resolve().parent.parent
FUZZ_SRC = REPO / "tests" / "fuzz"
SEED_CORPUS = FUZZ_SRC / "corpus"
DEFAULT_OUT = REPO / "build" / "fuzz"
# As `invoke fuzz --target` names them: OUT/fuzz_NAME, seeds in tests/fuzz/corpus/NAME.
TARGETS = ("wire", "ctl", "recv", "preauth")

_DONE = re.compile(r"^#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)/", re.M)
_EXECS = re.compile(r"^stat::number_of_executed_units: (\d+)", re.M)


@dataclass
class FuzzResult:
    """One target's run: what libFuzzer printed at its end."""

    target: str
    seconds: int
    ok: bool
    execs: int
    cov: int  # libFuzzer's "cov": coverage points (edges) reached
    ft: int  # "ft": features (edges with hit counts, comparisons)
    corpus: int  # units in the corpus at the end
    log: str

    def line(self) -> str:
        """One line for a person."""
        state = "ok" if self.ok else "FAILED"
        return (
            f"fuzz_{self.target}: {state}, {self.execs} execs in {self.seconds} s "
            f"({self.execs // max(self.seconds, 1)}/s), cov {self.cov}, ft {self.ft}, "
            f"corpus {self.corpus}"
        )

    def failure(self) -> str:
        """libFuzzer's report of the failure: the end of its log."""
        return "\n".join(self.log.splitlines()[-40:])


def build(out_dir: Path = DEFAULT_OUT) -> Path:
    """Compile the targets and the seed generator into out_dir (make decides what is stale)."""
    if shutil.which("make") is None or shutil.which("clang-19") is None:
        raise HarnessError(
            "the fuzz targets need make and clang-19 (apt: clang-19 libclang-rt-19-dev)"
        )
    out_dir = Path(out_dir).resolve()
    argv = ["make", "-s", "-C", str(FUZZ_SRC), f"OUT={out_dir}", f"-j{os.cpu_count() or 2}"]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise HarnessError(
            f"building the fuzz targets failed (`{' '.join(argv)}`); is libclang-rt-19-dev "
            f"installed?\n{proc.stdout}{proc.stderr}"
        )
    return out_dir


def generate_seeds(out_dir: Path, dest: Path) -> Path:
    """Write the seed corpora the generator produces now into dest; return dest."""
    if dest.exists():
        shutil.rmtree(dest)
    proc = subprocess.run([str(out_dir / "fuzz_seed"), str(dest)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise HarnessError(f"fuzz_seed failed: {proc.stderr.strip()}")
    return dest


def run(
    target: str,
    seconds: int,
    out_dir: Path = DEFAULT_OUT,
    work: Path | None = None,
) -> FuzzResult:
    """Fuzz one target for seconds from its seeds, growing the corpus in work."""
    if target not in TARGETS:
        raise HarnessError(f"unknown fuzz target {target!r}; the targets are {', '.join(TARGETS)}")
    if seconds < 1:
        raise HarnessError(f"--seconds must be at least 1, not {seconds}")
    binary = Path(out_dir) / f"fuzz_{target}"
    if not binary.exists():
        raise HarnessError(f"{binary} is missing: build the targets first")
    work = Path(work) if work is not None else Path(out_dir) / "work" / target
    work.mkdir(parents=True, exist_ok=True)
    artifacts = Path(out_dir) / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    argv = [
        str(binary),
        f"-max_total_time={seconds}",
        "-timeout=20",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
        f"-artifact_prefix={artifacts}/{target}-",
        str(work),
        str(SEED_CORPUS / target),
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
    log = proc.stdout + proc.stderr
    done = _DONE.findall(log)
    execs = _EXECS.search(log)
    cov, ft, corp = (int(v) for v in done[-1][1:]) if done else (0, 0, 0)
    return FuzzResult(
        target=target,
        seconds=seconds,
        ok=proc.returncode == 0 and bool(done),
        execs=int(execs.group(1)) if execs else 0,
        cov=cov,
        ft=ft,
        corpus=corp,
        log=log,
    )
