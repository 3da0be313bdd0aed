#!/bin/sh
#
# An example switchover hook for FreeBSD hosts whose guest disk is a ZFS volume (or a
# file on a ZFS dataset) that is not shared: it sends the volume's last changes to the
# destination while the guest is paused, as vm-bhyve's and other tools' ZFS migrations
# do with a stopped guest.
#
#   invoke migrate --hosts examples/hosts-freebsd-lab.yaml \
#       --switchover-hook 'BMIG_ZFS_DATASET=tank/vm/fbsd-guest examples/zfs-switchover-hook.sh'
#
# NEVER RUN BY THIS PROJECT: there is no FreeBSD, no ZFS pool and no bhyve where it was
# written.  Read it, and try it on hosts you can afford to lose a guest on, before
# trusting it.  Unverified in particular: that `zfs recv -F` into a volume the waiting
# `bhyve -R` holds open succeeds on your OpenZFS (with a file on a dataset the reopen
# before READY picks the received file up; see bhyve(8), -R).
#
# The harness runs it on the harness machine with the migration in its environment
# (harness/switchover.py): BMIG_SOURCE_ADDRESS, BMIG_DESTINATION_ADDRESS, their
# BMIG_*_USER, BMIG_GUEST, BMIG_TIMEOUT_S.  Exit status 0 lets the migration finish;
# anything else, or running past the timeout, rolls it back: the guest resumes on the
# source and the destination discards.  The destination then holds a newer snapshot
# than the source's guest, which runs on: `zfs recv -F` of the next attempt rolls it
# back.
#
# Before the migration, while the guest runs, seed the destination once with a full
# send, so that the paused part is only the increment since the last common snapshot:
#
#   ssh root@src 'zfs snapshot tank/vm/fbsd-guest@bmig-seed &&
#       zfs send tank/vm/fbsd-guest@bmig-seed | ssh root@dst zfs recv -F tank/vm/fbsd-guest'
#
# The source's disks are flushed before the hook runs (bhyve's pause); ZFS snapshots
# what was written, so the snapshot taken here holds every write the guest made.

set -eu

: "${BMIG_ZFS_DATASET:?set BMIG_ZFS_DATASET to the dataset of the guest disk, e.g. tank/vm/guest}"
: "${BMIG_SOURCE_ADDRESS:?run this from the harness (invoke migrate --switchover-hook)}"
: "${BMIG_DESTINATION_ADDRESS:?run this from the harness}"

ds=$BMIG_ZFS_DATASET
src="${BMIG_SOURCE_USER:-root}@${BMIG_SOURCE_ADDRESS}"
dst="${BMIG_DESTINATION_USER:-root}@${BMIG_DESTINATION_ADDRESS}"
ssh="ssh -o BatchMode=yes -o ConnectTimeout=10"
snap="bmig-$(date -u +%Y%m%dT%H%M%SZ)"

case $ds in
*[!A-Za-z0-9_./:-]*)
	echo "zfs-switchover-hook: '$ds' is not a plain dataset name" >&2
	exit 2
	;;
esac

# The newest snapshot both sides hold: the base of the increment.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
list="zfs list -H -p -t snapshot -o name -s createtxg -d 1 $ds"
$ssh "$src" "$list" | sed 's/.*@//' > "$work/src"
$ssh "$dst" "$list" | sed 's/.*@//' > "$work/dst"
base=$(grep -Fxf "$work/dst" "$work/src" | tail -n 1)
if [ -z "$base" ]; then
	echo "zfs-switchover-hook: $ds has no snapshot in common on the two hosts:" \
	    "seed the destination first (see the comment at the top)" >&2
	exit 1
fi

echo "zfs-switchover-hook: sending $ds@$base..@$snap to $BMIG_DESTINATION_ADDRESS"
# The send runs on the source and pipes straight to the destination.
$ssh "$src" "zfs snapshot $ds@$snap && zfs send -i @$base $ds@$snap |
    $ssh $dst zfs recv -F $ds"
echo "zfs-switchover-hook: $ds@$snap received"
