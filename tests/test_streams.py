"""Several streams in one migration session, on the real engine over loopback.

Memory moves over four connections: the guest must arrive page-exact with a live
dirtying workload, after stop-and-copy, and with a stream that dies mid-round
the migration must fail cleanly with the guest running on the source.  A
Python source (tests/migpeer.py) joins streams the way the protocol document
says, and shows that a join naming another session, a replayed join and a join
with nothing to join are refused while the real session goes on.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import struct
import threading
import time

import migpeer
import pytest
from test_migration_local import (
    _key,
    _receiver,
    _result,
    _tbctl_migrate,
    _verify_received,
    assert_verified,
    make_guest,
    migrate,
)
from test_protocol_peer import Receiver, captured_vminfo, fake_destination  # noqa: F401 (fixture)

from harness.config import MigrationPolicy
from harness.local import local_endpoints
from harness.migrate import FlowOptions, start_guest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the test bed needs root")

STREAMS = 4


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory):
    return local_endpoints(tmp_path_factory.mktemp("streams"))


def test_four_streams_live_with_a_dirtying_workload_are_page_exact(endpoints) -> None:
    report = migrate(endpoints, make_guest("hotset:64M"), MigrationPolicy(streams=STREAMS))
    assert_verified(report)
    assert report["streams"] == STREAMS
    rounds = report["rounds"]
    assert len(rounds) >= 2 and rounds[-1]["final"]
    # Round 1 covers all of memory, whichever stream carried each page.
    first = rounds[0]
    assert (first["pages_sent"] + first["zero_pages"] + first["rewritten_pages"]
            == first["dirty_pages"])  # fmt: skip


def test_four_streams_encrypted_two_segments(endpoints) -> None:
    report = migrate(endpoints, make_guest("full", segments=2),
                     MigrationPolicy(streams=STREAMS, encrypt=True))  # fmt: skip
    assert_verified(report)
    assert report["encrypted"] is True and report["streams"] == STREAMS


def test_four_streams_stop_and_copy(endpoints) -> None:
    """Not live: the guest pauses first and all of memory goes in the final round."""
    src_ep, dst_ep = endpoints
    guest = make_guest("full")
    tag = secrets.token_hex(4)
    key = _key(src_ep, tag)
    src = start_guest(src_ep, guest, FlowOptions(), tag)
    try:
        receiver, port = _receiver(dst_ep, guest, key, tag)
        res = _tbctl_migrate(src, port, key, "--no-live", "--streams", str(STREAMS))
        assert res.returncode == 0, res.stdout + res.stderr + receiver.output()
        result = _result(res.stdout, 0)
        assert result.stats.streams == STREAMS
        receiver.wait_line("RUNNING", 30)
        ver = _verify_received(dst_ep, tag)
        assert ver["ok"], ver
    finally:
        src.stop()


def test_a_stream_killed_mid_round_fails_cleanly(endpoints) -> None:
    """The last stream dies in round 1: both sides fail, the guest runs on at the source."""
    src_ep, dst_ep = endpoints
    guest = make_guest()
    tag = secrets.token_hex(4)
    key = _key(src_ep, tag)
    src = start_guest(src_ep, guest, FlowOptions(), tag)
    try:
        receiver, port = _receiver(dst_ep, guest, key, tag)
        res = _tbctl_migrate(src, port, key, "--streams", str(STREAMS), "--fault",
                             "kill-stream")  # fmt: skip
        assert res.returncode == 1, res.stdout + res.stderr
        result = _result(res.stdout, 1)
        assert result.result == "failed" and result.guest_runs_on == "source"
        assert result.error is not None and result.error.phase == "precopy"
        # The source names a stream; which of its streams notices first is a race (the
        # destination closes them all once the killed one ends), so only the destination,
        # which sees the killed stream end first, must name that one.
        assert "on stream " in result.error.message, result.error.message
        assert receiver.wait(30) != 0
        out = receiver.output()
        assert f"stream {STREAMS - 1}" in out, out
        assert "RUNNING" not in out
        before = json.loads(src.tbctl("status").stdout)["iterations"]
        time.sleep(0.3)
        status = json.loads(src.tbctl("status").stdout)
        assert status["state"] == "running" and status["iterations"] > before
        assert src.verify()["ok"]
    finally:
        src.stop()


def _logged(rx: Receiver, text: str, timeout: float = 20.0) -> str:
    """The receiver's first output line containing text, waiting for it."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [ln for ln in rx.proc.output().splitlines() if text in ln]
        if lines:
            return lines[0]
        assert time.monotonic() < deadline, f"no {text!r} in:\n{rx.proc.output()}"
        time.sleep(0.1)


