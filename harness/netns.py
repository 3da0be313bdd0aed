"""The local test bed: two network-namespace "hosts" with their own sshd on this machine.

Layout (default prefix `bmig`, ranges 10.77.0.0/16 and fd4d:6967:7261::/48):

    root namespace                       namespace bmig-a            namespace bmig-b
    unreachable 10.77.0.0/16 (guard)
    unreachable fd4d:6967:7261::/48
    bridge bmig-br 10.77.0.1/24 ----- bmig-a-m == mgmt0 10.77.0.11   (sshd, hostname bmig-a)
                   fd4d:..:0::1/64 -- bmig-b-m ======================= mgmt0 10.77.0.12
                                                  mig0 10.77.1.1 ===== mig0 10.77.1.2
                                                  fd4d:..:1::1         fd4d:..:1::2

The guard routes are installed before any address, so a packet for the test bed's range
that is not on the bridge subnet is dropped here instead of going to the default route.
The namespaces have no default route: they reach only each other and the bridge.  The
migration link (mig0) can be shaped with tbf.  Each namespace runs its own sshd (its own
host key, key-only root login, a PidFile and log in the state directory), started through
`unshare --uts` so that each has its own hostname.

Everything is idempotent: `up` twice gives the same state; `down` removes every piece and
the state directory (keys, known_hosts, hosts.yaml).  Needs root.  Not thread-safe: one
`up`/`down` at a time per state directory.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from harness.config import (
    Guest,
    Host,
    HostsConfig,
    MigrationPolicy,
    SSHSettings,
    TestbedGuest,
    dump_hosts,
    load_hosts,
    parse_rate,
)
from harness.errors import HarnessError

DEFAULT_STATE_DIR = Path("/var/lib/bhyve-migration-testbed")
DEFAULT_PREFIX = "bmig"
DEFAULT_IPV4_RANGE = "10.77.0.0/16"
DEFAULT_IPV6_RANGE = "fd4d:6967:7261::/48"
SSHD = "/usr/sbin/sshd"
MGMT_IF = "mgmt0"
MIG_IF = "mig0"
SSH_PORT = 22
STATE_FILE = "testbed.json"
HOSTS_FILE = "hosts.yaml"


class TestbedError(HarnessError):
    """The test bed could not be brought up, checked or taken down."""


@dataclass(frozen=True)
class TestbedSpec:
    """What the test bed looks like: names, address ranges, state directory, shaping."""

    __test__: ClassVar[bool] = False  # not a pytest test class, despite its name

    prefix: str = DEFAULT_PREFIX
    ipv4_range: str = DEFAULT_IPV4_RANGE
    ipv6_range: str = DEFAULT_IPV6_RANGE
    state_dir: Path = DEFAULT_STATE_DIR
    bandwidth: str | None = None

    def __post_init__(self) -> None:
        if not re.match(r"^[a-z][a-z0-9]{0,9}$", self.prefix):
            raise TestbedError(
                f"test bed prefix {self.prefix!r} must be 1-10 lower-case letters or digits, "
                "starting with a letter (interface names are limited to 15 characters)"
            )
        v4, v6 = self.net4, self.net6
        if v4.prefixlen > 23:
            raise TestbedError(f"IPv4 range {v4} is too small: it needs at least a /23")
        if v6.prefixlen > 63:
            raise TestbedError(f"IPv6 range {v6} is too small: it needs at least a /63")
        if self.bandwidth is not None:
            try:
                parse_rate(self.bandwidth, "bandwidth")
            except ValueError as exc:
                raise TestbedError(str(exc)) from None
        object.__setattr__(self, "state_dir", Path(self.state_dir))

    @property
    def net4(self) -> ipaddress.IPv4Network:
        try:
            return ipaddress.IPv4Network(self.ipv4_range)
        except ValueError as exc:
            raise TestbedError(f"IPv4 range {self.ipv4_range!r}: {exc}") from None

    @property
    def net6(self) -> ipaddress.IPv6Network:
        try:
            return ipaddress.IPv6Network(self.ipv6_range)
        except ValueError as exc:
            raise TestbedError(f"IPv6 range {self.ipv6_range!r}: {exc}") from None

    @property
    def namespaces(self) -> tuple[str, str]:
        return (f"{self.prefix}-a", f"{self.prefix}-b")

    @property
    def bridge(self) -> str:
        return f"{self.prefix}-br"

    def host_veth(self, ns: str) -> str:
        """The root-namespace end of a namespace's management veth."""
        return f"{ns}-m"

    def _sub4(self, index: int) -> ipaddress.IPv4Network:
        base = int(self.net4.network_address) + (index << 8)
        return ipaddress.IPv4Network((base, 24))

    def _sub6(self, index: int) -> ipaddress.IPv6Network:
        base = int(self.net6.network_address) + (index << 64)
        return ipaddress.IPv6Network((base, 64))

    @property
    def mgmt_net4(self) -> ipaddress.IPv4Network:
        return self._sub4(0)

    @property
    def mgmt_net6(self) -> ipaddress.IPv6Network:
        return self._sub6(0)

    @property
    def mig_net4(self) -> ipaddress.IPv4Network:
        return self._sub4(1)

    @property
    def mig_net6(self) -> ipaddress.IPv6Network:
        return self._sub6(1)

    def bridge_addrs(self) -> tuple[str, str]:
        return (str(self.mgmt_net4.network_address + 1), str(self.mgmt_net6.network_address + 1))

    def mgmt_addrs(self, ns: str) -> tuple[str, str]:
        """(IPv4, IPv6) management address of a namespace host: sshd listens there."""
        i = self.namespaces.index(ns)
        return (
            str(self.mgmt_net4.network_address + 11 + i),
            str(self.mgmt_net6.network_address + 0x11 + i),
        )

    def mig_addrs(self, ns: str) -> tuple[str, str]:
        """(IPv4, IPv6) address of a namespace host on the migration link."""
        i = self.namespaces.index(ns)
        return (
            str(self.mig_net4.network_address + 1 + i),
            str(self.mig_net6.network_address + 1 + i),
        )

    # files in the state directory
    def ns_dir(self, ns: str) -> Path:
        return self.state_dir / ns

    def host_key(self, ns: str) -> Path:
        return self.ns_dir(ns) / "ssh_host_ed25519_key"

    def sshd_config(self, ns: str) -> Path:
        return self.ns_dir(ns) / "sshd_config"

    def sshd_pidfile(self, ns: str) -> Path:
        return self.ns_dir(ns) / "sshd.pid"

    def sshd_log(self, ns: str) -> Path:
        return self.ns_dir(ns) / "sshd.log"

    def workdir(self, ns: str) -> Path:
        return self.ns_dir(ns) / "work"

    @property
    def client_key(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def authorized_keys(self) -> Path:
        return self.state_dir / "authorized_keys"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def hosts_file(self) -> Path:
        return self.state_dir / HOSTS_FILE

    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE


def load_spec(state_dir: Path) -> TestbedSpec | None:
    """The spec a running test bed was brought up with (from its state file), if any."""
    path = Path(state_dir) / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise TestbedError(f"{path}: cannot read the test bed's state: {exc}") from None
    spec = data.get("spec", {})
    return TestbedSpec(
        prefix=spec.get("prefix", DEFAULT_PREFIX),
        ipv4_range=spec.get("ipv4_range", DEFAULT_IPV4_RANGE),
        ipv6_range=spec.get("ipv6_range", DEFAULT_IPV6_RANGE),
        state_dir=Path(state_dir),
        bandwidth=spec.get("bandwidth"),
    )


# --------------------------------------------------------------------------------------
# Overlap check (pure; fed with `ip -j addr` and `ip -j route show table all`)


def find_conflicts(spec: TestbedSpec, addrs: list[dict], routes: list[dict]) -> list[str]:
    """Addresses and routes on this machine that overlap the test bed's ranges.

    The test bed's own pieces (addresses on its bridge, routes through it, its guard routes)
    are not conflicts, so that `up` can run again.  Default routes are not conflicts: the
    guard route is more specific than them on purpose.
    """
    ranges: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [spec.net4, spec.net6]
    ours = {spec.bridge, *(spec.host_veth(ns) for ns in spec.namespaces)}
    found: list[str] = []
    for link in addrs:
        ifname = link.get("ifname", "?")
        if ifname in ours:
            continue
        for info in link.get("addr_info", []):
            try:
                net = ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}").network
            except (KeyError, ValueError):
                continue
            for rng in ranges:
                if net.version == rng.version and net.overlaps(rng):
                    found.append(
                        f"address {info['local']}/{info['prefixlen']} on {ifname} overlaps {rng}"
                    )
    for route in routes:
        dst = route.get("dst", "")
        if dst in ("default", "") or route.get("dev") in ours:
            continue
        try:
            net = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if net.prefixlen == 0:
            continue
        for rng in ranges:
            if net.version != rng.version or not net.overlaps(rng):
                continue
            if route.get("type") == "unreachable" and net == rng:
                continue  # our guard route, from an earlier `up`
            where = f" dev {route['dev']}" if route.get("dev") else ""
            table = f" table {route['table']}" if route.get("table") else ""
            kind = f"{route['type']} " if route.get("type") else ""
            found.append(f"route {kind}{dst}{where}{table} overlaps {rng}")
    return found


