# The migration engine's portable sources, shared with bhyve: the one list
# the test bed (testbed/Makefile) and the fuzz targets (tests/fuzz/Makefile)
# build from.  A new engine file goes here.
ENGINE=		migration_common.c migration_wire.c migration_crypto.c \
		migration_net.c migration_policy.c migration_chan.c \
		migration_handshake.c migration_send.c migration_recv.c \
		migration_key.c migration_switchover.c migration_disk.c \
		migration_streams.c migration_txpipe.c migration_owed.c
# The control plane, shared with bhyve and bhyvectl: the request and
# event codec.
CONTROL=	migration_ctl.c migration_json.c
