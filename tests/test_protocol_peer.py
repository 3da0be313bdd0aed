"""The real engine against an independent Python implementation of the protocol.

A well-behaved Python peer shows that the engine speaks the documented wire
format; a misbehaving one shows that the real receiver refuses every kind of
malformed stream on a real socket, says why, and never runs the guest.
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

from harness.config import Guest, TestbedGuest
from harness.local import local_endpoints
from harness.migrate import FlowOptions, guest_args, last_json, start_guest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the test bed needs root")

GUEST = Guest(name="p", memory=64 << 20, vcpus=1,
              testbed=TestbedGuest(workload="hotset:8M", fill="pattern"))  # fmt: skip
NPAGES = GUEST.memory // 4096


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory):
    return local_endpoints(tmp_path_factory.mktemp("peer"))


def fake_destination(ep, name: str) -> tuple[bytes, str, socket.socket, int]:
    """For a Python peer playing a real source's destination: a fresh key, its file
    (name.key) on the source's host, and a loopback listener with its port."""
    key = secrets.token_bytes(32)
    key_path = f"{ep.runner.workdir}/{name}.key"
    ep.runner.put_text(key_path, key.hex() + "\n")
    listener = socket.create_server(("127.0.0.1", 0))
    return key, key_path, listener, listener.getsockname()[1]


def capture_vminfo(endpoints, caps: int) -> bytes:
    """Act as the destination for a real source with these HELLO caps: read its
    VMINFO (its tag checked in the suite the caps choose), then refuse."""
    src_ep = endpoints[0]
    key, key_path, listener, port = fake_destination(src_ep, "cap")
    got: dict[str, bytes] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        peer = migpeer.Peer(conn, key, role=migpeer.ROLE_DEST)
        peer.handshake(migpeer.hello_payload(migpeer.ROLE_DEST, caps=caps))
        got["poly1305"] = bytes([peer.poly1305])
        mtype, body = peer.recv()
        got["type"] = bytes([mtype])
        got["vminfo"] = body
        msg = b"python peer refuses on purpose"
        peer.send(migpeer.ERROR, struct.pack("<HHIH", 3, 1, 22, len(msg)) + msg)
        time.sleep(0.5)
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    src = start_guest(src_ep, GUEST, FlowOptions(), "cap")
    try:
        res = src.tbctl("migrate", "--to", f"127.0.0.1:{port}", "--key-file", key_path,
                        check=False, timeout=60)  # fmt: skip
        thread.join(10)
        result = last_json(res.stdout, "tbctl migrate")
        assert res.returncode == 1
        assert result["error"]["side"] == "destination"
        assert "python peer refuses on purpose" in result["error"]["message"]
        assert src.verify()["ok"]
    finally:
        src.stop()
        listener.close()
    assert got["type"] == bytes([migpeer.VMINFO])
    assert got["poly1305"] == bytes([bool(caps & migpeer.CAP_POLY1305)])
    return got["vminfo"]


@pytest.fixture(scope="module")
def captured_vminfo(endpoints) -> bytes:
    """A destination without CAP_POLY1305: the source falls back to AES-256-GCM tags."""
    return capture_vminfo(endpoints, migpeer.CAP_AEAD | migpeer.CAP_ZERO)


def test_source_tags_with_poly1305_for_a_peer_that_speaks_it(endpoints, captured_vminfo) -> None:
    """The real source's VMINFO verifies as ChaCha20-Poly1305 (RFC 8439, Python's
    cryptography) once both HELLOs carry the capability, and says the same."""
    caps = migpeer.CAP_AEAD | migpeer.CAP_ZERO | migpeer.CAP_POLY1305
    assert capture_vminfo(endpoints, caps) == captured_vminfo


