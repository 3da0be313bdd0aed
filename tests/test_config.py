"""The hosts file: examples validate; every kind of error names file, line and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import dump_hosts, load_hosts, parse_hosts_text, parse_rate
from harness.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "known_hosts").write_text("")
    (tmp_path / "id_test").write_text("not really a key\n")
    return tmp_path


def good(files: Path) -> str:
    return f"""\
version: 1
ssh:
  known_hosts: {files}/known_hosts
hosts:
  a:
    kind: testbed
    address: 10.77.0.11
    key_file: {files}/id_test
    roles: [build, source]
  b:
    kind: testbed
    address: 10.77.0.12
    key_file: id_test
guests:
  g:
    memory: 256M
    vcpus: 2
    testbed:
      workload: hotset:64M
migration:
  source: a
  destination: b
  guest: g
  bandwidth: 1gbit
"""


def error_of(text: str, files: Path) -> str:
    path = files / "hosts.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_hosts(path)
    return str(info.value)


def replace_line(text: str, old: str, new: str) -> tuple[str, int]:
    """Replace the line containing old; return the text and that line's number."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if old in line:
            lines[i] = line.replace(old, new)
            return "\n".join(lines) + "\n", i + 1
    raise AssertionError(old)


@pytest.mark.parametrize("name", ["hosts-freebsd-lab.yaml", "hosts-testbed.yaml"])
def test_examples_validate(name: str) -> None:
    config = load_hosts(EXAMPLES / name, check_files=False)
    src, dst = config.migration_pair()
    assert src.name != dst.name
    assert config.guest().name in config.guests
    # what dump_hosts writes reads back the same
    again = parse_hosts_text(dump_hosts(config), EXAMPLES / name, check_files=False)
    assert again == config


def test_good_file_parses(files: Path) -> None:
    path = files / "hosts.yaml"
    path.write_text(good(files))
    config = load_hosts(path)
    assert config.hosts["b"].key_file == files / "id_test"  # relative to the file
    assert config.guests["g"].memory == 256 << 20
    assert config.migration.bandwidth == 125_000_000
    assert config.hosts["a"].roles == ["build", "source"]
    assert config.hosts["a"].migration_address == "10.77.0.11"
    assert config.guests["g"].testbed is not None
    assert config.guests["g"].testbed.fill == "pattern"


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("    vcpus: 2", "    vcpus: 2\n    colour: blue", "unknown key 'colour'"),
        ("    vcpus: 2", "    vcpus: two", "guests.g.vcpus must be an integer, not 'two'"),
        ("    memory: 256M", "    memory: lots", "is not a size such as 256M"),
        ("    memory: 256M", "    memory: 1001", "multiple of 4K"),
        ("  bandwidth: 1gbit", "  bandwidth: fast", "is not a rate"),
        ("  destination: b", "  destination: c", "no host named 'c'"),
        ("  guest: g", "  guest: h", "no guest named 'h'"),
        ("    kind: testbed", "    kind: linux", "kind must be one of freebsd, testbed"),
        ("    roles: [build, source]", "    roles: [build, cook]", "unknown role 'cook'"),
        ("    address: 10.77.0.12", "    address: 'bad host!'", "neither an IP address"),
        ("      workload: hotset:64M", "      workload: hotset:big", "'big' is not a size"),
        ("      workload: hotset:64M", "      workload: busy", "must be idle, full or hotset"),
        ("      workload: hotset:64M", "      workload: idle:4M", "only hotset takes a size"),
        ("  bandwidth: 1gbit", "  bandwidth: 1gbit\n  encrypt: maybe", "true or false"),
        ("  destination: b", "  destination: a", "must differ from migration.source"),
        ("  bandwidth: 1gbit", "  bandwidth: 1gbit\n  switchover_timeout: 0",
         "migration.switchover_timeout must be positive, not 0"),
        ("  bandwidth: 1gbit", "  bandwidth: 1gbit\n  switchover_timeout: 4000",
         "at most 3595, not 4000"),
    ],
)
def test_errors_name_file_line_and_problem(files: Path, old: str, new: str, problem: str) -> None:
    text, line = replace_line(good(files), old, new)
    if new.startswith(old) and "\n" in new:
        line += 1  # the problem is the key added on the next line
    message = error_of(text, files)
    assert message.startswith(f"{files / 'hosts.yaml'}:{line}: "), message
    assert problem in message


def test_switchover_hook_keys(files: Path) -> None:
    path = files / "hosts.yaml"
    path.write_text(good(files) + "  switchover_hook: ./zfs-hook.sh\n  switchover_timeout: 90\n")
    policy = load_hosts(path).migration
    assert (policy.switchover_hook, policy.switchover_timeout) == ("./zfs-hook.sh", 90)
    path.write_text(good(files))
    assert load_hosts(path).migration.switchover_hook is None  # no hook by default


