"""The control plane's event stream, as bhyvectl and tbctl print it: one JSON object a line.

Both controllers run the same C codec (usr.sbin/bhyve/migration_ctl.c), so this one reader
serves both host kinds.  Event kinds:

  {"event":"phase","phase":ID}
  {"event":"round","index":N,"final":bool,"dirty_pages":N,...,"est_downtime_us":N}
  {"event":"progress","phase":ID,"round":N,"remaining_pages":N,"bytes_sent":N,...}
  {"event":"estimate-missed","phase":ID,"est_downtime_us":N,"paused_us":N}
  {"event":"paused","round":N,"dirty_pages":N,"dirty_bytes":N,"timeout_ms":N}
      (with a switchover hook: the guest is paused, the source waits for the go-ahead)
  {"event":"result","result":R,"guest_runs_on":W,"error":{...},"reasons":[...],"stats":{...}}

"result" is the last event.  Lines that are not JSON objects (a controller's human
messages on stderr, merged into the same stream by some runners) are kept as text.
Malformed events are errors naming the line; unknown event kinds and unknown keys are
ignored so that a newer controller can add fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessError

# Exit statuses of bhyvectl --migrate* and tbctl migrate/check (migration_ctl.h).
EXIT_MIGRATED = 0  # also "compatible" for a check
EXIT_FAILED = 1  # the guest runs on the source
EXIT_INDETERMINATE = 3  # the guest is paused on the source
EXIT_INCOMPATIBLE = 4
EXIT_USAGE = 64

PHASES = (
    "connect", "handshake", "auth", "compat", "precopy", "stopcopy", "state", "switchover",
    "done",
)  # fmt: skip
RESULTS = ("ok", "failed", "indeterminate", "cancelled", "compatible", "incompatible")
GUEST_PLACES = ("source", "destination", "paused_on_source")

# The exit status each result comes with.
RESULT_EXIT = {
    "ok": EXIT_MIGRATED,
    "compatible": EXIT_MIGRATED,
    "failed": EXIT_FAILED,
    "cancelled": EXIT_FAILED,
    "indeterminate": EXIT_INDETERMINATE,
    "incompatible": EXIT_INCOMPATIBLE,
}


class EventError(HarnessError):
    """A controller printed an event the harness cannot read; the message names the line."""


@dataclass(frozen=True)
class PhaseEvent:
    phase: str


@dataclass(frozen=True)
class RoundEvent:
    """One pre-copy round (final: the stop-and-copy round, guest paused)."""

    index: int
    final: bool
    dirty_pages: int
    pages_sent: int
    zero_pages: int
    bytes: int
    duration_us: int
    throttle_pct: int = 0
    est_downtime_us: int | None = None
    unpopulated_pages: int = 0  # of zero_pages: never read, sent as ranges
    rewritten_pages: int = 0  # written again before their send: left to the next round
    owed_pages: int = 0  # their frame failed its tag (written on the way): sent again
    disk_dirty_blocks: int = 0  # disk migration: blocks this round owed
    disk_blocks_sent: int = 0  # with data
    disk_zero_blocks: int = 0  # as zero markers or ranges
    disk_bytes: int = 0  # of bytes: the disk frames'


@dataclass(frozen=True)
class ProgressEvent:
    """A periodic snapshot while a round runs."""

    phase: str
    round: int
    remaining_pages: int
    bytes_sent: int
    rate_bytes_per_s: int
    est_downtime_us: int | None = None


@dataclass(frozen=True)
class EstimateMissedEvent:
    """Once a migration: the guest has been paused longer than the policy estimated."""

    phase: str
    est_downtime_us: int
    paused_us: int


@dataclass(frozen=True)
class PausedEvent:
    """The guest is paused and the source waits for the switchover hook's go-ahead."""

    round: int  # the final round, still to send
    dirty_pages: int
    dirty_bytes: int
    timeout_ms: int  # the source rolls back after this long


@dataclass(frozen=True)
class ErrorInfo:
    """Which side failed, in which phase, and why."""

    side: str
    phase: str
    code: int  # errno-style
    message: str
    peer_message: str | None = None


@dataclass(frozen=True)
class Stats:
    total_time_us: int | None = None
    downtime_us: int | None = None
    # The downtime's parts: the last memory, the switchover hook's wait, the state and
    # the switchover handshake (the rest).
    downtime_memory_us: int | None = None
    downtime_hook_us: int | None = None
    downtime_state_us: int | None = None
    state_bytes: int | None = None
    bytes_sent: int | None = None
    memory_bytes: int | None = None
    rtt_us: int | None = None
    protocol_version: int | None = None
    encrypted: bool | None = None
    stop_reason: str | None = None
    nrounds: int | None = None
    streams: int | None = None