def test_source_refuses_an_owed_range_beyond_the_guest(endpoints) -> None:
    """A destination that speaks owed pages (0x80) answers round 1 with an OWED range past
    the guest's memory: the real source names it, sends ERROR and resumes the guest."""
    src_ep = endpoints[0]
    key, key_path, listener, port = fake_destination(src_ep, "owed")
    got: dict[str, int | bytes] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        peer = migpeer.Peer(conn, key, role=migpeer.ROLE_DEST)
        caps = migpeer.CAP_AEAD | migpeer.CAP_ZERO | migpeer.CAP_OWED
        peer.handshake(migpeer.hello_payload(migpeer.ROLE_DEST, caps=caps))
        assert peer.recv()[0] == migpeer.VMINFO
        peer.send(migpeer.ACCEPT)
        pages, types = 0, []
        while (frame := peer.recv())[0] != migpeer.ROUND_END:
            types.append(frame[0])
            if frame[0] == migpeer.PAGES_INDEX:
                pages += struct.unpack_from("<I", frame[1], 4)[0]
        got["pages"], got["types"] = pages, bytes(sorted(set(types)))
        peer.send(migpeer.OWED, struct.pack("<IIQQ", 0, 1, NPAGES, 1))
        got["answer"], got["body"] = peer.recv()
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    # An idle guest: no page changes while its tag is computed, so every frame passes.
    idle = Guest(name="o", memory=GUEST.memory, vcpus=1,
                 testbed=TestbedGuest(workload="idle", fill="pattern"))  # fmt: skip
    src = start_guest(src_ep, idle, FlowOptions(), "owed")
    try:
        res = src.tbctl("migrate", "--to", f"127.0.0.1:{port}", "--key-file", key_path,
                        check=False, timeout=60)  # fmt: skip
        thread.join(10)
        result = last_json(res.stdout, "tbctl migrate")
        assert res.returncode == 1, res.stdout
        assert result["guest_runs_on"] == "source"
        message = result["error"]["message"]
        assert "OWED entry 0" in message and f"beyond the memory segment's {NPAGES}" in message
        assert src.verify()["ok"]
    finally:
        src.stop()
        listener.close()
    # Round 1 goes uncopied: every index in a frame of its own, its data in the next.
    assert got["types"] == bytes(sorted({migpeer.ROUND_BEGIN, migpeer.PAGES_INDEX,
                                         migpeer.PAGES_DATA}))
    assert got["pages"] == NPAGES
    assert got["answer"] == migpeer.ERROR
    assert b"OWED" in bytes(got["body"])


def test_engine_vminfo_matches_the_documented_format(captured_vminfo: bytes) -> None:
    ncpus, page, nsegs = struct.unpack_from("<III", captured_vminfo)
    assert (ncpus, page, nsegs) == (1, 4096, 1)
    gpa, length = struct.unpack_from("<QQ", captured_vminfo, 12)
    assert (gpa, length) == (0, GUEST.memory)


class Receiver:
    """A real `tbvm receive` and a Python source connected to it."""

    def __init__(self, endpoints, key: bytes, *extra: str):
        ep = endpoints[1]
        tag = secrets.token_hex(4)
        key_path = f"{ep.runner.workdir}/{tag}.key"
        ep.runner.put_text(key_path, key.hex() + "\n")
        self.proc = ep.runner.spawn([
            ep.tool("tbvm"), "receive", *guest_args(GUEST), "--listen", "127.0.0.1:0",
            "--key-file", key_path, "--control", f"{ep.runner.workdir}/{tag}.ctl",
            "--timeout", "5000", *extra,
        ])  # fmt: skip
        self.port = int(self.proc.wait_line("LISTENING", 30).split()[-1])

    def refused_connection(self, reason: str) -> None:
        """Before the key is proven: that connection is refused, the receiver keeps waiting."""
        line = self.proc.wait_line("tbvm: Refused a migration connection", 20)
        assert reason in line, line
        assert self.proc.alive()
        self.proc.kill()

    def refused(self, reason: str) -> None:
        """The receiver exits 1 naming reason, and never ran the guest."""
        assert self.proc.wait(20) == 1, self.proc.output()
        out = self.proc.output()
        assert reason in out, out
        assert "RUNNING" not in out


