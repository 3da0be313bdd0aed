"""The hosts file: hosts, guests and migration policy, validated with located errors.

A hosts file is YAML.  Every problem is reported as ``FILE:LINE: problem`` so that a user
can go straight to it: unknown keys, wrong types, bad sizes or rates, a host named in the
migration section that does not exist, a key file that cannot be read.  The file is read
with PyYAML's composer, which keeps the position of every node, and converted here by hand
into the dataclasses below.  See examples/hosts-freebsd-lab.yaml for a commented example.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml
from yaml.constructor import SafeConstructor

from harness.errors import ConfigError
from harness.switchover import HOOK_TIMEOUT_MAX_S
from harness.units import parse_size

HOST_KINDS = ("freebsd", "testbed")
HOST_ROLES = ("build", "source", "destination")
BOOT_METHODS = ("auto", "bectl", "nextboot")
DEFAULT_MIGRATION_PORT = 24981
MAX_STREAMS = 8  # the engine's MIG_STREAMS_MAX

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(bit|bps|b/s|b|/s)?\s*$", re.IGNORECASE)
_RATE_SCALE = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}
_WORKLOAD_RE = re.compile(r"^(idle|full|hotset)(?::([^@]+))?(?:@(\d+))?$")


def parse_rate(text: str | int, what: str = "rate") -> int:
    """Return bytes per second for '1gbit', '500mbit', '100MB/s', '119M' or a plain integer.

    Suffixes ending in 'bit' or 'bps' are bits per second (decimal, as tc counts them);
    'B', 'B/s' or no unit after a K/M/G prefix are bytes per second (decimal).
    """
    if isinstance(text, bool):
        raise ValueError(f"{what}: {text!r} is not a rate such as 1gbit or 100MB/s")
    if isinstance(text, int):
        if text <= 0:
            raise ValueError(f"{what}: {text} must be positive")
        return text
    match = _RATE_RE.match(str(text))
    if not match:
        raise ValueError(f"{what}: {text!r} is not a rate such as 1gbit or 100MB/s")
    number = float(match.group(1)) * _RATE_SCALE[match.group(2).lower()]
    unit = match.group(3) or ""
    is_bits = unit.lower() in ("bit", "bps") or unit == "b"
    value = int(number / 8) if is_bits else int(number)
    if value <= 0:
        raise ValueError(f"{what}: {text!r} must be positive")
    return value


@dataclass
class SSHSettings:
    """How the harness talks SSH to every host in the file."""

    known_hosts: Path
    connect_timeout: float = 10.0
    command_timeout: float = 600.0
    transfer_timeout: float = 600.0
    keepalive: int = 15


@dataclass
class FreeBSDHost:
    """Settings of a real FreeBSD machine (kind `freebsd`)."""

    src_dir: str = "/usr/src"
    kernel_config: str = "BHYVEMIG"
    base_kernel_config: str = "GENERIC"
    jobs: int | None = None
    boot: str = "auto"
    boot_environment: str = "bhyvemig"
    obj_dir: str = "/usr/obj"
    log_dir: str = "/var/log/bhyvemig"
    vm_dir: str = "/vm"


@dataclass
class Host:
    """One machine the harness drives over SSH."""

    name: str
    address: str
    kind: str
    user: str = "root"
    port: int = 22
    key_file: Path | None = None
    roles: list[str] = field(default_factory=list)
    migration_addresses: list[str] = field(default_factory=list)
    workdir: str = "/var/tmp/bhyvemig"
    freebsd: FreeBSDHost | None = None
    line: int = field(default=0, compare=False)

    @property
    def migration_address(self) -> str:
        """The address the destination listens on for migration data."""
        return self.migration_addresses[0] if self.migration_addresses else self.address


@dataclass
class FreeBSDGuest:
    """A bhyve guest: disk image, device slots and extra bhyve config keys."""

    disk: str | None = None
    devices: list[str] = field(default_factory=list)
    config: dict[str, str] = field(default_factory=dict)
    bootrom: str | None = None
    wired: bool = False


@dataclass
class TestbedGuest:
    """A test-bed guest: the workload its vCPU threads run.

    workload: `idle`, `full` or `hotset:SIZE`, optionally `@RATE` (pages/s per vCPU);
    fill: initial memory, `pattern` (every page non-zero) or `zero`; rate: pages/s per vCPU
    (the same as `@RATE`); dma_rate: writes/s of the tb-dma device, which writes guest memory
    past the dirty tracker and reports its writes in the device write log (0: no device);
    dma_unlogged: test-only, `running` or `drain` leaves those writes out of that log;
    disk: bytes of the tb-disk device's image (0: no disk), one file per guest and host,
    written while the guest runs (disk_hot: its hot set; disk_rate: block writes/s; 0 for
    tbvm's defaults; disk_prefill: the source's image starts fully written, as if the
    sweep had covered it once); disk_image: one image path both hosts open (shared
    storage), else each host has its own in its work directory; lazy_memory: the
    destination does not fault its memory in before the stream (bhyve without -S), so a
    guest may be larger than RAM."""

    __test__: ClassVar[bool] = False  # a name pytest would otherwise try to collect

    workload: str = "hotset:64M"
    fill: str = "pattern"
    segments: int = 1
    rate: int | None = None
    dma_rate: int = 0
    dma_unlogged: str | None = None
    disk: int = 0
    disk_hot: int = 0
    disk_rate: int = 0
    disk_image: str | None = None
    disk_prefill: bool = False
    lazy_memory: bool = False


@dataclass
class Guest:
    """A virtual machine to migrate."""

    name: str
    memory: int
    vcpus: int = 1
    freebsd: FreeBSDGuest | None = None
    testbed: TestbedGuest | None = None
    line: int = field(default=0, compare=False)


@dataclass
class MigrationPolicy:
    """Which guest goes where, and the round policy the engine follows."""

    source: str | None = None
    destination: str | None = None
    guest: str | None = None
    port: int = DEFAULT_MIGRATION_PORT
    downtime_limit_ms: int = 300
    max_rounds: int = 30
    fixed_rounds: int | None = None
    bandwidth: int | None = None
    encrypt: bool = False
    auto_throttle: bool = True
    timeout: float = 600.0
    # A command the harness runs while the guest is paused before the switchover
    # (harness.switchover), and how long it may take before the migration rolls back.
    switchover_hook: str | None = None
    switchover_timeout: float = 60.0
    disks: bool = False  # move the guest's disks too (no shared storage)
    streams: int = 1  # connections memory moves over (MIG_STREAMS_MAX: 8)


@dataclass
class HostsConfig:
    """A validated hosts file."""

    path: Path
    ssh: SSHSettings
    hosts: dict[str, Host]
    guests: dict[str, Guest]
    migration: MigrationPolicy

    def host(self, name: str) -> Host:
        try:
            return self.hosts[name]
        except KeyError:
            known = ", ".join(self.hosts) or "none"
            raise ConfigError(f"{self.path}: no host named {name!r} (hosts: {known})") from None

    def hosts_with_role(self, role: str) -> list[Host]:
        return [h for h in self.hosts.values() if role in h.roles]

    def migration_pair(self) -> tuple[Host, Host]:
        """The source and destination: the migration section's, else the hosts'
        `source`/`destination` roles, else the first two hosts in file order."""
        hosts = list(self.hosts.values())
        src = self.migration.source or next(
            (h.name for h in hosts if "source" in h.roles), hosts[0].name if hosts else None
        )
        dst = self.migration.destination or next(
            (h.name for h in hosts if "destination" in h.roles and h.name != src),
            next((h.name for h in hosts if h.name != src), None),
        )
        if src is None or dst is None:
            raise ConfigError(f"{self.path}: a migration needs two hosts")
        return self.host(src), self.host(dst)

    def guest(self, name: str | None = None) -> Guest:
        """The named guest, else the migration section's, else the only/first one."""
        name = name or self.migration.guest
        if name is None:
            if not self.guests:
                raise ConfigError(f"{self.path}: no guests defined")
            return next(iter(self.guests.values()))
        try:
            return self.guests[name]
        except KeyError:
            known = ", ".join(self.guests) or "none"
            raise ConfigError(f"{self.path}: no guest named {name!r} (guests: {known})") from None