def test_unreadable_key_file(files: Path) -> None:
    text, line = replace_line(good(files), "key_file: id_test", "key_file: missing_key")
    message = error_of(text, files)
    assert message.startswith(f"{files / 'hosts.yaml'}:{line}: ")
    assert "missing_key does not exist or is not a file" in message
    (files / "a_dir").mkdir()
    text, line = replace_line(good(files), "key_file: id_test", "key_file: a_dir")
    assert "a_dir does not exist or is not a file" in error_of(text, files)


def test_missing_known_hosts(files: Path) -> None:
    text, line = replace_line(good(files), "known_hosts:", "known_hosts: /nonexistent/kh #")
    message = error_of(text, files)
    assert message.startswith(f"{files / 'hosts.yaml'}:{line}: ")
    assert "known_hosts" in message


def test_missing_required_key(files: Path) -> None:
    text = good(files).replace("    address: 10.77.0.12\n", "")
    message = error_of(text, files)
    assert "hosts.b: missing required key 'address'" in message
    assert message.startswith(f"{files / 'hosts.yaml'}:")


def test_duplicate_key(files: Path) -> None:
    text, line = replace_line(good(files), "    vcpus: 2", "    vcpus: 2\n    vcpus: 3")
    message = error_of(text, files)
    assert message.startswith(f"{files / 'hosts.yaml'}:{line + 1}: ")
    assert f"duplicate key 'vcpus' (first on line {line})" in message


def test_invalid_yaml(files: Path) -> None:
    text, line = replace_line(good(files), "    vcpus: 2", "    vcpus: [2")
    message = error_of(text, files)
    assert "not valid YAML" in message
    assert message.startswith(f"{files / 'hosts.yaml'}:")


def test_wrong_type_for_section(files: Path) -> None:
    text, line = replace_line(good(files), "    testbed:", "    testbed: yes")
    text = text.replace("      workload: hotset:64M\n", "")
    message = error_of(text, files)
    assert message.startswith(f"{files / 'hosts.yaml'}:{line}: ")
    assert "guests.g.testbed must be a mapping" in message


def test_guest_without_section_for_its_hosts(files: Path) -> None:
    text = good(files).replace("kind: testbed", "kind: freebsd")
    message = error_of(text, files)
    assert "guests.g: migrated between freebsd hosts but has no 'freebsd:' section" in message


def test_fixed_rounds_bounded_by_max_rounds(files: Path) -> None:
    text, line = replace_line(
        good(files), "  bandwidth: 1gbit", "  max_rounds: 4\n  fixed_rounds: 9"
    )
    message = error_of(text, files)
    assert message.startswith(f"{files / 'hosts.yaml'}:{line + 1}: ")
    assert "fixed_rounds (9) exceeds max_rounds (4)" in message


def test_streams_policy_key(files: Path) -> None:
    path = files / "hosts.yaml"
    path.write_text(good(files) + "  streams: 4\n")
    assert load_hosts(path).migration.streams == 4
    text, line = replace_line(good(files), "  bandwidth: 1gbit", "  streams: 9")
    message = error_of(text, files)
    assert message.startswith(f"{files / 'hosts.yaml'}:{line}: ")
    assert "migration.streams" in message and "8" in message, message


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="hosts file does not exist"):
        load_hosts("/nonexistent/hosts.yaml")


def test_parse_rate() -> None:
    assert parse_rate("1gbit") == 125_000_000
    assert parse_rate("100MB/s") == 100_000_000
    assert parse_rate("500mbit") == 62_500_000
    assert parse_rate(4096) == 4096
    with pytest.raises(ValueError):
        parse_rate("quick")


def test_testbed_devices_round_trip_and_bad_values_are_named() -> None:
    text = (EXAMPLES / "hosts-testbed.yaml").read_text()
    config = parse_hosts_text(text, "hosts.yaml", check_files=False)
    guest = next(g for g in config.guests.values() if g.testbed is not None)
    guest.testbed.disk, guest.testbed.dma_rate, guest.testbed.dma_unlogged = 16 << 20, 5, "drain"
    guest.testbed.disk_prefill = True
    config.migration.disks = True
    again = parse_hosts_text(dump_hosts(config), "hosts.yaml", check_files=False)
    assert again.guests[guest.name].testbed == guest.testbed
    assert again.migration.disks is True
    bad = dump_hosts(config).replace("dma_unlogged: drain", "dma_unlogged: never")
    with pytest.raises(ConfigError, match="dma_unlogged must be one of running, drain"):
        parse_hosts_text(bad, "hosts.yaml", check_files=False)
