"""The control plane's event reader (harness.events) and the progress display."""

from __future__ import annotations

import io
import json

import pytest

from harness.events import (
    EXIT_FAILED,
    EXIT_INDETERMINATE,
    EXIT_MIGRATED,
    EXIT_USAGE,
    EstimateMissedEvent,
    EventError,
    EventLog,
    PausedEvent,
    PhaseEvent,
    ProgressEvent,
    ResultEvent,
    RoundEvent,
    parse_event,
)
from harness.progress import LiveDisplay, PlainDisplay, make_display


def line(**obj) -> str:
    return json.dumps(obj)


ROUND = dict(event="round", index=1, final=False, dirty_pages=65536, pages_sent=65536,
             zero_pages=100, bytes=268_000_000, duration_us=180_000, throttle_pct=0,
             est_downtime_us=95_000)  # fmt: skip
RESULT_OK = dict(
    event="result", result="ok", guest_runs_on="destination", reasons=[],
    stats=dict(total_time_us=533_000, downtime_us=21_000, state_bytes=4096,
               bytes_sent=45_000_000, memory_bytes=1 << 30, rtt_us=80, protocol_version=1,
               encrypted=True, stop_reason="converged", nrounds=3),
)  # fmt: skip
RESULT_FAILED = dict(
    event="result", result="failed", guest_runs_on="source",
    error=dict(side="destination", phase="compat", code=22,
               message="the destination has 3 vCPUs, the source 2",
               peer_message="refused: vCPU count"),
)  # fmt: skip


def test_each_event_kind_is_read_into_its_dataclass() -> None:
    assert parse_event(line(event="phase", phase="precopy")) == PhaseEvent("precopy")
    rnd = parse_event(line(**ROUND))
    assert isinstance(rnd, RoundEvent)
    assert (rnd.index, rnd.dirty_pages, rnd.duration_us, rnd.est_downtime_us) == (
        1, 65536, 180_000, 95_000)  # fmt: skip
    prog = parse_event(line(event="progress", phase="precopy", round=2, remaining_pages=10,
                            bytes_sent=5, rate_bytes_per_s=7, est_downtime_us=3))  # fmt: skip
    assert prog == ProgressEvent("precopy", 2, 10, 5, 7, 3)
    missed = parse_event(line(event="estimate-missed", phase="switchover",
                              est_downtime_us=35_000, paused_us=51_000))  # fmt: skip
    assert missed == EstimateMissedEvent("switchover", 35_000, 51_000)
    res = parse_event(line(**RESULT_FAILED))
    assert isinstance(res, ResultEvent)
    assert res.error is not None and res.error.side == "destination"
    assert res.error.peer_message == "refused: vCPU count"
    assert res.stats.total_time_us is None  # no stats: every total unknown


def test_paused_event_and_the_downtime_parts_are_read() -> None:
    log = EventLog("tbctl migrate")
    paused = log.feed(line(event="paused", round=3, dirty_pages=2048, dirty_bytes=2048 * 4096,
                           timeout_ms=65000))  # fmt: skip
    assert paused == PausedEvent(3, 2048, 2048 * 4096, 65000) and log.paused == paused
    stats = {**RESULT_OK["stats"], "downtime_memory_us": 1000, "downtime_hook_us": 19_000,
             "downtime_state_us": 1000}  # fmt: skip
    res = parse_event(line(**{**RESULT_OK, "stats": stats}))
    assert isinstance(res, ResultEvent)
    assert (res.stats.downtime_memory_us, res.stats.downtime_hook_us,
            res.stats.downtime_state_us) == (1000, 19_000, 1000)  # fmt: skip
    # From a source without the parts: unknown, not zero.
    old = parse_event(line(**RESULT_OK))
    assert isinstance(old, ResultEvent) and old.stats.downtime_hook_us is None


def test_text_and_unknown_kinds_are_not_events() -> None:
    assert parse_event("tbctl: migration completed") is None
    assert parse_event(line(event="something-newer", x=1)) is None
    # A newer controller may add keys: they are ignored.
    assert parse_event(line(event="phase", phase="auth", extra=[1, 2])) == PhaseEvent("auth")


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ('{"event":"phase","phase":"compatibility check"}', "'phase' should be one of"),
        ('{"event":"round","index":-1}', "'index' should be a non-negative integer"),
        ('{"event":"round","index":1,"final":"no"}', "'final' should be true or false"),
        ('{"event":"result","result":"maybe"}', "'result' should be one of"),
        ('{"event":"result","result":"ok","error":"x"}', "'error' should be an object"),
        ('{"event":"result","result":"ok","reasons":"x"}', "'reasons' should be a list"),
        ('{"event":"phase",', "not valid JSON"),
        ('{"event":"paused","round":1,"dirty_pages":2,"dirty_bytes":8192}',
         "'timeout_ms' should be a non-negative integer"),
    ],
)
def test_malformed_events_are_errors_naming_the_line(text: str, complaint: str) -> None:
    log = EventLog("tbctl migrate")
    log.feed(line(event="phase", phase="connect"))
    with pytest.raises(EventError, match=complaint) as info:
        log.feed(text)
    assert "tbctl migrate, line 2" in str(info.value)


