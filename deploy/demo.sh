#!/usr/bin/env bash
# The README's demo command: builds vmsync and runs the test-bed launcher's demo — two local libvirt nodes (each in its
# own network and mount namespace) as one cluster (a sync-controller, a node agent on each), the seed's VM applied with
# syncctl and live-migrated a → b → a with `syncctl migrate`, its disk block-copied and its streams tunnelled between
# the agents over mutual TLS, its heartbeat shown throughout. Everything it starts is torn down at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/packages
scratch=${VMSYNC_SCRATCH:-/var/tmp/vmsync-build}
set +o pipefail
swift build --scratch-path "$scratch" 2>&1 | { grep -vE '^\[[0-9]+/[0-9]+\] (Compiling|Emitting|Write|Linking|Wrapping|Merging)' || true; }
status=${PIPESTATUS[0]}
set -o pipefail
[ "$status" -eq 0 ] || { echo "demo: the build failed" >&2; exit 1; }
launcher="$scratch/debug/vmsync-testbed"
if [ "$(id -u)" -eq 0 ]; then exec "$launcher" demo "$@"; else exec sudo "$launcher" demo "$@"; fi