@dataclass(frozen=True)
class ResultEvent:
    result: str
    guest_runs_on: str | None
    error: ErrorInfo | None = None
    reasons: tuple[str, ...] = ()
    stats: Stats = field(default_factory=Stats)


Event = (
    PhaseEvent | RoundEvent | ProgressEvent | EstimateMissedEvent | PausedEvent | ResultEvent
)


class _Fields:
    """Typed access to one event object; errors name the line and the key."""

    def __init__(self, obj: dict[str, Any], where: str):
        self.obj = obj
        self.where = where

    def _bad(self, key: str, want: str) -> EventError:
        return EventError(f"{self.where}: {key!r} should be {want}, got {self.obj.get(key)!r}")

    def int(self, key: str, optional: bool = False) -> int | None:
        value = self.obj.get(key)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self._bad(key, "a non-negative integer")
        return value

    def req_int(self, key: str) -> int:
        value = self.int(key)
        assert value is not None
        return value

    def bool(self, key: str, optional: bool = False) -> bool | None:
        value = self.obj.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, bool):
            raise self._bad(key, "true or false")
        return value

    def str(self, key: str, choices: tuple[str, ...] = (), optional: bool = False) -> str | None:
        value = self.obj.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str) or (choices and value not in choices):
            raise self._bad(key, "one of " + ", ".join(choices) if choices else "a string")
        return value

    def req_str(self, key: str, choices: tuple[str, ...] = ()) -> str:
        value = self.str(key, choices)
        assert value is not None
        return value


def _error(obj: Any, where: str) -> ErrorInfo | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise EventError(f"{where}: 'error' should be an object, got {obj!r}")
    f = _Fields(obj, f"{where}: error")
    return ErrorInfo(
        side=f.req_str("side"),
        phase=f.req_str("phase"),
        code=f.int("code", optional=True) or 0,
        message=f.req_str("message"),
        peer_message=f.str("peer_message", optional=True),
    )


def _stats(obj: Any, where: str) -> Stats:
    if obj is None:
        return Stats()
    if not isinstance(obj, dict):
        raise EventError(f"{where}: 'stats' should be an object, got {obj!r}")
    f = _Fields(obj, f"{where}: stats")
    return Stats(
        total_time_us=f.int("total_time_us", True),
        downtime_us=f.int("downtime_us", True),
        downtime_memory_us=f.int("downtime_memory_us", True),
        downtime_hook_us=f.int("downtime_hook_us", True),
        downtime_state_us=f.int("downtime_state_us", True),
        state_bytes=f.int("state_bytes", True),
        bytes_sent=f.int("bytes_sent", True),
        memory_bytes=f.int("memory_bytes", True),
        rtt_us=f.int("rtt_us", True),
        protocol_version=f.int("protocol_version", True),
        encrypted=f.bool("encrypted", True),
        stop_reason=f.str("stop_reason", optional=True),
        nrounds=f.int("nrounds", True),
        streams=f.int("streams", True),
    )


