"""The pause-before-switchover hook: a command the harness runs while the guest is paused.

With a hook configured the engine stops after pausing the guest (devices drained, the last
dirty pages collected), reports the `paused` event and waits for the controller's
go-ahead.  The harness then runs the hook command on this machine (the harness host) with
the migration described in its environment:

  BMIG_KIND                 testbed | freebsd
  BMIG_SOURCE, BMIG_DESTINATION   the two hosts' names in the hosts file
  BMIG_SOURCE_ADDRESS, BMIG_DESTINATION_ADDRESS   how to reach them (SSH host names)
  BMIG_GUEST                the guest's name
  BMIG_DIRTY_PAGES, BMIG_DIRTY_BYTES   memory still to send once the hook is done
  BMIG_TIMEOUT_S            the hook's time limit

plus what the driver adds (the test bed: both control sockets and tbctl's path).  Exit
status 0 sends the go-ahead (`tbctl switchover-continue`, `bhyvectl --migrate-continue`);
any other status, or running past its time limit (the hook is killed), sends the cancel:
the source resumes the guest and the destination discards.  The engine's own wait is the
hook's limit plus SWITCHOVER_MARGIN_S, so that the go-ahead or the cancel can arrive; if
the harness dies, the engine rolls back on its own when that wait ends.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass

from harness.events import PausedEvent

# The engine waits this much longer than the hook may run: time for the answer to arrive.
SWITCHOVER_MARGIN_S = 5.0
# The engine waits at most an hour (MIG_MAX_HOLD_MS in migration.h), the margin included.
HOOK_TIMEOUT_MAX_S = 3600.0 - SWITCHOVER_MARGIN_S
OUTPUT_TAIL = 2000  # characters of the hook's output kept in the report


@dataclass
class HookRun:
    """What the hook did; the report's switchover_hook."""

    command: str
    outcome: str  # continued | failed | timed-out | not-answered
    exit_status: int | None
    duration_ms: float
    dirty_pages: int
    output: str = ""
    detail: str = ""


def engine_wait_ms(timeout_s: float) -> int:
    """The engine's switchover wait (--switchover-wait) for a hook limited to timeout_s."""
    return int((timeout_s + SWITCHOVER_MARGIN_S) * 1000)


def hook_environment(base: dict[str, str], paused: PausedEvent, timeout_s: float
                     ) -> dict[str, str]:  # fmt: skip
    """The hook's environment: this process's, the driver's BMIG_* and the event's."""
    env = dict(os.environ)
    env.update(base)
    env["BMIG_DIRTY_PAGES"] = str(paused.dirty_pages)
    env["BMIG_DIRTY_BYTES"] = str(paused.dirty_bytes)
    env["BMIG_TIMEOUT_S"] = f"{timeout_s:g}"
    return env


def run_hook(command: str, env: dict[str, str], paused: PausedEvent, timeout_s: float
             ) -> HookRun:  # fmt: skip
    """Run the hook through the shell; it is killed (with its process group) when it
    outlives timeout_s."""
    started = time.monotonic()
    proc = subprocess.Popen(command, shell=True, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        output, _ = proc.communicate()
        return HookRun(command, "timed-out", None, _since(started), paused.dirty_pages,
                       output[-OUTPUT_TAIL:],
                       f"the switchover hook ran past its {timeout_s:g} s limit and was "
                       "killed")  # fmt: skip
    code = proc.returncode
    if code == 0:
        return HookRun(command, "continued", 0, _since(started), paused.dirty_pages,
                       output[-OUTPUT_TAIL:])  # fmt: skip
    return HookRun(command, "failed", code, _since(started), paused.dirty_pages,
                   output[-OUTPUT_TAIL:],
                   f"the switchover hook exited with status {code}")  # fmt: skip


def _since(started: float) -> float:
    return round((time.monotonic() - started) * 1000.0, 3)