# --------------------------------------------------------------------------------------
# Reading YAML nodes with their positions


class _Reader:
    """Turns composed YAML nodes into Python values, raising located ConfigErrors."""

    def __init__(self, path: Path, check_files: bool = True):
        self.path = path
        self.check_files = check_files
        self._scalars = SafeConstructor()

    def error(self, node: yaml.Node | None, problem: str) -> ConfigError:
        line = node.start_mark.line + 1 if node is not None else 1
        return ConfigError(f"{self.path}:{line}: {problem}")

    def scalar(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            return None
        return self._scalars.construct_object(node)

    def mapping(
        self, node: yaml.Node, what: str, known: tuple[str, ...] | None
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """Keys -> (key node, value node); unknown and duplicate keys are errors."""
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} must be a mapping (key: value lines)")
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = self.scalar(key_node)
            if not isinstance(key, str):
                raise self.error(key_node, f"{what}: key {key!r} must be a string")
            if key in out:
                first = out[key][0].start_mark.line + 1
                raise self.error(key_node, f"{what}: duplicate key {key!r} (first on line {first})")
            if known is not None and key not in known:
                raise self.error(
                    key_node, f"{what}: unknown key {key!r} (known: {', '.join(known)})"
                )
            out[key] = (key_node, value_node)
        return out

    def typed(self, node: yaml.Node, what: str, kind: type | tuple[type, ...]) -> Any:
        value = self.scalar(node)
        if isinstance(value, bool) and bool not in _as_tuple(kind):
            value = None
        if not isinstance(value, kind):
            names = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in _as_tuple(kind))
            shown = _show(node)
            raise self.error(node, f"{what} must be {names}, not {shown}")
        return value

    def string(self, node: yaml.Node, what: str) -> str:
        return self.typed(node, what, str)

    def integer(self, node: yaml.Node, what: str, minimum: int = 0, maximum: int | None = None):
        value = self.typed(node, what, int)
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            raise self.error(node, f"{what} must be at least {minimum}{upper}, not {value}")
        return value

    def number(self, node: yaml.Node, what: str) -> float:
        value = self.typed(node, what, (int, float))
        if value <= 0:
            raise self.error(node, f"{what} must be positive, not {value}")
        return float(value)

    def boolean(self, node: yaml.Node, what: str) -> bool:
        return self.typed(node, what, bool)

    def size(self, node: yaml.Node, what: str) -> int:
        value = self.scalar(node)
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise self.error(node, f"{what} must be a size such as 256M or 2G, not {_show(node)}")
        try:
            size = parse_size(value, what)
        except ValueError as exc:
            raise self.error(node, str(exc)) from None
        if size <= 0:
            raise self.error(node, f"{what} must be more than zero")
        return size

    def rate(self, node: yaml.Node, what: str) -> int:
        value = self.scalar(node)
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise self.error(node, f"{what} must be a rate such as 1gbit, not {_show(node)}")
        try:
            return parse_rate(value, what)
        except ValueError as exc:
            raise self.error(node, str(exc)) from None

    def string_list(self, node: yaml.Node, what: str) -> list[str]:
        if isinstance(node, yaml.ScalarNode):
            return [self.string(node, what)]
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, f"{what} must be a list of strings")
        return [self.string(item, f"{what} item") for item in node.value]

    def file_path(self, node: yaml.Node, what: str) -> Path:
        text = self.string(node, what)
        path = Path(os.path.expanduser(text))
        if not path.is_absolute():
            path = self.path.parent / path
        return path

    def readable_file(self, node: yaml.Node, what: str) -> Path:
        path = self.file_path(node, what)
        if not self.check_files:
            return path
        if not path.is_file():
            raise self.error(node, f"{what} {path} does not exist or is not a file")
        if not os.access(path, os.R_OK):
            raise self.error(node, f"{what} {path} is not readable by this user")
        try:
            with open(path, "rb") as handle:
                handle.read(1)
        except OSError as exc:
            raise self.error(node, f"{what} {path} cannot be read: {exc.strerror}") from None
        return path


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _show(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node.tag.endswith(":null"):
        return "empty"
    return repr(node.value)


# --------------------------------------------------------------------------------------
# Sections


_TOP_KEYS = ("version", "ssh", "hosts", "guests", "migration")
_SSH_KEYS = ("known_hosts", "connect_timeout", "command_timeout", "transfer_timeout", "keepalive")
_HOST_KEYS = (
    "address", "port", "user", "key_file", "kind", "roles", "migration_address",
    "migration_addresses", "workdir", "freebsd",
)  # fmt: skip
_FREEBSD_HOST_KEYS = (
    "src_dir", "kernel_config", "base_kernel_config", "jobs", "boot", "boot_environment",
    "obj_dir", "log_dir", "vm_dir",
)  # fmt: skip
_GUEST_KEYS = ("memory", "vcpus", "freebsd", "testbed")
_FREEBSD_GUEST_KEYS = ("disk", "devices", "config", "bootrom", "wired")
_TESTBED_GUEST_KEYS = (
    "workload", "fill", "segments", "rate", "dma_rate", "dma_unlogged", "disk", "disk_hot",
    "disk_rate", "disk_image", "disk_prefill", "lazy_memory",
)  # fmt: skip
_DMA_UNLOGGED = ("running", "drain")
_MIGRATION_KEYS = (
    "source", "destination", "guest", "port", "downtime_limit_ms", "max_rounds",
    "fixed_rounds", "bandwidth", "encrypt", "auto_throttle", "timeout", "switchover_hook",
    "switchover_timeout", "disks",
    "fixed_rounds", "bandwidth", "encrypt", "auto_throttle", "timeout", "streams",
)  # fmt: skip
_FILLS = ("pattern", "zero")


def _parse_ssh(r: _Reader, node: yaml.Node | None, default_known_hosts: Path) -> SSHSettings:
    settings = SSHSettings(known_hosts=default_known_hosts)
    if node is None:
        if r.check_files and not default_known_hosts.is_file():
            raise r.error(
                None,
                f"no ssh.known_hosts given and {default_known_hosts} does not exist; "
                "host keys are always checked",
            )
        return settings
    for key, (_, value) in r.mapping(node, "ssh", _SSH_KEYS).items():
        what = f"ssh.{key}"
        if key == "known_hosts":
            settings.known_hosts = r.readable_file(value, what)
        elif key == "keepalive":
            settings.keepalive = r.integer(value, what, minimum=0)
        else:
            setattr(settings, key, r.number(value, what))
    return settings


def _parse_freebsd_host(r: _Reader, node: yaml.Node, what: str) -> FreeBSDHost:
    out = FreeBSDHost()
    for key, (_, value) in r.mapping(node, what, _FREEBSD_HOST_KEYS).items():
        name = f"{what}.{key}"
        if key == "jobs":
            out.jobs = r.integer(value, name, minimum=1)
        elif key == "boot":
            boot = r.string(value, name)
            if boot not in BOOT_METHODS:
                raise r.error(value, f"{name} must be one of {', '.join(BOOT_METHODS)}")
            out.boot = boot
        elif key in ("kernel_config", "base_kernel_config", "boot_environment"):
            text = r.string(value, name)
            if not _NAME_RE.match(text):
                raise r.error(value, f"{name} {text!r} must be a plain name (letters, digits)")
            setattr(out, key, text)
        else:
            text = r.string(value, name)
            if not text.startswith("/"):
                raise r.error(value, f"{name} must be an absolute path, not {text!r}")
            setattr(out, key, text)
    return out


def _parse_address(r: _Reader, node: yaml.Node, what: str) -> str:
    text = r.string(node, what).strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    if not re.match(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$", text):
        raise r.error(node, f"{what} {text!r} is neither an IP address nor a host name")
    return text


def _parse_host(r: _Reader, name_node: yaml.Node, node: yaml.Node) -> Host:
    name = r.string(name_node, "host name")
    if not _NAME_RE.match(name):
        raise r.error(name_node, f"host name {name!r} must be letters, digits, '.', '_' or '-'")
    what = f"hosts.{name}"
    keys = r.mapping(node, what, _HOST_KEYS)
    for required in ("address", "kind"):
        if required not in keys:
            raise r.error(node, f"{what}: missing required key {required!r}")
    kind = r.string(keys["kind"][1], f"{what}.kind")
    if kind not in HOST_KINDS:
        raise r.error(keys["kind"][1], f"{what}.kind must be one of {', '.join(HOST_KINDS)}")
    host = Host(
        name=name,
        address=_parse_address(r, keys["address"][1], f"{what}.address"),
        kind=kind,
        line=name_node.start_mark.line + 1,
    )
    for key, (key_node, value) in keys.items():
        field_name = f"{what}.{key}"
        if key in ("address", "kind"):
            continue
        if key == "port":
            host.port = r.integer(value, field_name, minimum=1, maximum=65535)
        elif key == "user":
            host.user = r.string(value, field_name)
        elif key == "key_file":
            host.key_file = r.readable_file(value, field_name)
        elif key == "roles":
            host.roles = r.string_list(value, field_name)
            for role, item in zip(host.roles, _items(value), strict=True):
                if role not in HOST_ROLES:
                    raise r.error(
                        item,
                        f"{field_name}: unknown role {role!r} (known: {', '.join(HOST_ROLES)})",
                    )
        elif key in ("migration_address", "migration_addresses"):
            if not isinstance(value, (yaml.ScalarNode, yaml.SequenceNode)):
                raise r.error(value, f"{field_name} must be an address or a list of them")
            host.migration_addresses = [_parse_address(r, n, field_name) for n in _items(value)]
        elif key == "workdir":
            host.workdir = r.string(value, field_name)
            if not host.workdir.startswith("/"):
                raise r.error(value, f"{field_name} must be an absolute path")
        elif key == "freebsd":
            if kind != "freebsd":
                raise r.error(key_node, f"{field_name}: only hosts of kind freebsd take this")
            host.freebsd = _parse_freebsd_host(r, value, field_name)
    if kind == "freebsd" and host.freebsd is None:
        host.freebsd = FreeBSDHost()
    return host


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")


def _items(node: yaml.Node) -> list[yaml.Node]:
    return list(node.value) if isinstance(node, yaml.SequenceNode) else [node]


def _parse_freebsd_guest(r: _Reader, node: yaml.Node, what: str) -> FreeBSDGuest:
    out = FreeBSDGuest()
    for key, (_, value) in r.mapping(node, what, _FREEBSD_GUEST_KEYS).items():
        name = f"{what}.{key}"
        if key in ("disk", "bootrom"):
            text = r.string(value, name)
            if not text.startswith("/"):
                raise r.error(value, f"{name} must be an absolute path on the host")
            setattr(out, key, text)
        elif key == "devices":
            out.devices = r.string_list(value, name)
            for text, item in zip(out.devices, _items(value), strict=True):
                if not re.match(r"^\d+(:\d+)?(:\d+)?,\S", text):
                    raise r.error(
                        item,
                        f"{name}: {text!r} is not a bhyve slot such as '4,virtio-blk,/vm/disk.img'",
                    )
        elif key == "config":
            for ckey, (ckey_node, cvalue) in r.mapping(value, name, None).items():
                if not re.match(r"^[A-Za-z0-9_.-]+$", ckey):
                    raise r.error(ckey_node, f"{name}: {ckey!r} is not a bhyve config key")
                scalar = r.scalar(cvalue)
                if scalar is None or isinstance(scalar, (list, dict)):
                    raise r.error(cvalue, f"{name}.{ckey} must be a single value")
                if isinstance(scalar, bool):
                    scalar = "true" if scalar else "false"
                out.config[ckey] = str(scalar)
        elif key == "wired":
            out.wired = r.boolean(value, name)
    return out


def _parse_testbed_guest(r: _Reader, node: yaml.Node, what: str) -> TestbedGuest:
    out = TestbedGuest()
    for key, (_, value) in r.mapping(node, what, _TESTBED_GUEST_KEYS).items():
        name = f"{what}.{key}"
        if key == "workload":
            text = r.string(value, name)
            match = _WORKLOAD_RE.match(text)
            if not match:
                raise r.error(
                    value, f"{name} {text!r} must be idle, full or hotset:SIZE (optionally @RATE)"
                )
            if (match.group(1) == "hotset") != (match.group(2) is not None):
                raise r.error(value, f"{name} {text!r}: only hotset takes a size (hotset:64M)")
            if match.group(2) is not None:
                try:
                    parse_size(match.group(2), f"{name} size")
                except ValueError as exc:
                    raise r.error(value, str(exc)) from None
            out.workload = text
        elif key == "fill":
            fill = r.string(value, name)
            if fill not in _FILLS:
                raise r.error(value, f"{name} must be one of {', '.join(_FILLS)}")
            out.fill = fill
        elif key == "segments":
            out.segments = r.integer(value, name, minimum=1, maximum=64)
        elif key == "rate":
            out.rate = r.integer(value, f"{name} (pages/s per vCPU)", minimum=1)
        elif key in ("dma_rate", "disk_rate"):
            setattr(out, key, r.integer(value, f"{name} (writes/s)", minimum=0, maximum=1000000))
        elif key == "dma_unlogged":
            mode = r.string(value, name)
            if mode not in _DMA_UNLOGGED:
                raise r.error(value, f"{name} must be one of {', '.join(_DMA_UNLOGGED)}")
            out.dma_unlogged = mode
        elif key == "disk_image":
            path = r.string(value, name)
            if not path.startswith("/") or len(path) > 255:
                raise r.error(value, f"{name} must be an absolute path of at most 255 bytes")
            out.disk_image = path
        elif key in ("disk", "disk_hot"):
            size = r.scalar(value)
            if isinstance(size, bool) or not isinstance(size, (int, str)):
                raise r.error(value, f"{name} must be a size such as 64M or 1G")
            try:
                setattr(out, key, parse_size(size, name))
            except ValueError as exc:
                raise r.error(value, str(exc)) from None
        elif key in ("lazy_memory", "disk_prefill"):
            setattr(out, key, r.boolean(value, name))
    return out


def _parse_guest(r: _Reader, name_node: yaml.Node, node: yaml.Node) -> Guest:
    name = r.string(name_node, "guest name")
    if not _NAME_RE.match(name) or len(name) > 31:
        raise r.error(
            name_node,
            f"guest name {name!r} must be up to 31 letters, digits, "
            "'.', '_' or '-' (bhyve's VM name limit)",
        )
    what = f"guests.{name}"
    keys = r.mapping(node, what, _GUEST_KEYS)
    if "memory" not in keys:
        raise r.error(node, f"{what}: missing required key 'memory'")
    guest = Guest(
        name=name,
        memory=r.size(keys["memory"][1], f"{what}.memory"),
        line=name_node.start_mark.line + 1,
    )
    if "vcpus" in keys:
        guest.vcpus = r.integer(keys["vcpus"][1], f"{what}.vcpus", minimum=1, maximum=1024)
    if "freebsd" in keys:
        guest.freebsd = _parse_freebsd_guest(r, keys["freebsd"][1], f"{what}.freebsd")
    if "testbed" in keys:
        guest.testbed = _parse_testbed_guest(r, keys["testbed"][1], f"{what}.testbed")
    if guest.memory % 4096:
        raise r.error(keys["memory"][1], f"{what}.memory must be a multiple of 4K")
    return guest


def _parse_migration(
    r: _Reader, node: yaml.Node, hosts: dict[str, Host], guests: dict[str, Guest]
) -> MigrationPolicy:
    policy = MigrationPolicy()
    keys = r.mapping(node, "migration", _MIGRATION_KEYS)
    for key, (_, value) in keys.items():
        name = f"migration.{key}"
        if key in ("source", "destination"):
            host = r.string(value, name)
            if host not in hosts:
                known = ", ".join(hosts) or "none"
                raise r.error(value, f"{name}: no host named {host!r} (hosts: {known})")
            setattr(policy, key, host)
        elif key == "guest":
            guest = r.string(value, name)
            if guest not in guests:
                known = ", ".join(guests) or "none"
                raise r.error(value, f"{name}: no guest named {guest!r} (guests: {known})")
            policy.guest = guest
        elif key == "port":
            policy.port = r.integer(value, name, minimum=1, maximum=65535)
        elif key == "downtime_limit_ms":
            policy.downtime_limit_ms = r.integer(value, name, minimum=1)
        elif key == "max_rounds":
            policy.max_rounds = r.integer(value, name, minimum=1, maximum=1000)
        elif key == "fixed_rounds":
            policy.fixed_rounds = None if _is_null(value) else r.integer(value, name, 1, 1000)
        elif key == "bandwidth":
            policy.bandwidth = None if _is_null(value) else r.rate(value, name)
        elif key in ("encrypt", "auto_throttle", "disks"):
            setattr(policy, key, r.boolean(value, name))
        elif key == "timeout":
            policy.timeout = r.number(value, name)
        elif key == "switchover_hook":
            policy.switchover_hook = None if _is_null(value) else r.string(value, name)
        elif key == "switchover_timeout":
            policy.switchover_timeout = _hook_timeout(r, value, name)
        elif key == "streams":
            policy.streams = r.integer(value, name, minimum=1, maximum=MAX_STREAMS)
    if policy.source and policy.source == policy.destination:
        raise r.error(
            keys["destination"][1], "migration.destination must differ from migration.source"
        )
    if policy.source and policy.destination:
        kinds = {hosts[policy.source].kind, hosts[policy.destination].kind}
        if len(kinds) > 1:
            raise r.error(
                node,
                "migration.source and migration.destination are of different "
                f"kinds ({' and '.join(sorted(kinds))})",
            )
    if policy.fixed_rounds is not None and policy.fixed_rounds > policy.max_rounds:
        raise r.error(
            keys["fixed_rounds"][1],
            f"migration.fixed_rounds ({policy.fixed_rounds}) exceeds max_rounds "
            f"({policy.max_rounds})",
        )
    return policy


def _hook_timeout(r: _Reader, node: yaml.Node, name: str) -> float:
    """Seconds the switchover hook may run: positive, and within the engine's wait."""
    value = r.number(node, name)
    if not 0 < value <= HOOK_TIMEOUT_MAX_S:
        raise r.error(node, f"{name}: give seconds, more than 0 and at most "
                            f"{HOOK_TIMEOUT_MAX_S:g}, not {value:g}")  # fmt: skip
    return value


def _check_guest_kinds(
    r: _Reader,
    hosts: dict[str, Host],
    guests: dict[str, Guest],
    policy: MigrationPolicy,
    nodes: dict[str, yaml.Node],
) -> None:
    """Give section-less guests the test-bed defaults; check the migrated guest fits."""
    kinds = {h.kind for h in hosts.values()}
    for guest in guests.values():
        if guest.testbed is None and guest.freebsd is None and "testbed" in kinds:
            guest.testbed = TestbedGuest()
    if policy.guest and policy.source:
        kind = hosts[policy.source].kind
        guest = guests[policy.guest]
        if getattr(guest, kind) is None:
            raise r.error(
                nodes[guest.name],
                f"guests.{guest.name}: migrated between {kind} hosts but has no '{kind}:' section",
            )


def parse_hosts_text(
    text: str, path: Path | str = "<hosts>", check_files: bool = True
) -> HostsConfig:
    """Validate a hosts file's text; `path` names it in errors and anchors relative paths.

    With check_files False, key and known_hosts files are not opened (for checking a file
    written for other machines, such as the examples).
    """
    path = Path(path)
    r = _Reader(path, check_files)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise ConfigError(f"{path}:{line}: not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if root is None:
        raise ConfigError(f"{path}:1: the file is empty; it needs at least 'hosts:'")
    top = r.mapping(root, "the file", _TOP_KEYS)
    if "version" in top:
        version = r.integer(top["version"][1], "version", minimum=1)
        if version != 1:
            raise r.error(top["version"][1], f"version {version} is not supported (only 1)")
    if "hosts" not in top:
        raise r.error(root, "missing required key 'hosts'")
    ssh = _parse_ssh(r, top.get("ssh", (None, None))[1], Path("~/.ssh/known_hosts").expanduser())

    hosts: dict[str, Host] = {}
    for name_node, host_node in r.mapping(top["hosts"][1], "hosts", None).values():
        host = _parse_host(r, name_node, host_node)
        hosts[host.name] = host
    if not hosts:
        raise r.error(top["hosts"][1], "hosts: at least one host is needed")

    guests: dict[str, Guest] = {}
    guest_nodes: dict[str, yaml.Node] = {}
    guests_node = top["guests"][1] if "guests" in top else None
    if guests_node is not None and not _is_null(guests_node):
        for name_node, guest_node in r.mapping(top["guests"][1], "guests", None).values():
            guest = _parse_guest(r, name_node, guest_node)
            guests[guest.name] = guest
            guest_nodes[guest.name] = name_node
    policy = MigrationPolicy()
    if "migration" in top:
        policy = _parse_migration(r, top["migration"][1], hosts, guests)
    _check_guest_kinds(r, hosts, guests, policy, guest_nodes)
    return HostsConfig(path=path, ssh=ssh, hosts=hosts, guests=guests, migration=policy)


def load_hosts(path: str | os.PathLike[str], check_files: bool = True) -> HostsConfig:
    """Read and validate a hosts file; ConfigError names the file and line of any problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: hosts file does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the hosts file: {exc.strerror}") from None
    return parse_hosts_text(text, path, check_files)


def dump_hosts(config: HostsConfig) -> str:
    """Render a HostsConfig as hosts-file YAML that parse_hosts_text reads back."""
    data: dict[str, Any] = {"version": 1}
    data["ssh"] = {
        "known_hosts": str(config.ssh.known_hosts),
        "connect_timeout": config.ssh.connect_timeout,
        "command_timeout": config.ssh.command_timeout,
        "transfer_timeout": config.ssh.transfer_timeout,
        "keepalive": config.ssh.keepalive,
    }
    hosts: dict[str, Any] = {}
    for host in config.hosts.values():
        entry: dict[str, Any] = {
            "kind": host.kind,
            "address": host.address,
            "port": host.port,
            "user": host.user,
        }
        if host.key_file is not None:
            entry["key_file"] = str(host.key_file)
        if host.roles:
            entry["roles"] = list(host.roles)
        if host.migration_addresses:
            entry["migration_addresses"] = list(host.migration_addresses)
        entry["workdir"] = host.workdir
        if host.freebsd is not None:
            entry["freebsd"] = dict(vars(host.freebsd))
            if entry["freebsd"]["jobs"] is None:
                del entry["freebsd"]["jobs"]
        hosts[host.name] = entry
    data["hosts"] = hosts
    guests: dict[str, Any] = {}
    for guest in config.guests.values():
        g: dict[str, Any] = {"memory": guest.memory, "vcpus": guest.vcpus}
        if guest.testbed is not None:
            g["testbed"] = {k: v for k, v in vars(guest.testbed).items() if v is not None}
        if guest.freebsd is not None:
            g["freebsd"] = {k: v for k, v in vars(guest.freebsd).items() if v is not None}
        guests[guest.name] = g
    if guests:
        data["guests"] = guests
    data["migration"] = {k: v for k, v in vars(config.migration).items() if v is not None}
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
