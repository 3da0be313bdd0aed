#!/bin/sh
# Run on alpha by ci/pipeline.sh: the CI guest's disk on the NFS-shared /vm, FreeBSD's
# plain UFS VM image plus an rc.local that keeps rewriting 64 MiB of a tmpfs, so that
# the guest dirties memory all the time it is migrated.
#   make-guest.sh [IMAGE_URL]
set -eu
release=$(freebsd-version -u | sed 's/-p[0-9]*$//')
url=${1:-https://download.freebsd.org/releases/VM-IMAGES/$release/amd64/Latest/FreeBSD-$release-amd64-ufs.raw.xz}
dir=/vm/ciguest
mkdir -p "$dir" /mnt/ciguest
if [ ! -f "$dir/disk.img" ]; then
	fetch -qo - "$url" | xz -dc | dd of="$dir/disk.img.part" bs=1m conv=sparse 2>/dev/null
	mv "$dir/disk.img.part" "$dir/disk.img"
fi
md=$(mdconfig -a -t vnode -f "$dir/disk.img")
trap 'umount /mnt/ciguest 2>/dev/null; mdconfig -d -u "$md"' EXIT
part=$(gpart show -p "$md" | awk '$4 == "freebsd-ufs" { print $3; exit }')
[ -n "$part" ] || { echo "make-guest.sh: no freebsd-ufs partition in $url" >&2; exit 1; }
mount "/dev/$part" /mnt/ciguest
cat >/mnt/ciguest/etc/rc.local <<'WORKLOAD'
#!/bin/sh
# bhyvemig CI workload: rewrite 64 MiB of guest memory (a tmpfs file) forever.
mkdir -p /var/hot
mount -t tmpfs -o size=80m tmpfs /var/hot
(while :; do dd if=/dev/random of=/var/hot/x bs=1m count=64 conv=notrunc; done) \
    >/dev/null 2>&1 &
WORKLOAD
chmod 755 /mnt/ciguest/etc/rc.local
echo "guest disk ready: $dir/disk.img"
