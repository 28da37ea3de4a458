# Shared helpers for the devenv scripts (sourced, not executed).
set -euo pipefail

DEVENV_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$DEVENV_SRC/.." && pwd)"
DEVENV_DIR="${DEVENV_DIR:-$REPO_ROOT/.devenv}"
CACHE_DIR="${TENANT_OPERATOR_CACHE:-$HOME/.cache/tenant-operator}"
# shellcheck source=versions.env
. "$DEVENV_SRC/versions.env"

export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0

_t0=$(date +%s)
log() { printf '[devenv %4ss] %s\n' "$(( $(date +%s) - _t0 ))" "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }

# bin_path NAME VERSION -> the cached binary's path
bin_path() { echo "$CACHE_DIR/bin/$1-$2/$1"; }
