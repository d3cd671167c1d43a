#!/bin/bash
# Runs a program of the QEMU 10.0 that prepare.sh unpacked into CACHE/qemu10,
# with its own libraries and firmware:
#   tests/e2e/qemu10.sh CACHE qemu-system-x86_64|qemu-io|qemu-img ARGS...
#   tests/e2e/qemu10.sh CACHE --libpath     (prints its LD_LIBRARY_PATH)
set -euo pipefail
Q=${1:?usage: qemu10.sh CACHE PROGRAM ARGS...}/qemu10
prog=${2:?usage: qemu10.sh CACHE PROGRAM ARGS...}
shift 2
libpath=$Q/usr/lib/x86_64-linux-gnu:$Q/lib/x86_64-linux-gnu
if [ "$prog" = --libpath ]; then
    echo "$libpath"
    exit 0
fi
export LD_LIBRARY_PATH=$libpath QEMU_MODULE_DIR=$Q/usr/lib/x86_64-linux-gnu/qemu
case $prog in
    qemu-system-*)
        # The binary's built-in firmware path is the host's /usr/share/qemu.
        exec "$Q/usr/bin/$prog" -L "$Q/usr/share/qemu" -L "$Q/usr/share/seabios" \
            -L "$Q/usr/lib/ipxe/qemu" "$@" ;;
    *) exec "$Q/usr/bin/$prog" "$@" ;;
esac
