"""Downtime seen from outside: ping the guest over UDP, as one pings a real guest.

The test-bed guest answers each datagram with its progress while its vCPUs run
and stays silent while paused.  The prober sends to the source and the
destination every interval; the outage is the gap between the last answer from
the source and the first answer from the destination.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

_REPLY = struct.Struct("<QQB")


@dataclass
class ProbeTarget:
    """One place the guest may answer: a label and a UDP address."""

    label: str
    host: str
    port: int


@dataclass
class ProbeResult:
    """Answers per target and the outage between them."""

    sent: int
    answers: dict[str, int]
    last_source_answer: float | None
    first_destination_answer: float | None

    @property
    def outage_ms(self) -> float | None:
        if self.last_source_answer is None or self.first_destination_answer is None:
            return None
        return max(0.0, (self.first_destination_answer - self.last_source_answer) * 1000.0)


@dataclass
class Prober:
    """Sends a probe every interval to each target until stopped (bounded by max_seconds)."""

    source: ProbeTarget
    destination: ProbeTarget
    interval: float = 0.002
    max_seconds: float = 600.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _sent: int = 0
    _answers: dict[str, list[float]] = field(default_factory=dict)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def wait_for_answer(self, label: str, timeout: float) -> bool:
        """Wait until the target labelled label has answered at least once."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._answers.get(label):
                return True
            time.sleep(self.interval)
        return False

    def stop(self) -> ProbeResult:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        src = self._answers.get(self.source.label, [])
        dst = self._answers.get(self.destination.label, [])
        first_dst = dst[0] if dst else None
        before = [t for t in src if first_dst is None or t <= first_dst]
        return ProbeResult(
            sent=self._sent,
            answers={k: len(v) for k, v in self._answers.items()},
            last_source_answer=before[-1] if before else None,
            first_destination_answer=first_dst,
        )

    def _run(self) -> None:
        targets = [self.source, self.destination]
        socks = []
        for target in targets:
            family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            socks.append((target, sock))
            self._answers[target.label] = []
        deadline = time.monotonic() + self.max_seconds
        seq = 0
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                seq += 1
                for target, sock in socks:
                    # Not listening yet, or gone: no answer is the signal.
                    with contextlib.suppress(OSError):
                        sock.sendto(struct.pack("<Q", seq), (target.host, target.port))
                self._sent += 1
                end = time.monotonic() + self.interval
                while time.monotonic() < end:
                    for target, sock in socks:
                        try:
                            data = sock.recv(64)
                        except OSError:
                            continue  # nothing yet, or refused
                        if len(data) >= _REPLY.size:
                            self._answers[target.label].append(time.monotonic())
                    time.sleep(self.interval / 4)
        finally:
            for _, sock in socks:
                sock.close()