def _session(rx: Receiver, key: bytes, vminfo: bytes, nstreams: int) -> migpeer.Peer:
    """A Python source past AUTH on stream 0 that announced nstreams and described the guest."""
    peer = migpeer.Peer.connect("127.0.0.1", rx.port, key)
    caps = migpeer.CAP_AEAD | migpeer.CAP_ZERO | migpeer.CAP_STREAMS
    peer.handshake(hello=migpeer.hello_payload(migpeer.ROLE_SOURCE, caps=caps))
    peer.send(migpeer.STREAMS, struct.pack("<I", nstreams))
    peer.send(migpeer.VMINFO, vminfo)
    return peer


@pytest.fixture
def joining(endpoints):
    """A real receiver, its key, and the join connections a test opens (closed after)."""
    key = secrets.token_bytes(32)
    rx = Receiver(endpoints, key)
    conns: list[migpeer.Joiner] = []
    yield key, rx, conns
    for c in conns:
        c.peer.close()
    rx.proc.kill()


def test_foreign_and_replayed_joins_are_refused(joining, captured_vminfo: bytes) -> None:  # noqa: F811
    key, rx, conns = joining
    peer = _session(rx, key, captured_vminfo, 3)
    session = peer.transcript

    # Another session's join: refused, the receiver waits on.
    foreign = migpeer.Joiner.connect("127.0.0.1", rx.port, key)
    conns.append(foreign)
    foreign.join(secrets.token_bytes(32), 1, 3)
    assert "Refused a stream join" in _logged(rx, "another migration session")

    # A good join of stream 1, answered with JOINED under the stream's own keys.
    good = migpeer.Joiner.connect("127.0.0.1", rx.port, key)
    conns.append(good)
    sent = migpeer.join_payload(key, session, 1, 3, good.dest_hello)
    good.join(session, 1, 3, payload=sent)
    assert good.peer.recv() == (migpeer.JOINED, b"")

    # The same JOIN bytes replayed on a new connection: its proof was for the other one.
    replay = migpeer.Joiner.connect("127.0.0.1", rx.port, key)
    conns.append(replay)
    replay.join(session, 1, 3, payload=sent)
    _logged(rx, "does not hold for this connection")

    # A join proved with another key.
    forged = migpeer.Joiner.connect("127.0.0.1", rx.port, secrets.token_bytes(32))
    conns.append(forged)
    forged.join(session, 2, 3)
    deadline = time.monotonic() + 20
    while rx.proc.output().count("does not hold for this connection") < 2:
        assert time.monotonic() < deadline, rx.proc.output()
        time.sleep(0.1)

    # The real stream 2 completes the session: the destination accepts the guest.
    last = migpeer.Joiner.connect("127.0.0.1", rx.port, key)
    conns.append(last)
    last.join(session, 2, 3)
    assert last.peer.recv() == (migpeer.JOINED, b"")
    assert peer.recv() == (migpeer.ACCEPT, b"")
    assert rx.proc.alive()
    peer.close()


def test_a_stranger_connecting_while_eight_streams_join_evicts_none_of_them(
    joining, captured_vminfo: bytes  # noqa: F811
) -> None:  # fmt: skip
    """A source connects all of its streams at once; a stranger then displaces nothing of it."""
    key, rx, conns = joining
    n = 8
    peer = migpeer.Peer.connect("127.0.0.1", rx.port, key)
    caps = migpeer.CAP_AEAD | migpeer.CAP_ZERO | migpeer.CAP_STREAMS
    peer.handshake(hello=migpeer.hello_payload(migpeer.ROLE_SOURCE, caps=caps))
    peer.send(migpeer.STREAMS, struct.pack("<I", n))
    joins = [migpeer.Joiner.connect("127.0.0.1", rx.port, key) for _ in range(n - 1)]
    conns.extend(joins)
    # The stranger is served (its HELLO arrives) once whatever made room for it did.
    stranger = migpeer.Joiner.connect("127.0.0.1", rx.port, secrets.token_bytes(32))
    conns.append(stranger)
    # Its JOIN, made without the key, is refused before it could wait for a session.
    stranger.join(peer.transcript, 1, n)
    assert "during auth" in _logged(rx, "does not hold for this connection")
    for i, j in enumerate(joins, 1):
        j.join(peer.transcript, i, n)
    peer.send(migpeer.VMINFO, captured_vminfo)
    for j in joins:
        assert j.peer.recv() == (migpeer.JOINED, b"")
    assert peer.recv() == (migpeer.ACCEPT, b"")
    assert "make room" not in rx.proc.output()
    peer.close()