def parse_event(line: str, where: str = "event") -> Event | None:
    """The event on one line; None for a line that is not a JSON object or an unknown kind."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EventError(f"{where}: not valid JSON ({exc}): {text[:200]}") from exc
    if not isinstance(obj, dict):
        return None
    f = _Fields(obj, where)
    kind = obj.get("event")
    if kind == "phase":
        return PhaseEvent(f.req_str("phase", PHASES))
    if kind == "round":
        return RoundEvent(
            index=f.req_int("index"),
            final=bool(f.bool("final")),
            dirty_pages=f.req_int("dirty_pages"),
            pages_sent=f.req_int("pages_sent"),
            zero_pages=f.req_int("zero_pages"),
            bytes=f.req_int("bytes"),
            duration_us=f.req_int("duration_us"),
            throttle_pct=f.int("throttle_pct", True) or 0,
            est_downtime_us=f.int("est_downtime_us", True),
            unpopulated_pages=f.int("unpopulated_pages", True) or 0,
            rewritten_pages=f.int("rewritten_pages", True) or 0,
            owed_pages=f.int("owed_pages", True) or 0,
            disk_dirty_blocks=f.int("disk_dirty_blocks", True) or 0,
            disk_blocks_sent=f.int("disk_blocks_sent", True) or 0,
            disk_zero_blocks=f.int("disk_zero_blocks", True) or 0,
            disk_bytes=f.int("disk_bytes", True) or 0,
        )
    if kind == "progress":
        return ProgressEvent(
            phase=f.req_str("phase", PHASES),
            round=f.req_int("round"),
            remaining_pages=f.req_int("remaining_pages"),
            bytes_sent=f.req_int("bytes_sent"),
            rate_bytes_per_s=f.req_int("rate_bytes_per_s"),
            est_downtime_us=f.int("est_downtime_us", True),
        )
    if kind == "estimate-missed":
        return EstimateMissedEvent(
            phase=f.req_str("phase", PHASES),
            est_downtime_us=f.req_int("est_downtime_us"),
            paused_us=f.req_int("paused_us"),
        )
    if kind == "paused":
        return PausedEvent(
            round=f.req_int("round"),
            dirty_pages=f.req_int("dirty_pages"),
            dirty_bytes=f.req_int("dirty_bytes"),
            timeout_ms=f.req_int("timeout_ms"),
        )
    if kind == "result":
        reasons = obj.get("reasons") or []
        if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
            raise EventError(f"{where}: 'reasons' should be a list of strings, got {reasons!r}")
        return ResultEvent(
            result=f.req_str("result", RESULTS),
            guest_runs_on=f.str("guest_runs_on", GUEST_PLACES, optional=True),
            error=_error(obj.get("error"), where),
            reasons=tuple(reasons),
            stats=_stats(obj.get("stats"), where),
        )
    return None


@dataclass
class EventLog:
    """Everything one controller run said, in order, read line by line as it arrives."""

    source: str = "controller"  # names the program in error messages
    phases: list[str] = field(default_factory=list)
    rounds: list[RoundEvent] = field(default_factory=list)
    progress: ProgressEvent | None = None
    estimate_missed: EstimateMissedEvent | None = None
    paused: PausedEvent | None = None
    result: ResultEvent | None = None
    text: list[str] = field(default_factory=list)  # lines that were not events
    unreadable: list[str] = field(default_factory=list)  # kept by readers that go on
    lines: int = 0

    def feed(self, line: str) -> Event | None:
        """Read one line; the event it carried, if any."""
        self.lines += 1
        where = f"{self.source}, line {self.lines}"
        if self.result is not None and line.strip():
            if line.lstrip().startswith("{"):
                raise EventError(f"{where}: an event after the result: {line.strip()[:200]}")
            self.text.append(line)
            return None
        event = parse_event(line, where)
        if isinstance(event, PhaseEvent):
            self.phases.append(event.phase)
        elif isinstance(event, RoundEvent):
            self.rounds.append(event)
        elif isinstance(event, ProgressEvent):
            self.progress = event
        elif isinstance(event, EstimateMissedEvent):
            self.estimate_missed = event
        elif isinstance(event, PausedEvent):
            self.paused = event
        elif isinstance(event, ResultEvent):
            self.result = event
        elif event is None and line.strip() and not line.lstrip().startswith("{"):
            self.text.append(line.rstrip())
        return event

    def feed_text(self, text: str) -> None:
        for line in text.splitlines():
            self.feed(line)

    @property
    def last_phase(self) -> str:
        return self.phases[-1] if self.phases else "connect"

    def finish(self, exit_status: int | None) -> ResultEvent:
        """The run's result, checked against the exit status (None: the harness stopped
        the controller).  A controller that printed no result gets one saying so."""
        if self.result is not None:
            expected = RESULT_EXIT[self.result.result]
            if exit_status is not None and exit_status != expected:
                raise EventError(
                    f"{self.source}: result {self.result.result!r} but exit status "
                    f"{exit_status} (expected {expected})"
                )
            return self.result
        said = "; ".join(t.strip() for t in self.text[-3:]) or "no output"
        if exit_status is None:
            message = f"the harness stopped {self.source} before it printed a result ({said})"
        elif exit_status == EXIT_USAGE:
            message = f"{self.source} refused its options ({said})"
        else:
            message = f"{self.source} exited {exit_status} without a result ({said})"
        # From the switchover on GO may have left: a controller that died there (killed,
        # or its VM gone) cannot say where the guest runs, so the destination is asked.
        if exit_status == EXIT_INDETERMINATE or (
            exit_status != EXIT_USAGE and self.last_phase in ("switchover", "done")
        ):
            result, where = "indeterminate", "paused_on_source"
        else:
            # Usage errors and refusals happen before any guest state moved.
            result, where = "failed", "source"
        self.result = ResultEvent(
            result, where, ErrorInfo("source", self.last_phase, 0, message)
        )
        return self.result
