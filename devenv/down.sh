#!/usr/bin/env bash
# Stop devenv processes. Data under .devenv/ is kept unless --purge is given.
#   devenv/down.sh [--purge] [component ...]
. "$(dirname "$0")/lib.sh"
. "$DEVENV_SRC/procs.sh"

purge=0
if [[ "${1:-}" == "--purge" ]]; then purge=1; shift; fi
components=("$@")
# Reverse start order: clients before the servers they talk to.
node_all=0
if [[ ${#components[@]} -eq 0 ]]; then
  node_all=1
  components=(netpol kube-proxy kubelet containerd kube-scheduler minio rabbitmq2 rabbitmq mariadb kube-controller-manager kube-apiserver etcd)
fi
[[ -d "$DEVENV_DIR" ]] || { log "nothing to stop"; exit 0; }
load_state
for c in "${components[@]}"; do
  # Pods outlive containerd; stop them with it.
  if [[ "$c" == containerd ]]; then stop_node_pods; fi
  stop_component "$c"
done
if (( node_all )); then node_network_down; fi
if (( purge )); then rm -rf "$DEVENV_DIR"; log "removed $DEVENV_DIR"; fi