def test_joins_made_without_the_key_cannot_displace_a_parked_real_one(
    joining, captured_vminfo: bytes  # noqa: F811
) -> None:  # fmt: skip
    """A real join waiting for its session stays parked however many strangers' joins come."""
    key, rx, conns = joining
    peer = migpeer.Peer.connect("127.0.0.1", rx.port, key)
    caps = migpeer.CAP_AEAD | migpeer.CAP_ZERO | migpeer.CAP_STREAMS
    peer.handshake(hello=migpeer.hello_payload(migpeer.ROLE_SOURCE, caps=caps))
    peer.send(migpeer.STREAMS, struct.pack("<I", 2))
    # Stream 1 joins before stream 0 described its guest: it waits for its session.
    real = migpeer.Joiner.connect("127.0.0.1", rx.port, key)
    conns.append(real)
    real.join(peer.transcript, 1, 2)
    # More keyless joins naming that session than the destination parks.
    for _ in range(10):
        j = migpeer.Joiner.connect("127.0.0.1", rx.port, secrets.token_bytes(32))
        conns.append(j)
        j.join(peer.transcript, 1, 2)
    deadline = time.monotonic() + 20
    while rx.proc.output().count("does not hold for this connection") < 10:
        assert time.monotonic() < deadline, rx.proc.output()
        time.sleep(0.1)
    peer.send(migpeer.VMINFO, captured_vminfo)
    assert real.peer.recv() == (migpeer.JOINED, b"")
    assert peer.recv() == (migpeer.ACCEPT, b"")
    assert "make room" not in rx.proc.output()
    peer.close()


def test_a_join_with_no_session_times_out_and_a_session_still_comes_in(
    joining, captured_vminfo: bytes  # noqa: F811
) -> None:  # fmt: skip
    """Parked joins are bounded in number and time; none of them keeps the source out."""
    key, rx, conns = joining
    # More joins than the destination parks: the oldest make room, the rest time out.
    for _ in range(10):
        j = migpeer.Joiner.connect("127.0.0.1", rx.port, key)
        j.join(secrets.token_bytes(32), 1, 2)
        conns.append(j)
    assert "Refused a stream join" in _logged(rx, "to make room for a newer one")
    _logged(rx, "no session it belongs to within")
    assert rx.proc.alive()
    peer = _session(rx, key, captured_vminfo, 2)
    j = migpeer.Joiner.connect("127.0.0.1", rx.port, key)
    conns.append(j)
    j.join(peer.transcript, 1, 2)
    assert j.peer.recv() == (migpeer.JOINED, b"")
    assert peer.recv() == (migpeer.ACCEPT, b"")
    peer.close()


def test_a_missing_stream_fails_the_receive_after_the_deadline(
    joining, captured_vminfo: bytes  # noqa: F811
) -> None:  # fmt: skip
    """A proven source whose streams never all join: the receive fails in words."""
    key, rx, _ = joining
    peer = _session(rx, key, captured_vminfo, 2)
    assert rx.proc.wait(20) == 1, rx.proc.output()
    assert "not every one of the 2 streams" in rx.proc.output()
    peer.close()


def test_a_destination_without_streams_is_refused_by_the_source(endpoints) -> None:
    """A destination whose HELLO lacks the streams capability: refused before any memory."""
    src_ep = endpoints[0]
    key, key_path, listener, port = fake_destination(src_ep, "nostreams")

    def one_stream_destination() -> None:
        conns = [listener.accept()[0] for _ in range(2)]
        peer = migpeer.Peer(conns[0], key, role=migpeer.ROLE_DEST)
        with contextlib.suppress(migpeer.PeerRefused, OSError):
            peer.handshake()  # the default HELLO: no streams capability
        time.sleep(0.5)
        for c in conns:
            c.close()

    thread = threading.Thread(target=one_stream_destination, daemon=True)
    thread.start()
    src = start_guest(src_ep, make_guest(), FlowOptions(), "nostreams")
    try:
        res = _tbctl_migrate(src, port, key_path, "--streams", "2")
        thread.join(10)
        result = _result(res.stdout, res.returncode)
        assert res.returncode == 1 and result.guest_runs_on == "source"
        assert "takes one stream only" in result.error.message, result.error.message
        assert src.verify()["ok"]
    finally:
        src.stop()
        listener.close()