# --------------------------------------------------------------------------------------
# The test bed


@dataclass
class Piece:
    """One item of `status`: what it is, whether it is in place, details."""

    name: str
    ok: bool
    detail: str = ""


@dataclass
class Testbed:
    """Brings the test bed up and down; `ops` records every command run, in order."""

    __test__: ClassVar[bool] = False  # not a pytest test class, despite its name

    spec: TestbedSpec = field(default_factory=TestbedSpec)
    ops: list[list[str]] = field(default_factory=list)
    verbose: bool = False

    # -- helpers --------------------------------------------------------------------------

    def _run(
        self, argv: list[str], check: bool = True, record: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        if record:
            self.ops.append(list(argv))
            if self.verbose:
                print("+", shlex.join(argv), flush=True)
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
        except FileNotFoundError:
            raise TestbedError(f"test bed: command not found: {argv[0]}") from None
        except subprocess.TimeoutExpired:
            raise TestbedError(
                f"test bed: `{shlex.join(argv)}` did not finish within {timeout:.0f}s"
            ) from None
        if check and proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip() or "(no output)"
            raise TestbedError(f"test bed: `{shlex.join(argv)}` failed: {detail}")
        return proc

    def _query(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return self._run(argv, check=False, record=False)

    def _json(self, argv: list[str]) -> list[dict]:
        proc = self._run(argv, check=True, record=False)
        try:
            return json.loads(proc.stdout or "[]")
        except ValueError as exc:
            raise TestbedError(f"test bed: cannot parse `{shlex.join(argv)}`: {exc}") from None

    def _ns_exists(self, ns: str) -> bool:
        out = self._query(["ip", "netns", "list"]).stdout
        return any(line.split()[0] == ns for line in out.splitlines() if line.strip())

    def _link_exists(self, name: str, ns: str | None = None) -> bool:
        argv = ["ip", "link", "show", "dev", name]
        if ns is not None:
            argv = ["ip", "-n", ns, *argv[1:]]
        return self._query(argv).returncode == 0

    def _route_exists(self, family: str, net: str) -> bool:
        out = self._query(["ip", family, "route", "show", "type", "unreachable", net]).stdout
        return bool(out.strip())

    @staticmethod
    def require_root(action: str) -> None:
        if os.geteuid() != 0:
            raise TestbedError(
                f"testbed.{action} needs root (network namespaces, routes and sshd); "
                "run it as root, e.g. `sudo invoke testbed." + action + "`"
            )

    def _require_tools(self) -> None:
        tools = ["ip", "unshare", "ssh-keygen", "hostname", SSHD]
        if self.spec.bandwidth:
            tools.append("tc")
        missing = [t for t in tools if shutil.which(t) is None and not os.path.exists(t)]
        if missing:
            raise TestbedError(
                "test bed: missing programs: "
                + ", ".join(missing)
                + " (Debian packages: iproute2, openssh-server, util-linux, hostname)"
            )

    def check_ranges(self) -> None:
        """Refuse when the test bed's ranges overlap an address or route on this machine."""
        addrs = self._json(["ip", "-j", "addr", "show"])
        routes = self._json(["ip", "-j", "-4", "route", "show", "table", "all"])
        routes += self._json(["ip", "-j", "-6", "route", "show", "table", "all"])
        conflicts = find_conflicts(self.spec, addrs, routes)
        if conflicts:
            raise TestbedError(
                "test bed: its address ranges overlap this machine's network, so it was not "
                "started:\n  "
                + "\n  ".join(conflicts)
                + "\nchoose other ranges with --ipv4-range / --ipv6-range"
            )

    # -- up -----------------------------------------------------------------------------

    def up(self) -> Path:
        """Create whatever is missing; returns the hosts file for the two namespace hosts."""
        self.require_root("up")
        self._require_tools()
        spec = self.spec
        self.check_ranges()
        self._make_state_dir()
        self._guard_routes()  # before any address
        self._bridge()
        for ns in spec.namespaces:
            self._namespace(ns)
        self._migration_link()
        self._addresses()
        self._shaping()
        self._keys()
        for ns in spec.namespaces:
            self._sshd(ns)
        self._write_hosts_file()
        self._write_state()
        return spec.hosts_file

    def _make_state_dir(self) -> None:
        for path in (self.spec.state_dir, *(self.spec.ns_dir(ns) for ns in self.spec.namespaces)):
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, 0o700)
        for ns in self.spec.namespaces:
            self.spec.workdir(ns).mkdir(exist_ok=True)
        # sshd's privilege-separation directory; shared with any other sshd, so never removed
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

    def _guard_routes(self) -> None:
        for family, net in (("-4", self.spec.net4), ("-6", self.spec.net6)):
            if not self._route_exists(family, str(net)):
                self._run(["ip", family, "route", "add", "unreachable", str(net)])

    def _bridge(self) -> None:
        br = self.spec.bridge
        if not self._link_exists(br):
            self._run(["ip", "link", "add", br, "type", "bridge"])
        # no IPv6 autoconfiguration on the bridge beyond its own addresses
        self._run(["sysctl", "-qw", f"net.ipv6.conf.{br}.accept_ra=0"], check=False)
        self._run(["ip", "link", "set", br, "up"])

    def _namespace(self, ns: str) -> None:
        if not self._ns_exists(ns):
            self._run(["ip", "netns", "add", ns])
        self._run(["ip", "-n", ns, "link", "set", "lo", "up"])
        hv = self.spec.host_veth(ns)
        if not self._link_exists(hv):
            if self._link_exists(MGMT_IF, ns):
                self._run(["ip", "-n", ns, "link", "del", MGMT_IF])
            self._run(
                ["ip", "link", "add", hv, "type", "veth", "peer", "name", MGMT_IF, "netns", ns]
            )
        self._run(["ip", "link", "set", hv, "master", self.spec.bridge, "up"])
        self._run(["ip", "-n", ns, "link", "set", MGMT_IF, "up"])

    def _migration_link(self) -> None:
        a, b = self.spec.namespaces
        if not (self._link_exists(MIG_IF, a) and self._link_exists(MIG_IF, b)):
            for ns in (a, b):
                if self._link_exists(MIG_IF, ns):
                    self._run(["ip", "-n", ns, "link", "del", MIG_IF])
            self._run(
                [
                    "ip",
                    "-n",
                    a,
                    "link",
                    "add",
                    MIG_IF,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    MIG_IF,
                    "netns",
                    b,
                ]
            )
        for ns in (a, b):
            self._run(["ip", "-n", ns, "link", "set", MIG_IF, "up"])

    def _addresses(self) -> None:
        spec = self.spec
        b4, b6 = spec.bridge_addrs()
        self._addr(None, spec.bridge, f"{b4}/24", f"{b6}/64")
        for ns in spec.namespaces:
            m4, m6 = spec.mgmt_addrs(ns)
            self._addr(ns, MGMT_IF, f"{m4}/24", f"{m6}/64")
            g4, g6 = spec.mig_addrs(ns)
            self._addr(ns, MIG_IF, f"{g4}/24", f"{g6}/64")

    def _addr(self, ns: str | None, dev: str, v4: str, v6: str) -> None:
        base = ["ip"] if ns is None else ["ip", "-n", ns]
        self._run([*base, "-4", "addr", "replace", v4, "dev", dev])
        self._run([*base, "-6", "addr", "replace", v6, "dev", dev, "nodad"])

    def _shaping(self) -> None:
        for ns in self.spec.namespaces:
            if self.spec.bandwidth:
                rate = parse_rate(self.spec.bandwidth, "bandwidth")
                burst = max(rate // 100, 256 * 1024)
                self._run(
                    [
                        "ip",
                        "netns",
                        "exec",
                        ns,
                        "tc",
                        "qdisc",
                        "replace",
                        "dev",
                        MIG_IF,
                        "root",
                        "tbf",
                        "rate",
                        f"{rate * 8}bit",
                        "burst",
                        str(burst),
                        "latency",
                        "50ms",
                    ]
                )
            else:
                shown = self._query(
                    ["ip", "netns", "exec", ns, "tc", "qdisc", "show", "dev", MIG_IF]
                ).stdout
                if " tbf " in f" {shown} ":
                    self._run(
                        ["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", MIG_IF, "root"]
                    )

    def _keys(self) -> None:
        spec = self.spec
        if not spec.client_key.exists():
            self._run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    f"bhyve-migration-testbed@{spec.prefix}",
                    "-f",
                    str(spec.client_key),
                ]
            )
        pub = Path(f"{spec.client_key}.pub").read_text().strip()
        _write(spec.authorized_keys, pub + "\n", 0o600)
        lines = []
        for ns in spec.namespaces:
            key = spec.host_key(ns)
            if not key.exists():
                self._run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", ns, "-f", str(key)])
            keytype, blob = Path(f"{key}.pub").read_text().split()[:2]
            for addr in spec.mgmt_addrs(ns):
                lines.append(f"{addr} {keytype} {blob}")
        _write(spec.known_hosts, "\n".join(lines) + "\n", 0o644)

    def _sshd_config_text(self, ns: str) -> str:
        spec = self.spec
        m4, m6 = spec.mgmt_addrs(ns)
        strict = "yes" if _safe_for_strict_modes(spec.state_dir) else "no"
        return "\n".join(
            [
                f"# sshd of test-bed host {ns}; written by harness/netns.py",
                f"Port {SSH_PORT}",
                f"ListenAddress {m4}",
                f"ListenAddress {m6}",
                f"HostKey {spec.host_key(ns)}",
                f"PidFile {spec.sshd_pidfile(ns)}",
                f"AuthorizedKeysFile {spec.authorized_keys}",
                "PermitRootLogin prohibit-password",
                "AllowUsers root",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                f"StrictModes {strict}",
                "UseDNS no",
                "PrintMotd no",
                "X11Forwarding no",
                "AllowTcpForwarding no",
                "AllowAgentForwarding no",
                "PermitTunnel no",
                "MaxStartups 64:30:128",
                "MaxSessions 64",
                "ClientAliveInterval 15",
                "LogLevel VERBOSE",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )

    def sshd_pid(self, ns: str) -> int | None:
        """The pid of this namespace's sshd if it runs (checked against its config path)."""
        try:
            pid = int(self.spec.sshd_pidfile(ns).read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            return None
        # sshd rewrites its title ("sshd: /usr/sbin/sshd -f CONFIG ... [listener]")
        if f" {self.spec.sshd_config(ns)} ".encode() not in cmdline + b" ":
            return None
        return pid

    def _sshd(self, ns: str) -> None:
        spec = self.spec
        config = spec.sshd_config(ns)
        text = self._sshd_config_text(ns)
        changed = not config.exists() or config.read_text() != text
        if changed:
            _write(config, text, 0o600)
        pid = self.sshd_pid(ns)
        if pid is not None and not changed:
            return
        if pid is not None:
            _terminate([pid])
        self._run([SSHD, "-t", "-f", str(config)])
        script = (
            f"hostname {shlex.quote(ns)} && exec {SSHD} -f {shlex.quote(str(config))} "
            f"-E {shlex.quote(str(spec.sshd_log(ns)))}"
        )
        self._run(["ip", "netns", "exec", ns, "unshare", "--uts", "sh", "-c", script])
        address = spec.mgmt_addrs(ns)[0]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.sshd_pid(ns) is not None and _port_open(address, SSH_PORT, 0.5):
                return
            time.sleep(0.05)
        log = _tail(spec.sshd_log(ns))
        raise TestbedError(
            f"test bed: sshd in {ns} did not start listening on "
            f"{address}:{SSH_PORT}; its log says:\n{log}"
        )

    def hosts_config(self) -> HostsConfig:
        """The hosts file content describing the two namespace hosts."""
        spec = self.spec
        a, b = spec.namespaces
        hosts = {}
        for ns, roles in ((a, ["build", "source"]), (b, ["destination"])):
            hosts[ns] = Host(
                name=ns,
                address=spec.mgmt_addrs(ns)[0],
                kind="testbed",
                user="root",
                port=SSH_PORT,
                key_file=spec.client_key,
                roles=roles,
                migration_addresses=list(spec.mig_addrs(ns)),
                workdir=str(spec.workdir(ns)),
            )
        guest = Guest(
            name="tb-guest",
            memory=512 << 20,
            vcpus=2,
            testbed=TestbedGuest(workload="hotset:64M", fill="pattern", segments=2),
        )
        policy = MigrationPolicy(source=a, destination=b, guest=guest.name, timeout=300.0)
        if spec.bandwidth:
            policy.bandwidth = None  # the link itself is shaped; no extra engine cap
        ssh = SSHSettings(
            known_hosts=spec.known_hosts,
            connect_timeout=5.0,
            command_timeout=300.0,
            transfer_timeout=120.0,
            keepalive=5,
        )
        return HostsConfig(
            path=spec.hosts_file, ssh=ssh, hosts=hosts, guests={guest.name: guest}, migration=policy
        )

    def _write_hosts_file(self) -> None:
        text = "# The local test bed's two hosts; written by `invoke testbed.up`.\n"
        text += dump_hosts(self.hosts_config())
        _write(self.spec.hosts_file, text, 0o644)
        load_hosts(self.spec.hosts_file)  # it must validate

    def _write_state(self) -> None:
        spec = self.spec
        data = {
            "spec": {
                "prefix": spec.prefix,
                "ipv4_range": spec.ipv4_range,
                "ipv6_range": spec.ipv6_range,
                "bandwidth": spec.bandwidth,
            },
            "namespaces": list(spec.namespaces),
            "bridge": spec.bridge,
            "hosts_file": str(spec.hosts_file),
        }
        _write(spec.state_file, json.dumps(data, indent=2) + "\n", 0o644)

    # -- down ---------------------------------------------------------------------------

    def down(self) -> list[str]:
        """Remove every piece the test bed made; returns what was removed."""
        self.require_root("down")
        spec = self.spec
        removed: list[str] = []
        for ns in spec.namespaces:
            if self._ns_exists(ns):
                pids = self._ns_pids(ns)
                if pids:
                    _terminate(pids)
                    removed.append(f"{len(pids)} process(es) in {ns}")
                self._run(["ip", "netns", "del", ns])
                removed.append(f"namespace {ns}")
            else:
                pid = self.sshd_pid(ns)
                if pid is not None:
                    _terminate([pid])
                    removed.append(f"sshd of {ns}")
            hv = spec.host_veth(ns)
            # Deleting the namespace takes its veth peer with it, asynchronously:
            # the link may vanish between the check and the delete.
            if self._link_exists(hv):
                proc = self._run(["ip", "link", "del", hv], check=False)
                if proc.returncode != 0 and self._link_exists(hv):
                    raise TestbedError(f"test bed: cannot delete link {hv}: {proc.stderr.strip()}")
                removed.append(f"link {hv}")
        if self._link_exists(spec.bridge):
            self._run(["ip", "link", "del", spec.bridge])
            removed.append(f"bridge {spec.bridge}")
        for family, net in (("-4", spec.net4), ("-6", spec.net6)):
            if self._route_exists(family, str(net)):
                self._run(["ip", family, "route", "del", "unreachable", str(net)])
                removed.append(f"guard route {net}")
        if spec.state_dir.exists():
            shutil.rmtree(spec.state_dir)
            removed.append(f"state {spec.state_dir}")
        return removed

    def _ns_pids(self, ns: str) -> list[int]:
        out = self._query(["ip", "netns", "pids", ns]).stdout
        return [int(p) for p in out.split() if p.isdigit()]

    # -- status -------------------------------------------------------------------------

    def status(self) -> list[Piece]:
        """Each piece of the test bed and whether it is in place."""
        spec = self.spec
        pieces: list[Piece] = []
        for family, net in (("-4", spec.net4), ("-6", spec.net6)):
            pieces.append(
                Piece(f"guard route unreachable {net}", self._route_exists(family, str(net)))
            )
        br_ok = self._link_exists(spec.bridge)
        pieces.append(
            Piece(f"bridge {spec.bridge}", br_ok, " ".join(spec.bridge_addrs()) if br_ok else "")
        )
        for ns in spec.namespaces:
            exists = self._ns_exists(ns)
            pieces.append(Piece(f"namespace {ns}", exists))
            if not exists:
                continue
            for dev, addrs in ((MGMT_IF, spec.mgmt_addrs(ns)), (MIG_IF, spec.mig_addrs(ns))):
                have = self._ns_addrs(ns, dev)
                ok = all(a in have for a in addrs)
                pieces.append(Piece(f"{ns} {dev}", ok, " ".join(sorted(have)) or "no addresses"))
            shown = self._query(
                ["ip", "netns", "exec", ns, "tc", "qdisc", "show", "dev", MIG_IF]
            ).stdout
            tbf = re.search(r"tbf .*?rate (\S+)", shown)
            want = bool(spec.bandwidth)
            pieces.append(
                Piece(
                    f"{ns} {MIG_IF} shaping",
                    bool(tbf) == want,
                    f"tbf rate {tbf.group(1)}" if tbf else "unshaped",
                )
            )
            pid = self.sshd_pid(ns)
            addr = spec.mgmt_addrs(ns)[0]
            listening = pid is not None and _port_open(addr, SSH_PORT, 1.0)
            hostname = self._hostname(pid) if pid else ""
            pieces.append(
                Piece(
                    f"{ns} sshd",
                    listening,
                    f"pid {pid}, {addr}:{SSH_PORT}, hostname {hostname}" if pid else "not running",
                )
            )
        for path in (spec.client_key, spec.known_hosts, spec.hosts_file):
            pieces.append(Piece(f"file {path}", path.exists()))
        return pieces

    def _ns_addrs(self, ns: str, dev: str) -> set[str]:
        proc = self._query(["ip", "-n", ns, "-j", "addr", "show", "dev", dev])
        try:
            links = json.loads(proc.stdout or "[]")
        except ValueError:
            return set()
        return {
            i["local"]
            for link in links
            for i in link.get("addr_info", [])
            if i.get("scope") == "global"
        }

    def _hostname(self, pid: int) -> str:
        proc = self._query(["nsenter", "-t", str(pid), "-u", "hostname"])
        return proc.stdout.strip() if proc.returncode == 0 else "?"


# --------------------------------------------------------------------------------------
# small helpers


def _write(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _safe_for_strict_modes(path: Path) -> bool:
    """True when every directory up to / is root-owned and not group/world-writable
    (sshd's StrictModes would otherwise refuse the authorized_keys file in it)."""
    path = path.resolve()
    for part in (path, *path.parents):
        try:
            st = part.stat()
        except OSError:
            return False
        if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return False
    return True


def _port_open(address: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def _terminate(pids: list[int], grace: float = 3.0) -> None:
    """SIGTERM the given pids, then SIGKILL whatever is left after grace seconds."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    left = list(pids)
    while left and time.monotonic() < deadline:
        left = [p for p in left if _alive(p)]
        time.sleep(0.05)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False


def _tail(path: Path, lines: int = 10) -> str:
    try:
        return "\n".join(path.read_text().splitlines()[-lines:]) or "(empty)"
    except OSError:
        return "(no log)"

