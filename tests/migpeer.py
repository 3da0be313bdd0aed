"""An independent Python implementation of the migration wire protocol, for tests.

It speaks to the real engine (tbvm receive, tbctl migrate) over TCP: it can
act correctly, so that the engine is seen to interoperate with a second
implementation of the documented format, and it can misbehave on purpose
(truncated, oversized, out-of-range, wrong version, wrong key, altered
frames) so that the engine's refusals are tested on real sockets.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

MAGIC = b"BHYVEMIG"
HDR = struct.Struct("<HHI")
TAG_LEN = 16
PAGE = 4096
PAGE_ZERO = 1 << 63
CAP_AEAD, CAP_ZERO, CAP_HOLD, CAP_WANT_ENCRYPT = 0x1, 0x2, 0x10, 0x80000000
CAP_STREAMS = 0x20  # destination: takes several streams; source: STREAMS follows AUTH
CAP_POLY1305 = 0x40  # both sides: frames without encryption tagged with ChaCha20-Poly1305
CAP_OWED = 0x80  # both sides: a live frame that fails its tag is owed, sent again
ROLE_SOURCE, ROLE_DEST = 0, 1
DIR_S2D, DIR_D2S = 0x53324400, 0x44325300

(HELLO, AUTH, ERROR, VMINFO, ACCEPT, ROUND_BEGIN, PAGES, ROUND_END, STATE, READY, GO,
 RUNNING, ZERO_RANGES, DISK_BLOCKS, DISK_ZERO) = range(1, 16)  # fmt: skip
HOLD = 16
STREAMS, JOIN, JOINED, PART_END = 17, 18, 19, 20
OWED, OWED_END, PAGES_INDEX, PAGES_DATA = 21, 22, 23, 24
STREAM_LABEL = b"bhyve-mig v1 stream"


def hello_payload(role: int, vmin: int = 1, vmax: int = 1, caps: int = CAP_AEAD | CAP_ZERO,
                  magic: bytes = MAGIC, nonce: bytes | None = None) -> bytes:  # fmt: skip
    return magic + struct.pack("<HHHHI", role, vmin, vmax, 0, caps) + (nonce or os.urandom(32))


def _prf(key: bytes, label: str, transcript: bytes) -> bytes:
    return hmac.new(key, label.encode() + transcript, hashlib.sha256).digest()


@dataclass
class Peer:
    """One end of a migration connection, driven step by step by a test."""

    sock: socket.socket
    key: bytes
    role: int = ROLE_SOURCE
    encrypt: bool = False
    poly1305: bool = False  # both HELLOs have CAP_POLY1305
    tx_seq: int = 0
    rx_seq: int = 0
    keys: dict[str, bytes] = field(default_factory=dict)
    transcript: bytes = b""  # the session's, once the handshake ran

    @classmethod
    def connect(cls, host: str, port: int, key: bytes, timeout: float = 10.0) -> Peer:
        sock = socket.create_connection((host, port), timeout=timeout)
        return cls(sock, key)

    # -- framing ---------------------------------------------------------------
    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frame(self, mtype: int, payload: bytes, keyed: bool = True, flags: int = 0,
              length: int | None = None) -> bytes:  # fmt: skip
        hdr = HDR.pack(mtype, flags, len(payload) if length is None else length)
        if not keyed or not self.keys:
            return hdr + payload
        txkey, direction = self._tx()
        iv = struct.pack("<IQ", direction, self.tx_seq)
        self.tx_seq += 1
        aead = self._aead(txkey)
        if self.encrypt:
            sealed = aead.encrypt(iv, payload, hdr)
            return hdr + sealed
        return hdr + payload + aead.encrypt(iv, b"", hdr + payload)

    def send(self, mtype: int, payload: bytes = b"", keyed: bool = True) -> None:
        self.send_raw(self.frame(mtype, payload, keyed))

    def _aead(self, key: bytes) -> AESGCM | ChaCha20Poly1305:
        if self.poly1305 and not self.encrypt:
            return ChaCha20Poly1305(key)
        return AESGCM(key)

    def _tx(self) -> tuple[bytes, int]:
        if self.role == ROLE_SOURCE:
            return self.keys["s2d"], DIR_S2D
        return self.keys["d2s"], DIR_D2S

    def _rx(self) -> tuple[bytes, int]:
        if self.role == ROLE_SOURCE:
            return self.keys["d2s"], DIR_D2S
        return self.keys["s2d"], DIR_S2D

    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("peer closed the connection")
            buf += chunk
        return buf

    def recv(self, keyed: bool = True) -> tuple[int, bytes]:
        mtype, _flags, length = HDR.unpack(self._read(HDR.size))
        hdr = HDR.pack(mtype, _flags, length)
        body = self._read(length)
        if not keyed or not self.keys:
            return mtype, body
        tag = self._read(TAG_LEN)
        rxkey, direction = self._rx()
        iv = struct.pack("<IQ", direction, self.rx_seq)
        self.rx_seq += 1
        aead = self._aead(rxkey)
        if self.encrypt:
            return mtype, aead.decrypt(iv, body + tag, hdr)
        aead.decrypt(iv, tag, hdr + body)  # raises InvalidTag if altered
        return mtype, body

    # -- handshake -------------------------------------------------------------
    def handshake(self, hello: bytes | None = None, proof_key: bytes | None = None) -> None:
        """HELLO both ways, derive keys, AUTH both ways (a wrong proof_key fails it)."""
        mine = hello or hello_payload(self.role)
        self.send(HELLO, mine, keyed=False)
        mtype, theirs = self.recv(keyed=False)
        if mtype == ERROR:
            raise PeerRefused(decode_error(theirs))
        src, dst = (mine, theirs) if self.role == ROLE_SOURCE else (theirs, mine)
        transcript = hashlib.sha256(src + dst).digest()
        self.transcript = transcript
        key = proof_key or self.key
        proofs = {
            "src": _prf(key, "bhyve-mig v1 source proof", transcript),
            "dst": _prf(key, "bhyve-mig v1 destination proof", transcript),
        }
        their_caps = struct.unpack_from("<I", theirs, 16)[0]
        my_caps = struct.unpack_from("<I", mine, 16)[0]
        self.encrypt = bool((their_caps | my_caps) & CAP_WANT_ENCRYPT)
        self.poly1305 = bool(their_caps & my_caps & CAP_POLY1305)
        self.send(AUTH, proofs["src" if self.role == ROLE_SOURCE else "dst"], keyed=False)
        mtype, body = self.recv(keyed=False)
        if mtype == ERROR:
            raise PeerRefused(decode_error(body))
        if not hmac.compare_digest(body, proofs["dst" if self.role == ROLE_SOURCE else "src"]):
            # Keys differ: the engine, having checked our proof, says why it refuses.
            mtype, body = self.recv(keyed=False)
            raise PeerRefused(decode_error(body) if mtype == ERROR else "proof mismatch")
        self.keys = {
            "s2d": _prf(self.key, "bhyve-mig v1 source to destination", transcript),
            "d2s": _prf(self.key, "bhyve-mig v1 destination to source", transcript),
        }

    def close(self) -> None:
        self.sock.close()


class PeerRefused(Exception):
    """The engine sent ERROR; str() is its message."""


def decode_error(body: bytes) -> str:
    phase, side, code, n = struct.unpack_from("<HHIH", body)
    return body[10 : 10 + n].decode("ascii", "replace")


def encode_vminfo(ncpus: int, segs: list[tuple[int, int]], sections: list[tuple[str, int]],
                  features: str) -> bytes:  # fmt: skip
    out = struct.pack("<III", ncpus, PAGE, len(segs))
    for gpa, length in segs:
        out += struct.pack("<QQ", gpa, length)
    out += struct.pack("<I", len(sections))
    for name, version in sections:
        out += bytes([len(name)]) + name.encode() + struct.pack("<I", version)
    # No disks: disk_flags 0, ndisks 0.
    return out + bytes([len(features)]) + features.encode() + struct.pack("<II", 0, 0)


def round_begin(index: int, final: bool, pages: int) -> bytes:
    return struct.pack("<IBQ", index, int(final), pages)


def round_end(index: int, pages: int) -> bytes:
    return struct.pack("<IQ", index, pages)


def pages_payload(seg: int, pages: list[tuple[int, bytes | None]]) -> bytes:
    """PAGES: (index, data) pairs; data None sends a zero marker."""
    idx = b"".join(struct.pack("<Q", i | (PAGE_ZERO if d is None else 0)) for i, d in pages)
    data = b"".join(d for _, d in pages if d is not None)
    return struct.pack("<II", seg, len(pages)) + idx + data


def hold(ms: int) -> bytes:
    return struct.pack("<I", ms)
def stream_transcript(session: bytes, index: int, dest_hello: bytes) -> bytes:
    """A further stream's transcript: the session's, its index, its connection's HELLO."""
    return hashlib.sha256(session + STREAM_LABEL + struct.pack("<I", index) + dest_hello).digest()


