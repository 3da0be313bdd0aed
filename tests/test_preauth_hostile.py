"""Hostile peers that hold no key against a real `tbvm receive` on loopback.

Each attack runs while a real source migrates to the same receiver: nothing a
peer says or withholds before both AUTH proofs check may end the listener,
set its phase, or keep the legitimate source out.
"""

from __future__ import annotations

import os
import secrets
import socket
import struct
import threading
import time

import migpeer
import pytest
from test_protocol_peer import GUEST, Receiver, fake_destination

from harness.local import local_endpoints
from harness.migrate import FlowOptions, last_json, start_guest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the test bed needs root")

PHASE_SWITCHOVER, SIDE_DEST = 7, 1
LIE = b"the guest runs on the destination"


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory):
    return local_endpoints(tmp_path_factory.mktemp("hostile"))


def error_frame(phase: int, side: int, text: bytes) -> bytes:
    body = struct.pack("<HHIH", phase, side, 5, len(text)) + text
    return migpeer.HDR.pack(migpeer.ERROR, 0, len(body)) + body


def migrate_into(endpoints, rx: Receiver, key: bytes, tag: str) -> dict:
    """A real source migrates to rx; returns its result once the guest runs there."""
    src_ep = endpoints[0]
    key_path = f"{src_ep.runner.workdir}/{tag}.key"
    src_ep.runner.put_text(key_path, key.hex() + "\n")
    src = start_guest(src_ep, GUEST, FlowOptions(), tag)
    try:
        res = src.tbctl("migrate", "--to", f"127.0.0.1:{rx.port}", "--key-file", key_path,
                        check=False, timeout=60)  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr + rx.proc.output()
        rx.proc.wait_line("RUNNING", 30)
        return last_json(res.stdout, "tbctl migrate")
    finally:
        src.stop()


def test_preauth_error_frame_does_not_end_the_listener(endpoints) -> None:
    """An ERROR claiming a phase past AUTH, sent by a stranger, is refused and labelled."""
    key = secrets.token_bytes(32)
    rx = Receiver(endpoints, key)
    try:
        with socket.create_connection(("127.0.0.1", rx.port), timeout=5) as sock:
            sock.sendall(error_frame(PHASE_SWITCHOVER, SIDE_DEST, LIE))
            line = rx.proc.wait_line("tbvm: Refused a migration connection", 20)
        assert "unauthenticated peer" in line and "during handshake" in line, line
        assert rx.proc.alive()
        migrate_into(endpoints, rx, key, "errframe")
    finally:
        rx.proc.kill()


def test_source_does_not_trust_a_fake_destinations_error(endpoints) -> None:
    """A fake destination's ERROR before AUTH never becomes the source's reported outcome."""
    src_ep = endpoints[0]
    key, key_path, listener, port = fake_destination(src_ep, "fake")

    def lie() -> None:
        conn, _ = listener.accept()
        conn.sendall(error_frame(PHASE_SWITCHOVER, SIDE_DEST, LIE))
        time.sleep(1)
        conn.close()

    thread = threading.Thread(target=lie, daemon=True)
    thread.start()
    src = start_guest(src_ep, GUEST, FlowOptions(), "fake")
    try:
        res = src.tbctl("migrate", "--to", f"127.0.0.1:{port}", "--key-file", key_path,
                        check=False, timeout=60)  # fmt: skip
        result = last_json(res.stdout, "tbctl migrate")
        assert res.returncode == 1, res.stdout
        assert result["error"]["side"] != "destination", result
        assert result["error"]["phase"] == "handshake", result
        assert "unauthenticated peer" in result["error"]["message"], result
        assert src.verify()["ok"]
    finally:
        src.stop()
        listener.close()
        thread.join(5)


def test_slow_byte_peer_does_not_hold_the_destination(endpoints) -> None:
    """One byte every 2 s: cut at the handshake deadline; the real source is served meanwhile."""
    key = secrets.token_bytes(32)
    rx = Receiver(endpoints, key, "--handshake-timeout", "4000")
    stop = threading.Event()
    hello = migpeer.HDR.pack(migpeer.HELLO, 0, 48) + migpeer.hello_payload(migpeer.ROLE_SOURCE)

    def dribble() -> None:
        with socket.create_connection(("127.0.0.1", rx.port), timeout=30) as sock:
            for byte in hello:
                if stop.wait(2):
                    return
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    return

    threads = [threading.Thread(target=dribble, daemon=True) for _ in range(2)]
    try:
        started = time.monotonic()
        threads[0].start()
        time.sleep(2)
        threads[1].start()
        line = rx.proc.wait_line("tbvm: Refused a migration connection", 20)
        assert "within 4000 ms" in line, line
        # Cut at its deadline, not after the 96 s its HELLO would take.
        assert time.monotonic() - started < 8
        # The second one still dribbles while the real source migrates.
        assert threads[1].is_alive()
        migrate_into(endpoints, rx, key, "slow")
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
        rx.proc.kill()


def test_idle_flood_does_not_keep_the_source_out(endpoints) -> None:
    """20 idle connections opened first: the real migration still goes through, and soon."""
    key = secrets.token_bytes(32)
    rx = Receiver(endpoints, key)
    idle = [socket.create_connection(("127.0.0.1", rx.port), timeout=5) for _ in range(20)]
    try:
        started = time.monotonic()
        migrate_into(endpoints, rx, key, "flood")
        # Far below the 20 x 5 s a one-at-a-time receiver would need.
        assert time.monotonic() - started < 30
        assert "make room" in rx.proc.output()
    finally:
        for sock in idle:
            sock.close()
        rx.proc.kill()


def test_listen_deadline_ends_an_unused_receiver(endpoints) -> None:
    """--listen-timeout: nobody proves the key in time, the receiver exits 1 and says so."""
    rx = Receiver(endpoints, secrets.token_bytes(32), "--listen-timeout", "1500")
    started = time.monotonic()
    assert rx.proc.wait(20) == 1, rx.proc.output()
    assert time.monotonic() - started < 10
    assert "within the listen deadline (1500 ms)" in rx.proc.output()
    assert "RUNNING" not in rx.proc.output()
