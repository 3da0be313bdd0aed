#!/bin/sh
# First boot of a CI FreeBSD VM: nuageinit(7) runs this cloud-init user-data script once,
# as root.  ci/pipeline.sh fills in the @@...@@ words (make_seed).  It lets the pipeline's
# key log in as root, names the host and puts the second NIC on the VMs' private link.
set -eu
umask 077
mkdir -p /root/.ssh
echo '@@PUBKEY@@' >>/root/.ssh/authorized_keys
umask 022
sysrc hostname=@@HOSTNAME@@ sshd_enable=YES ifconfig_vtnet1="inet @@LINK_ADDR@@/24" >/dev/null
hostname @@HOSTNAME@@
ifconfig vtnet1 inet @@LINK_ADDR@@/24 up
sed -i '' -e '/^PermitRootLogin/d' /etc/ssh/sshd_config
echo 'PermitRootLogin prohibit-password' >>/etc/ssh/sshd_config
# The peer's name for the harness's messages and for NFS.
echo '@@PEER_ADDR@@ peer' >>/etc/hosts
service sshd restart >/dev/null 2>&1 || service sshd start
