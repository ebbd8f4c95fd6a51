#!/usr/bin/env bash
# The README's demo command: builds the test-bed launcher and runs its demo — two local libvirt nodes (each in its own
# network and mount namespace), the tiny guest started on the first and live-migrated with its disk to the second and
# back through vmsync's Hypervisor module, its heartbeat shown throughout. Everything it starts is torn down at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/packages
scratch=${VMSYNC_SCRATCH:-/var/tmp/vmsync-build}
set +o pipefail
swift build --scratch-path "$scratch" --product vmsync-testbed 2>&1 | { grep -vE '^\[[0-9]+/[0-9]+\] (Compiling|Emitting|Write|Linking|Wrapping|Merging)' || true; }
status=${PIPESTATUS[0]}
set -o pipefail
[ "$status" -eq 0 ] || { echo "demo: the build failed" >&2; exit 1; }
launcher="$scratch/debug/vmsync-testbed"
if [ "$(id -u)" -eq 0 ]; then exec "$launcher" demo "$@"; else exec sudo "$launcher" demo "$@"; fi
