"""The libFuzzer targets (tests/fuzz): a short run of each from the seeds in the repository,
failing on any crash, leak or undefined behaviour; the seeds are the generator's current
output; the receive-loop harness really gets past the handshake and the tag check.
`invoke fuzz` runs the same targets for longer."""

from __future__ import annotations

import filecmp
import os
import subprocess
from pathlib import Path

import pytest

from harness import fuzz as hfuzz

# Per target; with the build, well under a minute on two shared cores.
SECONDS = 4


@pytest.fixture(scope="module")
def out() -> Path:
    return hfuzz.build()


def _outcome(out: Path, target: str, seed: str) -> str:
    """The target's verbose outcome line for one seed of its corpus."""
    proc = subprocess.run(
        [str(out / f"fuzz_{target}"), str(hfuzz.SEED_CORPUS / target / seed)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FUZZ_VERBOSE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"fuzz_{target}: accept")]
    assert lines, proc.stderr[-2000:]
    return lines[-1]


@pytest.mark.parametrize("target", hfuzz.TARGETS)
def test_short_run_finds_nothing(out: Path, target: str, tmp_path: Path) -> None:
    result = hfuzz.run(target, SECONDS, out, work=tmp_path / "corpus")
    print(result.line())
    assert result.ok, result.failure()
    assert result.execs > 0 and result.cov > 0


def test_seed_corpus_is_the_generators_output(out: Path, tmp_path: Path) -> None:
    fresh = hfuzz.generate_seeds(out, tmp_path / "corpus")
    for target in hfuzz.TARGETS:
        cmp = filecmp.dircmp(fresh / target, hfuzz.SEED_CORPUS / target)
        stale = cmp.left_only + cmp.right_only + cmp.diff_files
        assert not stale, f"tests/fuzz/corpus/{target} is stale ({stale}): make -C tests/fuzz seeds"


def test_recv_seed_reaches_running(out: Path) -> None:
    # Every sealed frame passed its tag: the destination got to GO and confirmed RUNNING.
    assert "run 0 finish 0 running yes" in _outcome(out, "recv", "migration")


def test_unsealed_frame_is_refused_by_its_tag(out: Path) -> None:
    assert "failed its integrity check" in _outcome(out, "recv", "unsealed")


def test_preauth_error_is_labelled_unverified(out: Path) -> None:
    line = _outcome(out, "preauth", "error")
    assert "unauthenticated peer sent ERROR" in line and "running no" in line


def test_state_failing_its_tag_allocates_nothing_it_announced(out: Path) -> None:
    # The seed's STATE announces a 64 MiB section and carries a bad tag.
    line = _outcome(out, "recv", "state_unsealed")
    assert "STATE message" in line and "failed its integrity check" in line, line
    largest = int(line.split("largest malloc ")[1].split(":")[0])
    assert largest < 4 << 20, line
