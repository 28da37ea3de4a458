#!/usr/bin/env bash
# Start the local platform on 127.0.0.1: etcd, kube-apiserver,
# kube-controller-manager, MariaDB, two RabbitMQ servers, MinIO and a node (containerd,
# kubelet, kube-proxy, kube-network-policies, CoreDNS). Idempotent: a
# component that is already running and healthy is reused.
#   devenv/up.sh               everything (builds what the cache lacks)
#   devenv/up.sh mariadb ...   only the named components
#   DEVENV_NODE=0 devenv/up.sh everything but the node
#   DEVENV_RABBITMQ_SERVERS=1 devenv/up.sh   one RabbitMQ server instead of two
. "$(dirname "$0")/lib.sh"
. "$DEVENV_SRC/procs.sh"

mkdir -p "$DEVENV_DIR"/{bin,logs,run,pki}
# RabbitMQ runs as its own user and must reach its data dir; secrets are
# kept private by their own modes.
chmod 711 "$DEVENV_DIR"; chmod 700 "$DEVENV_DIR/pki" "$DEVENV_DIR/run"
load_state

components=("$@")
rabbit_components >/dev/null   # stops here on a bad DEVENV_RABBITMQ_SERVERS
NODE_COMPONENTS=(kube-scheduler containerd kubelet kube-proxy netpol coredns)
if [[ ${#components[@]} -eq 0 ]]; then
  # shellcheck disable=SC2207
  components=(etcd kube-apiserver kube-controller-manager mariadb $(rabbit_components) minio)
  [[ "${DEVENV_NODE:-1}" == 0 ]] || components+=("${NODE_COMPONENTS[@]}")
fi

if [[ $# -eq 0 ]]; then
  log "preparing binaries"
  bash "$DEVENV_SRC/build.sh" all
  [[ "${DEVENV_NODE:-1}" == 0 ]] || bash "$DEVENV_SRC/build.sh" node
  kube_bin="$CACHE_DIR/bin/kubernetes-$K8S_VERSION"
  ln -sf "$kube_bin/kubectl" "$DEVENV_DIR/bin/kubectl"
fi

for c in "${components[@]}"; do
  case "$c" in
    etcd|kube-apiserver|kube-controller-manager|mariadb|rabbitmq|rabbitmq2|minio) ;;
    kube-scheduler|containerd|kubelet|kube-proxy|netpol|coredns) ;;
    *) die "unknown component '$c'" ;;
  esac
  t=$(date +%s)
  # netpol and coredns run as pods: their manifests are (re)applied.
  if is_running "$c"; then log "$c: already running (pid $(cat "$DEVENV_DIR/run/$c.pid"))"; continue; fi
  log "$c: starting"
  "start_${c//-/_}"
  log "$c: ready in $(( $(date +%s) - t ))s"
done

write_outputs
log "environment ready; use: source $DEVENV_DIR/env"