def test_a_run_is_collected_in_order() -> None:
    log = EventLog("bhyvectl")
    for text in [line(event="phase", phase="connect"), "bhyvectl: connecting",
                 line(event="phase", phase="precopy"), line(**ROUND),
                 line(**{**ROUND, "index": 2, "final": True}), line(**RESULT_OK)]:  # fmt: skip
        log.feed(text)
    assert log.phases == ["connect", "precopy"]
    assert [r.index for r in log.rounds] == [1, 2] and log.rounds[-1].final
    assert log.text == ["bhyvectl: connecting"]
    assert log.finish(EXIT_MIGRATED).stats.encrypted is True
    with pytest.raises(EventError, match="an event after the result"):
        log.feed(line(event="phase", phase="done"))


def test_result_and_exit_status_must_agree() -> None:
    log = EventLog("tbctl migrate")
    log.feed(line(**RESULT_OK))
    with pytest.raises(EventError, match="result 'ok' but exit status 1"):
        log.finish(EXIT_FAILED)


def test_a_controller_without_a_result_is_reported_from_its_exit_status() -> None:
    log = EventLog("bhyvectl")
    log.feed("bhyvectl: the migration key file is accessible by other users")
    res = log.finish(EXIT_FAILED)
    assert res.result == "failed" and res.guest_runs_on == "source"
    assert res.error is not None and "accessible by other users" in res.error.message
    usage = EventLog("tbctl migrate")
    usage.feed("tbctl: fixed-rounds and max-rounds exclude each other")
    refused = usage.finish(EXIT_USAGE)
    assert refused.result == "failed" and refused.error is not None
    assert refused.error.message == ("tbctl migrate refused its options (tbctl: fixed-rounds "
                                     "and max-rounds exclude each other)")  # fmt: skip
    lost = EventLog("tbctl migrate")
    lost.feed(line(event="phase", phase="switchover"))
    assert lost.finish(EXIT_INDETERMINATE).guest_runs_on == "paused_on_source"
    stopped = EventLog("tbctl migrate")
    stopped.feed(line(event="phase", phase="switchover"))
    # Killed by the harness after GO may have been sent: the outcome is unknown.
    assert stopped.finish(None).result == "indeterminate"
    # Killed by someone else (exit -1), or its VM died (exit 1), past the switchover:
    # the same (the fault matrix's kill-controller and kill-source after READY).
    for status in (-1, EXIT_FAILED):
        killed = EventLog("tbctl migrate")
        killed.feed(line(event="phase", phase="switchover"))
        assert killed.finish(status).result == "indeterminate"
    early = EventLog("tbctl migrate")
    early.feed(line(event="phase", phase="stopcopy"))
    assert early.finish(-1).result == "failed"  # before GO: the source rolls back


def test_plain_display_shows_phases_rounds_and_the_result() -> None:
    out = io.StringIO()
    shown = PlainDisplay(out)
    for text in (line(event="phase", phase="precopy"), line(**ROUND), line(**RESULT_FAILED)):
        event = parse_event(text)
        assert event is not None
        shown.event("alpha", event)
    shown.event("alpha", ProgressEvent("precopy", 1, 5, 5, 5))  # not a line of its own
    lines = out.getvalue().splitlines()
    assert lines[0] == "[alpha] phase precopy"
    assert lines[1].startswith("[alpha] round 1: 65536 dirty, 65536 sent, 100 zero; 255.6 MiB")
    assert "estimated downtime 95.0 ms" in lines[1]
    assert lines[2] == ("[alpha] result: failed, guest runs on the source; destination side, "
                        "compat: the destination has 3 vCPUs, the source 2")  # fmt: skip
    assert len(lines) == 3


def test_live_display_tracks_bytes_rate_dirty_pages_and_estimate() -> None:
    live = LiveDisplay(1 << 30)
    try:
        live.event("a", PhaseEvent("precopy"))
        live.event("a", ProgressEvent("precopy", 1, 1000, 500 << 20, 800 << 20, 42_000))
        task = live.progress.tasks[0]
        assert task.completed == 500 << 20
        assert task.fields["dirty"] == "1000" and task.fields["est"] == "42.0 ms"
        # More left to send than one pass over memory: the bar's goal grows.
        live.event("a", ProgressEvent("precopy", 2, 200_000, 1 << 30, 1, None))
        assert live.progress.tasks[0].total == (1 << 30) + 200_000 * 4096
    finally:
        live.close()


def test_not_a_terminal_means_plain_lines() -> None:
    assert isinstance(make_display(1 << 20), PlainDisplay)  # pytest captures stdout