def source_past_compat(endpoints, vminfo: bytes, caps: int = migpeer.CAP_AEAD | migpeer.CAP_ZERO):
    """A Python source with these HELLO caps, past the handshake and the compatibility
    check, and its receiver."""
    key = secrets.token_bytes(32)
    rx = Receiver(endpoints, key)
    peer = migpeer.Peer.connect("127.0.0.1", rx.port, key)
    peer.handshake(migpeer.hello_payload(migpeer.ROLE_SOURCE, caps=caps))
    peer.send(migpeer.VMINFO, vminfo)
    mtype, body = peer.recv()
    assert mtype == migpeer.ACCEPT and body == b""
    return peer, rx


@pytest.fixture
def accepted(endpoints, captured_vminfo):
    """A Python source past the handshake and the compatibility check."""
    peer, rx = source_past_compat(endpoints, captured_vminfo)
    yield peer, rx
    peer.close()


@pytest.fixture
def holding(endpoints, captured_vminfo):
    """The same, with HOLD (the switchover hook's frame) in its capabilities."""
    caps = migpeer.CAP_AEAD | migpeer.CAP_ZERO | migpeer.CAP_HOLD
    peer, rx = source_past_compat(endpoints, captured_vminfo, caps)
    yield peer, rx
    peer.close()


def test_oversized_length_refused(accepted) -> None:
    peer, rx = accepted
    peer.send_raw(struct.pack("<HHI", migpeer.PAGES, 0, 64 << 20))
    rx.refused("more than the limit")


def test_truncated_message_refused(accepted) -> None:
    peer, rx = accepted
    peer.send(migpeer.ROUND_BEGIN, migpeer.round_begin(1, False, 1)[:5])
    rx.refused("truncated")


def test_mid_frame_dribble_refused_at_the_timeout(accepted) -> None:
    """A byte every second inside one frame: refused once --timeout (5 s) has passed, not never."""
    peer, rx = accepted
    frame = peer.frame(migpeer.ROUND_BEGIN, migpeer.round_begin(1, False, 0))
    started = time.monotonic()
    peer.send_raw(frame[:8])
    for byte in frame[8:]:
        if not rx.proc.alive():
            break
        time.sleep(1)
        try:
            peer.send_raw(bytes([byte]))
        except OSError:
            break
    rx.refused("the link or the source stopped responding")
    # One deadline for the frame: 5 s and slack, not a timeout per byte.
    assert time.monotonic() - started < 9


def test_bad_page_index_refused(accepted) -> None:
    peer, rx = accepted
    peer.send(migpeer.ROUND_BEGIN, migpeer.round_begin(1, False, 1))
    peer.send(migpeer.PAGES, migpeer.pages_payload(0, [(NPAGES, b"\x01" * 4096)]))
    rx.refused("beyond the segment")


def test_disk_blocks_from_a_source_that_moves_no_disks_refused(accepted) -> None:
    """VMINFO said no disks move: a DISK_BLOCKS frame is a protocol error, never a write."""
    peer, rx = accepted
    peer.send(migpeer.ROUND_BEGIN, migpeer.round_begin(1, False, 1))
    block = struct.pack("<IIQ", 0, 1, 0) + b"\x01" * 4096
    peer.send(migpeer.DISK_BLOCKS, block)
    rx.refused("the source said it does not move its disks")


def test_page_named_twice_in_a_frame_refused(accepted) -> None:
    """Two copies of one page in one frame: a protocol error, not a link integrity failure."""
    peer, rx = accepted
    peer.send(migpeer.ROUND_BEGIN, migpeer.round_begin(1, False, 2))
    peer.send(migpeer.PAGES, migpeer.pages_payload(0, [(3, b"\x01" * 4096), (3, b"\x02" * 4096)]))
    rx.refused("not after the previous entry's page 3")


