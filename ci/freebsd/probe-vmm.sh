#!/bin/sh
# Can this CI VM run bhyve guests?  That needs VT-x/AMD-V passed through by the runner's
# KVM (nested virtualization).  Exit 0 if yes; else print why and exit 1.
if ! out=$(kldload -n vmm 2>&1); then
	echo "kldload vmm failed: $out"
	exit 1
fi
if ! out=$(bhyvectl --vm=ci-probe --create 2>&1); then
	echo "vmm loads but cannot create a VM (no usable VT-x/AMD-V inside the VM): $out"
	exit 1
fi
bhyvectl --vm=ci-probe --destroy
echo "vmm works"