def join_payload(key: bytes, session: bytes, index: int, nstreams: int, dest_hello: bytes) -> bytes:
    """JOIN for stream index of nstreams, its proof made for the connection that sent dest_hello."""
    proof = _prf(key, "bhyve-mig v1 source proof", stream_transcript(session, index, dest_hello))
    return struct.pack("<II", index, nstreams) + session + proof


@dataclass
class Joiner:
    """A further stream's connection: the destination's HELLO read, JOIN not yet sent."""

    peer: Peer
    dest_hello: bytes

    @classmethod
    def connect(cls, host: str, port: int, key: bytes, timeout: float = 10.0) -> Joiner:
        peer = Peer.connect(host, port, key, timeout)
        mtype, hello = peer.recv(keyed=False)
        if mtype != HELLO:
            raise PeerRefused(f"expected HELLO, got type {mtype}")
        return cls(peer, hello)

    def join(self, session: bytes, index: int, nstreams: int, payload: bytes | None = None,
             encrypt: bool = False) -> None:  # fmt: skip
        """Send JOIN (payload, if given, as is) and key the stream as the engine would."""
        self.peer.send(JOIN, payload or join_payload(self.peer.key, session, index, nstreams,
                                                     self.dest_hello), keyed=False)  # fmt: skip
        t = stream_transcript(session, index, self.dest_hello)
        self.peer.encrypt = encrypt
        self.peer.keys = {
            "s2d": _prf(self.peer.key, "bhyve-mig v1 source to destination", t),
            "d2s": _prf(self.peer.key, "bhyve-mig v1 destination to source", t),
        }
