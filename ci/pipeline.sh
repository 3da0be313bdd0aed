#!/bin/bash
# The bhyve live migration pipeline, one stage per call, runnable by any CI:
#
#   bash ci/pipeline.sh STAGE        run one stage (as root)
#   bash ci/pipeline.sh list         the stages and what each proves
#
# Stages, in order (each one says what it proves when it starts):
#   lint-test        ruff and every test (scripts/test.sh, the README's test command)
#   local-migration  a real live migration between the two namespace hosts of the local
#                    test bed: invoke testbed.up, invoke migrate --report, testbed.down
#   cross-build      the patched FreeBSD kernel (with the vmm module) cross-built on Linux
#                    with FreeBSD's tools/build/make.py, clang and lld
#   freebsd-vms      two FreeBSD 15 VMs under QEMU/KVM, reachable by root over SSH,
#                    joined by a private link; checks that bhyve can run inside them
#   freebsd-migrate  invoke build/deploy/migrate with ci/hosts.yaml: the series built and
#                    booted on FreeBSD, a guest that dirties memory moved between the VMs
#
# Artifacts go to $CI_OUT (default reports/ci): JSON reports, PNG plots, logs.
# The FreeBSD stages have never been run (see ci/README.md).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

CI_OUT=${CI_OUT:-$ROOT/reports/ci}
STATE=$ROOT/ci/state                          # key, known_hosts, VM disks; ci/hosts.yaml names them
FREEBSD_RELEASE=${FREEBSD_RELEASE:-15.0-RELEASE}
FREEBSD_IMAGE_URL=${FREEBSD_IMAGE_URL:-https://download.freebsd.org/releases/VM-IMAGES/$FREEBSD_RELEASE/amd64/Latest/FreeBSD-$FREEBSD_RELEASE-amd64-BASIC-CLOUDINIT-zfs.qcow2.xz}
FREEBSD_GIT_URL=${FREEBSD_GIT_URL:-https://git.freebsd.org/src.git}
KERNCONF=${KERNCONF:-BHYVEMIG}
SRC_DIR=${SRC_DIR:-$ROOT/build/freebsd-src}   # cross-build: the FreeBSD checkout
VM_MEMORY=${VM_MEMORY:-6G}                    # each FreeBSD VM
VM_CPUS=${VM_CPUS:-2}
VM_DISK=${VM_DISK:-60G}
SSH_PORT_A=${SSH_PORT_A:-2221}                # forwarded from 127.0.0.1 to the VMs' sshd
SSH_PORT_B=${SSH_PORT_B:-2222}
LINK_PORT=${LINK_PORT:-2230}                  # QEMU socket netdev: the VMs' private link
HOSTS_FILE=$ROOT/ci/hosts.yaml
SKIP_FILE=$STATE/skip-migration               # written by freebsd-vms when bhyve cannot run

say() { printf '==> %s\n' "$*"; }
die() { printf 'pipeline: %s\n' "$*" >&2; exit 1; }
proves() { printf '==> stage %s proves: %s\n' "$1" "$2"; }

need_root() {
	[ "$(id -u)" -eq 0 ] || die "stage $1 needs root (namespaces, apt, KVM); run it with sudo"
}

need_harness() {
	python3 -c 'import harness, invoke, paramiko, rich, yaml' 2>/dev/null ||
		python3 -m pip install -q --disable-pip-version-check -e .
}

apt_install() {
	local missing=()
	for pkg in "$@"; do
		dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The series' base commit, as the harness reads it from patches/.
base_commit() {
	python3 -c 'from pathlib import Path; from harness.freebsd import find_series
print(find_series(Path("patches")).base_commit)'
}

# -- lint-test -----------------------------------------------------------------------

stage_lint_test() {
	proves lint-test "the code is ruff-clean and every test passes (engine, test bed, harness, series compile checks)"
	bash scripts/test.sh
}

# -- local-migration -----------------------------------------------------------------

stage_local_migration() {
	proves local-migration "the engine live-migrates a dirtying guest between two hosts over SSH and real sockets, verified page by page"
	need_root local-migration
	need_harness
	mkdir -p "$CI_OUT"
	local status=0
	invoke testbed.up || status=$?
	if [ "$status" -eq 0 ]; then
		invoke migrate --report "$CI_OUT/local-migration.json" || status=$?
	fi
	invoke testbed.down || true
	[ "$status" -eq 0 ] || die "local-migration failed (exit $status)"
	say "report: $CI_OUT/local-migration.json, plot: $CI_OUT/local-migration.png"
}

# -- cross-build ---------------------------------------------------------------------

# The newest LLVM with clang and ld.lld under /usr/lib/llvm-NN.
llvm_bindir() {
	local dir best=""
	for dir in /usr/lib/llvm-*/bin; do
		[ -x "$dir/clang" ] && [ -x "$dir/ld.lld" ] && best=$dir
	done
	[ -n "$best" ] || return 1
	printf '%s\n' "$best"
}

stage_cross_build() {
	proves cross-build "the patch series applies to FreeBSD's base commit and its kernel, vmm module included, compiles with FreeBSD's own build system"
	need_root cross-build
	local llvm=${LLVM_VERSION:-19}
	apt_install git bmake libarchive-dev "clang-$llvm" "lld-$llvm" python3
	need_harness
	local base bindir
	base=$(base_commit)
	bindir=$(llvm_bindir) || die "no clang with ld.lld under /usr/lib/llvm-*"
	if [ ! -d "$SRC_DIR/.git" ]; then
		say "fetching FreeBSD src at $base"
		git init -q "$SRC_DIR"
		git -C "$SRC_DIR" remote add origin "$FREEBSD_GIT_URL"
	fi
	git -C "$SRC_DIR" fetch -q --depth 1 origin "$base"
	git -C "$SRC_DIR" checkout -q --force -B bhyvemig FETCH_HEAD
	invoke patches.apply --src "$SRC_DIR"
	python3 -c 'import sys; from harness.config import FreeBSDHost
from harness.freebsd import kernel_config_text
sys.stdout.write(kernel_config_text(FreeBSDHost(kernel_config=sys.argv[1])))' "$KERNCONF" \
		>"$SRC_DIR/sys/amd64/conf/$KERNCONF"

	mkdir -p "$CI_OUT" "$ROOT/build/obj"
	export MAKEOBJDIRPREFIX=$ROOT/build/obj
	local jobs make=("$SRC_DIR/tools/build/make.py" --debug "--cross-bindir=$bindir"
		TARGET=amd64 TARGET_ARCH=amd64)
	jobs=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
	cd "$SRC_DIR"
	say "kernel-toolchain (log: $CI_OUT/kernel-toolchain.log)"
	"${make[@]}" kernel-toolchain -s "-j$jobs" -DWITH_DISK_IMAGE_TOOLS_BOOTSTRAP \
		>"$CI_OUT/kernel-toolchain.log" 2>&1 ||
		{ tail -n 40 "$CI_OUT/kernel-toolchain.log"; die "kernel-toolchain failed"; }
	say "buildkernel KERNCONF=$KERNCONF with the vmm module (log: $CI_OUT/buildkernel.log)"
	"${make[@]}" "KERNCONF=$KERNCONF" MODULES_OVERRIDE=vmm buildkernel -s "-j$jobs" \
		>"$CI_OUT/buildkernel.log" 2>&1 ||
		{ tail -n 40 "$CI_OUT/buildkernel.log"; die "buildkernel failed"; }
	cd "$ROOT"
	local kobj
	kobj=$(find "$MAKEOBJDIRPREFIX" -path "*/sys/$KERNCONF/kernel" -type f | head -n 1)
	[ -n "$kobj" ] || die "buildkernel left no kernel"
	find "$(dirname "$kobj")" -name vmm.ko -type f | grep -q . || die "no vmm.ko was built"
	say "built $kobj and vmm.ko"
}

# -- freebsd-vms ---------------------------------------------------------------------

ssh_vm() {
	local port=$1
	shift
	ssh -i "$STATE/id_ed25519" -p "$port" -o BatchMode=yes -o ConnectTimeout=10 \
		-o UserKnownHostsFile="$STATE/known_hosts" -o StrictHostKeyChecking=accept-new \
		root@127.0.0.1 "$@"
}

skip_migration() {
	printf '%s\n' "$*" >"$SKIP_FILE"
	say "SKIP: the migration stage will be skipped: $*"
}

# A cloud-init (nuageinit) NoCloud seed whose user-data is ci/freebsd/first-boot.sh.
make_seed() {
	local name=$1 addr=$2 peer=$3 dir=$STATE/seed-$1
	rm -rf "$dir"
	mkdir -p "$dir"
	printf 'instance-id: %s\nlocal-hostname: %s\n' "$name" "$name" >"$dir/meta-data"
	sed -e "s|@@PUBKEY@@|$(cat "$STATE/id_ed25519.pub")|" -e "s|@@HOSTNAME@@|$name|" \
		-e "s|@@LINK_ADDR@@|$addr|" -e "s|@@PEER_ADDR@@|$peer|" \
		ci/freebsd/first-boot.sh >"$dir/user-data"
	genisoimage -quiet -output "$STATE/seed-$name.iso" -volid cidata -joliet -rock \
		"$dir/user-data" "$dir/meta-data"
}

start_vm() {
	local name=$1 ssh_port=$2 link=$3 mac=$4
	qemu-img create -q -f qcow2 -F qcow2 -b "$STATE/freebsd.qcow2" "$STATE/$name.qcow2" "$VM_DISK"
	qemu-system-x86_64 -name "$name" -machine q35,accel=kvm -cpu host -smp "$VM_CPUS" \
		-m "$VM_MEMORY" -display none -daemonize -pidfile "$STATE/$name.pid" \
		-serial "file:$CI_OUT/$name-console.log" \
		-drive "file=$STATE/$name.qcow2,if=virtio,format=qcow2" \
		-drive "file=$STATE/seed-$name.iso,if=virtio,format=raw,media=cdrom" \
		-netdev "user,id=nat,hostfwd=tcp:127.0.0.1:$ssh_port-:22" \
		-device virtio-net-pci,netdev=nat \
		-netdev "socket,id=link,$link" -device "virtio-net-pci,netdev=link,mac=$mac"
}

wait_ssh() {
	local port=$1 name=$2
	for _ in $(seq 1 120); do
		ssh_vm "$port" true 2>/dev/null && return 0
		sleep 5
	done
	tail -n 40 "$CI_OUT/$name-console.log" || true
	die "$name: no SSH on 127.0.0.1:$port after 10 minutes"
}

stage_freebsd_vms() {
	proves freebsd-vms "two FreeBSD $FREEBSD_RELEASE VMs boot from the official image, take root's key over SSH, share a private link, and (if nested virtualization allows) run bhyve"
	need_root freebsd-vms
	mkdir -p "$STATE" "$CI_OUT"
	rm -f "$SKIP_FILE"
	need_harness
	if [ ! -w /dev/kvm ]; then
		skip_migration "no usable /dev/kvm on this runner (KVM is needed for the FreeBSD VMs)"
		return 0
	fi
	apt_install qemu-system-x86 qemu-utils genisoimage openssh-client curl xz-utils
	[ -f "$STATE/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C bhyvemig-ci -f "$STATE/id_ed25519"
	: >"$STATE/known_hosts"
	if [ ! -f "$STATE/freebsd.qcow2" ]; then
		say "fetching $FREEBSD_IMAGE_URL"
		curl -fsSL --retry 3 "$FREEBSD_IMAGE_URL" | xz -d >"$STATE/freebsd.qcow2.part"
		mv "$STATE/freebsd.qcow2.part" "$STATE/freebsd.qcow2"
	fi
	make_seed alpha 10.99.0.1 10.99.0.2
	make_seed beta 10.99.0.2 10.99.0.1
	start_vm alpha "$SSH_PORT_A" "listen=127.0.0.1:$LINK_PORT" 52:54:00:99:00:01
	start_vm beta "$SSH_PORT_B" "connect=127.0.0.1:$LINK_PORT" 52:54:00:99:00:02
	wait_ssh "$SSH_PORT_A" alpha
	wait_ssh "$SSH_PORT_B" beta
	ssh_vm "$SSH_PORT_B" "ping -c 3 -t 10 10.99.0.1 >/dev/null" ||
		die "the VMs' private link does not work (beta cannot ping alpha at 10.99.0.1)"
	# Shared storage: alpha serves /usr/src, /usr/obj (the build) and /vm (the guest disk).
	ssh_vm "$SSH_PORT_A" sh -s -- server <ci/freebsd/setup-host.sh
	ssh_vm "$SSH_PORT_B" sh -s -- client 10.99.0.1 <ci/freebsd/setup-host.sh
	ssh_vm "$SSH_PORT_A" sh -s -- "$(base_commit)" "$FREEBSD_GIT_URL" <ci/freebsd/setup-src.sh
	local name port why
	for name in alpha beta; do
		port=$SSH_PORT_A
		[ "$name" = beta ] && port=$SSH_PORT_B
		if ! why=$(ssh_vm "$port" sh -s <ci/freebsd/probe-vmm.sh 2>&1); then
			skip_migration "$name cannot run bhyve guests (nested virtualization): $why"
			return 0
		fi
	done
	ssh_vm "$SSH_PORT_A" sh -s -- ${GUEST_IMAGE_URL:+"$GUEST_IMAGE_URL"} <ci/freebsd/make-guest.sh
	python3 -c 'import sys; from harness.config import load_hosts; load_hosts(sys.argv[1])' \
		"$HOSTS_FILE"
	say "VMs up: alpha 127.0.0.1:$SSH_PORT_A, beta 127.0.0.1:$SSH_PORT_B; hosts file $HOSTS_FILE"
}

# -- freebsd-migrate -----------------------------------------------------------------

stage_freebsd_migrate() {
	proves freebsd-migrate "the series builds and boots on FreeBSD (vmm loads, BHYVE_SNAPSHOT in the kernel) and bhyve live-migrates a guest that dirties memory between two hosts"
	need_root freebsd-migrate
	if [ -f "$SKIP_FILE" ]; then
		say "SKIPPED: $(cat "$SKIP_FILE")"
		return 0
	fi
	[ -f "$STATE/id_ed25519" ] || die "run the freebsd-vms stage first"
	need_harness
	mkdir -p "$CI_OUT"
	invoke build --hosts "$HOSTS_FILE"
	# beta first: it installs from alpha's NFS-shared /usr/src and /usr/obj, which must not
	# reboot under it.
	invoke deploy --hosts "$HOSTS_FILE" --only beta
	invoke deploy --hosts "$HOSTS_FILE" --only alpha
	invoke migrate --hosts "$HOSTS_FILE" --report "$CI_OUT/freebsd-migration.json"
	say "report: $CI_OUT/freebsd-migration.json, plot: $CI_OUT/freebsd-migration.png"
}

stage_freebsd_vms_down() {
	local name pid
	for name in alpha beta; do
		pid=$(cat "$STATE/$name.pid" 2>/dev/null) || continue
		kill "$pid" 2>/dev/null || true
		rm -f "$STATE/$name.pid"
	done
}

usage() {
	sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
}

case "${1:-}" in
lint-test) stage_lint_test ;;
local-migration) stage_local_migration ;;
cross-build) stage_cross_build ;;
freebsd-vms) stage_freebsd_vms ;;
freebsd-migrate) stage_freebsd_migrate ;;
freebsd-vms-down) stage_freebsd_vms_down ;;
list | help | -h | --help) usage ;;
*)
	usage >&2
	exit 2
	;;
esac
