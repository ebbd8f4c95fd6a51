# Shared helpers for the certs/ scripts (sourced, not run).
set -euo pipefail

die() { echo "$(basename "$0"): $*" >&2; exit 1; }
need_dir() { [ -d "$1" ] || die "directory $1 does not exist"; }
