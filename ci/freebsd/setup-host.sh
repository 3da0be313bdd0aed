#!/bin/sh
# Run on each CI VM by ci/pipeline.sh (freebsd-vms), as root over SSH.
#   setup-host.sh server          alpha: packages, and NFS exports of /usr/src, /usr/obj, /vm
#   setup-host.sh client ADDR     beta:  packages, and those three mounted from ADDR
# The harness deploys the build from the same src_dir/obj_dir on every host, and the
# guest's disk must be the same file on both sides of a migration: hence NFS.
set -eu
role=$1
export ASSUME_ALWAYS_YES=yes
pkg bootstrap -f >/dev/null 2>&1 || true
pkg install -y git edk2-bhyve >/dev/null
kldload -n nmdm
sysrc kld_list+=" nmdm" >/dev/null
paths="/usr/src /usr/obj /vm"
case $role in
server)
	pool=$(zpool list -H -o name | head -n 1)
	zfs list "$pool/ci" >/dev/null 2>&1 || zfs create -o canmount=off "$pool/ci"
	for path in $paths; do
		name=$pool/ci/$(echo "${path#/}" | tr / _)
		zfs list "$name" >/dev/null 2>&1 || zfs create -o mountpoint="$path" "$name"
		zfs set sharenfs="-maproot=root -network=10.99.0.0/24" "$name"
	done
	sysrc rpcbind_enable=YES mountd_enable=YES nfs_server_enable=YES >/dev/null
	service rpcbind start >/dev/null 2>&1 || true
	service mountd start >/dev/null 2>&1 || service mountd reload
	service nfsd start >/dev/null 2>&1 || true
	;;
client)
	server=$2
	for path in $paths; do
		mkdir -p "$path"
		grep -q "^$server:$path " /etc/fstab ||
			echo "$server:$path $path nfs rw,late 0 0" >>/etc/fstab
		mount | grep -q " on $path " || mount -t nfs "$server:$path" "$path"
	done
	;;
*)
	echo "usage: setup-host.sh server | client ADDRESS" >&2
	exit 2
	;;
esac
