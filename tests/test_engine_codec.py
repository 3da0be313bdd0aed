"""The engine's codec, channel and policy, exercised by a C test program."""

from __future__ import annotations

import subprocess

import pytest

from harness.engine_build import build_testbed_programs


@pytest.fixture(scope="module")
def wire_test_output() -> list[str]:
    out = build_testbed_programs(targets=("wire_test",), sanitize=True)
    proc = subprocess.run(
        [str(out / "wire_test")], capture_output=True, text=True, errors="replace", timeout=120
    )
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return lines


def test_every_case_passes(wire_test_output: list[str]) -> None:
    failed = [line for line in wire_test_output if line.startswith("FAIL")]
    assert not failed
    assert wire_test_output[-1].endswith("0 failed")


@pytest.mark.parametrize(
    "case",
    [
        "oversized length refused",
        "truncated HELLO refused",
        "bad magic refused",
        "bad version range refused",
        "bad page index refused",
        "truncated ROUND_BEGIN refused",
        "STATE chunk overrunning its section refused",
        "AES-256-GCM tags: frame round trip",
        "AES-256-GCM tags: frame refused as ChaCha20-Poly1305 tags",
        "AES-256-GCM tags: frame with a flipped bit refused",
        "AES-256-GCM tags: replayed frame refused",
        "AES-256-GCM tags: the frame after a forgone one passes",
        "AES-256-GCM tags: a forgo out of turn fails the next frame",
        "ChaCha20-Poly1305 tags: frame round trip",
        "ChaCha20-Poly1305 tags: frame refused as AES-256-GCM tags",
        "ChaCha20-Poly1305 tags: frame with a flipped bit refused",
        "ChaCha20-Poly1305 tags: replayed frame refused",
        "ChaCha20-Poly1305 tags: the frame after a forgone one passes",
        "ChaCha20-Poly1305 tags: a forgo out of turn fails the next frame",
        "AES-256-GCM encryption: frame round trip",
        "AES-256-GCM encryption: frame refused as AES-256-GCM tags",
        "AES-256-GCM encryption: frame with a flipped bit refused",
        "AES-256-GCM encryption: replayed frame refused",
        "AES-256-GCM encryption: the frame after a forgone one passes",
        "AES-256-GCM encryption: a forgo out of turn fails the next frame",
        "VMINFO round trip",
        "ZERO_RANGES round trip",
        "HOLD round trip",
        "HOLD of no time refused",
        "HOLD past an hour refused",
        "ZERO_RANGES truncated refused",
        "ZERO_RANGES past the segment refused",
        "ZERO_RANGES overlapping refused",
        "ZERO_RANGES empty range refused",
        "ZERO_RANGES wrapping range refused",
        "ZERO_RANGES unknown segment refused",
        "ZERO_RANGES without ranges refused",
        "owed: a failed frame's pages stay owed past a pass that round",
        "owed: a later pass clears the debt",
        "owed: OWED names the runs, OWED_END counts them",
        "owed: OWED past the segment refused",
        "VMINFO with disks round trip",
        "VMINFO with a truncated disk list refused",
        "odd disk block size refused",
        "moving disks without a disk refused",
        "disk size mismatch named",
        "DISK_BLOCKS round trip",
        "DISK_BLOCKS with short data refused",
        "DISK_BLOCKS with a full-size last block refused",
        "DISK_BLOCKS block past the disk refused",
        "DISK_BLOCKS duplicate block refused",
        "DISK_BLOCKS unknown disk refused",
        "DISK_BLOCKS truncated header refused",
        "DISK_BLOCKS too short for its indices refused",
        "DISK_BLOCKS announcing too many blocks refused",
        "DISK_ZERO round trip",
        "DISK_ZERO past the disk refused",
        "DISK_ZERO overlapping refused",
        "DISK_ZERO unknown disk refused",
        "owed disk blocks keep pre-copy going",
        "HELLO round trip",
        "ERROR round trip, control characters neutralised",
        "vCPU count mismatch named",
        "device version mismatch named",
        "outrun rounds throttle the vCPUs",
        "fixed rounds stop at the count",
        "key: 32 raw bytes taken as they are",
        "key: 64 hex digits and a newline decoded",
        "key: wrong length refused",
        "key: non-hex digit refused",
        "key file: mode 0600 read",
        "key file: readable by others refused",
        "key file: not a regular file refused",
        "address: [::1]:24981 split",
        "address: host:1 split",
        "address: host takes the default port",
        "address: a number alone is a port",
        "address: bare IPv6 is a host",
        "address: empty is any host, default port",
        "address: unterminated [::1 refused",
        "address: empty brackets refused",
        "address: junk after ] refused",
        "address: empty port refused",
        "address: overlong host refused",
        "address: overlong port refused",
    ],
)
def test_named_case_ran_and_passed(wire_test_output: list[str], case: str) -> None:
    assert any(line.startswith(f"PASS {case}") for line in wire_test_output), case