def test_bad_segment_refused(accepted) -> None:
    peer, rx = accepted
    peer.send(migpeer.ROUND_BEGIN, migpeer.round_begin(1, False, 1))
    peer.send(migpeer.PAGES, migpeer.pages_payload(5, [(0, None)]))
    rx.refused("segment that does not exist")


def test_bad_mac_refused(accepted) -> None:
    peer, rx = accepted
    frame = bytearray(peer.frame(migpeer.ROUND_BEGIN, migpeer.round_begin(1, False, 1)))
    frame[-1] ^= 0x40
    peer.send_raw(bytes(frame))
    rx.refused("integrity check")


def test_pages_outside_a_round_refused(accepted) -> None:
    peer, rx = accepted
    peer.send(migpeer.PAGES, migpeer.pages_payload(0, [(0, None)]))
    rx.refused("outside a round")


def test_round_page_count_mismatch_refused(accepted) -> None:
    peer, rx = accepted
    peer.send(migpeer.ROUND_BEGIN, migpeer.round_begin(1, False, 2))
    peer.send(migpeer.PAGES, migpeer.pages_payload(0, [(0, None), (1, b"\x02" * 4096)]))
    peer.send(migpeer.ROUND_END, migpeer.round_end(1, 3))
    rx.refused("does not match")


def test_poly1305_frames_accepted_and_checked(endpoints, captured_vminfo) -> None:
    """A Python source tagging with ChaCha20-Poly1305: the receiver verifies its frames
    (the page-count check comes after two tagged frames), and refuses a bad tag."""
    caps = migpeer.CAP_AEAD | migpeer.CAP_ZERO | migpeer.CAP_POLY1305
    peer, rx = source_past_compat(endpoints, captured_vminfo, caps)
    assert peer.poly1305
    peer.send(migpeer.ROUND_BEGIN, migpeer.round_begin(1, False, 2))
    peer.send(migpeer.PAGES, migpeer.pages_payload(0, [(0, None), (1, b"\x02" * 4096)]))
    peer.send(migpeer.ROUND_END, migpeer.round_end(1, 3))
    rx.refused("does not match")
    peer.close()
    peer, rx = source_past_compat(endpoints, captured_vminfo, caps)
    frame = bytearray(peer.frame(migpeer.ROUND_BEGIN, migpeer.round_begin(1, False, 1)))
    frame[-1] ^= 0x40
    peer.send_raw(bytes(frame))
    rx.refused("integrity check")
    peer.close()


def test_go_without_state_refused(accepted) -> None:
    peer, rx = accepted
    peer.send(migpeer.GO)
    rx.refused("unexpected GO")


def test_hold_without_the_capability_refused(accepted) -> None:
    peer, rx = accepted
    peer.send(migpeer.HOLD, migpeer.hold(1000))
    rx.refused("HOLD without the capability")


def test_hold_inside_a_round_refused(holding) -> None:
    peer, rx = holding
    peer.send(migpeer.ROUND_BEGIN, migpeer.round_begin(1, False, 1))
    peer.send(migpeer.HOLD, migpeer.hold(1000))
    rx.refused("HOLD came other than once, between rounds")


def test_hold_of_no_time_refused(holding) -> None:
    peer, rx = holding
    peer.send(migpeer.HOLD, migpeer.hold(0))
    rx.refused("HOLD asks for 0 ms")


def test_hold_lets_the_next_frame_come_later_once(holding) -> None:
    """HOLD 3 s on a 5 s timeout: silence for 6.5 s is allowed once, then 5 s again."""
    peer, rx = holding
    peer.send(migpeer.HOLD, migpeer.hold(3000))
    time.sleep(6.5)
    assert rx.proc.alive(), rx.proc.output()
    peer.send(migpeer.ROUND_BEGIN, migpeer.round_begin(1, True, 0))
    started = time.monotonic()
    rx.refused("the link or the source stopped responding")
    assert time.monotonic() - started < 9  # the I/O timeout again, not the hold's


