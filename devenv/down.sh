#!/usr/bin/env bash
# Stop devenv processes. Data under .devenv/ is kept unless --purge is given.
#   devenv/down.sh [--purge] [component ...]
. "$(dirname "$0")/lib.sh"
. "$DEVENV_SRC/procs.sh"

purge=0
if [[ "${1:-}" == "--purge" ]]; then purge=1; shift; fi
components=("$@")
# Reverse start order: clients before the servers they talk to.
[[ ${#components[@]} -gt 0 ]] || components=(minio rabbitmq mariadb kube-controller-manager kube-apiserver etcd)
[[ -d "$DEVENV_DIR" ]] || { log "nothing to stop"; exit 0; }
load_state
for c in "${components[@]}"; do stop_component "$c"; done
if (( purge )); then rm -rf "$DEVENV_DIR"; log "removed $DEVENV_DIR"; fi
