"""invoke task: run the engine's libFuzzer targets (see harness.fuzz)."""

from __future__ import annotations

from invoke import task
from invoke.exceptions import Exit

from harness import fuzz as hfuzz
from harness.errors import HarnessError


@task(
    help={
        "target": f"one of {', '.join(hfuzz.TARGETS)} (default: all, one after the other)",
        "seconds": "how long to fuzz each target (default 300)",
    }
)
def fuzz(c, target=None, seconds=300):
    """Fuzz the wire decoders, the control-plane codec and the destination's receive loop
    (after a real handshake, and before one) under ASan and UBSan; print execs and coverage.
    The corpus grows in build/fuzz/work; a crash's input lands in build/fuzz/artifacts."""
    targets = (target,) if target else hfuzz.TARGETS
    try:
        out = hfuzz.build()
        results = [hfuzz.run(t, int(seconds), out) for t in targets]
    except HarnessError as exc:
        raise Exit(f"fuzz: {exc}", code=2) from exc
    for r in results:
        print(r.line())
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(f"--- fuzz_{r.target} ---\n{r.failure()}")
    if failed:
        raise Exit(f"fuzz: {len(failed)} target(s) failed", code=1)
