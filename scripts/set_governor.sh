#!/bin/sh
# set_governor.sh GOVERNOR: set the cpufreq governor of every policy.
#
# The bare-script version of `tailprobe governor set` (which also journals
# the old values and restores them). Validates GOVERNOR against each
# policy's scaling_available_governors; runs without sudo when already root.
# Exit codes: 0 set, 1 error, 2 bad usage or unknown governor, 4 no cpufreq
# on this node (a VM: the hypervisor controls frequency).
set -eu

SYSFS=${SYSFS:-/sys}
base="$SYSFS/devices/system/cpu/cpufreq"

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 GOVERNOR   (e.g. performance)" >&2
    exit 2
fi
gov=$1
case $gov in
    *[!a-z_]*) echo "$0: bad governor name '$gov' (letters and _ only)" >&2; exit 2 ;;
esac

set -- "$base"/policy*
if [ ! -e "$1/scaling_governor" ]; then
    echo "$0: not available on this node: no cpufreq policies under $base" >&2
    echo "  (typical of a VM: the hypervisor controls CPU frequency; nothing to set)" >&2
    exit 4
fi

SUDO=
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "$0: needs root to write $base/*/scaling_governor" >&2; exit 1
    fi
fi

for p in "$@"; do
    avail=$(cat "$p/scaling_available_governors")
    case " $avail " in
        *" $gov "*) ;;
        *)
            drv=$(cat "$p/scaling_driver" 2>/dev/null || echo unknown)
            echo "$0: unknown governor '$gov' for $(basename "$p") ($drv): available: $avail" >&2
            mode=$(cat "$SYSFS/devices/system/cpu/intel_pstate/status" 2>/dev/null || cat "$SYSFS/devices/system/cpu/amd_pstate/status" 2>/dev/null || true)
            if [ "$mode" = active ]; then
                echo "  $drv is in active mode: only performance and powersave exist; powersave is the driver's own dynamic scaling" >&2
            fi
            exit 2 ;;
    esac
done

for p in "$@"; do
    old=$(cat "$p/scaling_governor")
    echo "$gov" | $SUDO tee "$p/scaling_governor" >/dev/null
    echo "$(basename "$p"): $old -> $(cat "$p/scaling_governor")"
done
