#!/bin/sh
# gcov line coverage of the FreeBSD userland files the test bed runs
# (the source's command handler, the destination's loop, bhyvectl's
# controller) and the control plane's codec, under the tests that drive
# tbvm and tbctl.  Local processes on loopback: no test-bed lock needed.
set -eu
cd "$(dirname "$0")/.."
out="$PWD/build/testbed-cov"
rm -rf "$out"
make -s -C testbed OUT="$out" COV=1 -j"$(nproc)" all ctl_test
"$out/ctl_test" | tail -1
BMIG_TESTBED_BIN="$out" python3 -m pytest -q tests/test_testbed_control.py
# The objects name their sources relative to testbed/.
cd testbed
for f in migration_source_cmd migration_dest_listen bhyvectl_migrate \
    migration_ctl; do
	gcov -n -o "$out/obj-cov" "$f.o" 2>/dev/null |
	    grep -A1 "^File '.*/$f.c'" | tail -1 | sed "s|^|$f.c: |"
done