def test_source_vanishing_is_not_success(accepted) -> None:
    peer, rx = accepted
    peer.send(migpeer.ROUND_BEGIN, migpeer.round_begin(1, False, 1))
    peer.close()
    rx.refused("closed the connection")


def test_undecodable_vminfo_gets_an_error_back(endpoints) -> None:
    """An authenticated source whose VMINFO does not decode is told why, not just cut off."""
    key = secrets.token_bytes(32)
    rx = Receiver(endpoints, key)
    peer = migpeer.Peer.connect("127.0.0.1", rx.port, key)
    peer.handshake()
    peer.send(migpeer.VMINFO, b"\x01\x00\x00")
    mtype, body = peer.recv()
    assert mtype == migpeer.ERROR
    assert "guest's description" in migpeer.decode_error(body)
    peer.close()
    rx.refused("guest's description")


def test_bad_version_refused(endpoints) -> None:
    key = secrets.token_bytes(32)
    rx = Receiver(endpoints, key)
    peer = migpeer.Peer.connect("127.0.0.1", rx.port, key)
    with pytest.raises(migpeer.PeerRefused, match="no common protocol version"):
        peer.handshake(hello=migpeer.hello_payload(migpeer.ROLE_SOURCE, vmin=7, vmax=9))
    rx.refused_connection("no common protocol version")


def test_wrong_key_refused(endpoints) -> None:
    key = secrets.token_bytes(32)
    rx = Receiver(endpoints, key)
    peer = migpeer.Peer.connect("127.0.0.1", rx.port, key)
    with pytest.raises(migpeer.PeerRefused, match="authentication failed"):
        peer.handshake(proof_key=secrets.token_bytes(32))
    rx.refused_connection("authentication failed")


def test_not_a_migration_peer_refused(endpoints) -> None:
    key = secrets.token_bytes(32)
    rx = Receiver(endpoints, key)
    peer = migpeer.Peer.connect("127.0.0.1", rx.port, key)
    peer.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    rx.refused_connection("unknown message type")


def test_stray_connection_does_not_cost_the_source_its_destination(endpoints) -> None:
    """A port scan first, then the real source: the migration still goes through."""
    key = secrets.token_bytes(32)
    rx = Receiver(endpoints, key)
    socket.create_connection(("127.0.0.1", rx.port)).close()
    rx.proc.wait_line("tbvm: Refused a migration connection", 20)
    src_ep = endpoints[0]
    key_path = f"{src_ep.runner.workdir}/stray.key"
    src_ep.runner.put_text(key_path, key.hex() + "\n")
    src = start_guest(src_ep, GUEST, FlowOptions(), "stray")
    try:
        res = src.tbctl("migrate", "--to", f"127.0.0.1:{rx.port}", "--key-file", key_path,
                        check=False, timeout=60)  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        rx.proc.wait_line("RUNNING", 30)
    finally:
        src.stop()
        rx.proc.kill()


def test_destination_with_another_seed_refuses_the_guest(endpoints) -> None:
    """The test guest's fill and seed are in the compatibility check: refused, not late."""
    key = secrets.token_bytes(32)
    rx = Receiver(endpoints, key, "--seed", "7")
    src_ep = endpoints[0]
    key_path = f"{src_ep.runner.workdir}/seed.key"
    src_ep.runner.put_text(key_path, key.hex() + "\n")
    src = start_guest(src_ep, GUEST, FlowOptions(), "seed")
    try:
        res = src.tbctl("migrate", "--to", f"127.0.0.1:{rx.port}", "--key-file", key_path,
                        check=False, timeout=60)  # fmt: skip
        result = last_json(res.stdout, "tbctl migrate")
        assert res.returncode == 1, res.stdout
        assert result["error"]["phase"] == "compat", result
        assert "seed=7" in result["error"]["message"], result
        assert src.verify()["ok"]
    finally:
        src.stop()
        rx.proc.kill()
