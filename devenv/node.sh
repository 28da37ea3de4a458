# A real Kubernetes node for the local platform (sourced after procs.sh):
# containerd + runc, kubelet, kube-proxy, a CNI bridge, NetworkPolicy
# enforcement by kube-network-policies, and CoreDNS as a pod.
#
# Everything stays on this machine: the pod network is a bridge with no
# uplink, every server binds to 127.0.0.1, and pods reach the platform's
# services through DNAT from the bridge's gateway address to 127.0.0.1.

NODE_DIR="$DEVENV_DIR/node"
NODE_NAME=localhost          # resolves to 127.0.0.1, where the kubelet listens
POD_CIDR=10.244.0.0/24
POD_GATEWAY=10.244.0.1       # the host as pods see it
POD_BRIDGE=tobr0
SERVICE_CIDR=10.0.0.0/24
KUBERNETES_SERVICE_IP=10.0.0.1
DNS_SERVICE_IP=10.0.0.10
NETPOL_QUEUE=100
CONTAINERD_SOCK="$NODE_DIR/run/containerd.sock"

node_bin() { echo "$CACHE_DIR/bin/node-$K8S_VERSION/$1"; }

# The host ports pods may reach on $POD_GATEWAY (each DNATed to 127.0.0.1).
node_exposed_ports() {
  local ports="$MYSQL_PORT $MINIO_PORT $AMQP_PORT $RABBIT_MGMT_PORT"
  # The second RabbitMQ server (procs.sh), when it runs.
  if [[ " $(rabbit_components) " == *" rabbitmq2 "* ]]; then ports+=" $AMQP2_PORT $RABBIT2_MGMT_PORT"; fi
  echo "$ports"
}

make_node_pki() {
  [[ -f "$PKI/kubelet.crt" ]] && return
  log "pki: node client certificates"
  (
    cd "$PKI"; umask 077
    local name subj
    for name in kube-scheduler kubelet kube-proxy; do
      case $name in
        kube-scheduler) subj="/CN=system:kube-scheduler" ;;
        kubelet) subj="/O=system:nodes/CN=system:node:$NODE_NAME" ;;
        kube-proxy) subj="/CN=system:kube-proxy" ;;
      esac
      openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "$subj" 2>/dev/null
      openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -out "$name.crt" 2>/dev/null
      rm -f "$name.csr"
    done
  )
}

# node_kubeconfig NAME -> the path of a kubeconfig with NAME's client certificate
node_kubeconfig() {
  mkdir -p "$NODE_DIR"
  client_kubeconfig "$NODE_DIR/$1.kubeconfig" "$1"
  echo "$NODE_DIR/$1.kubeconfig"
}

# ---- host network: bridge, sysctls, DNAT to loopback, policy steering -----

node_network_up() {
  if ! ip link show "$POD_BRIDGE" >/dev/null 2>&1; then
    ip link add "$POD_BRIDGE" type bridge
    ip addr add "$POD_GATEWAY/24" dev "$POD_BRIDGE"
  fi
  ip link set "$POD_BRIDGE" up
  sysctl -qw net.ipv4.ip_forward=1
  sysctl -qw net.bridge.bridge-nf-call-iptables=1
  # Lets DNAT from the bridge to 127.0.0.1 be delivered (as kube-proxy does
  # for localhost NodePorts); only the ports listed below are DNATed.
  sysctl -qw "net.ipv4.conf.$POD_BRIDGE.route_localnet=1"
  local ports; ports=$(node_exposed_ports | tr ' ' ',')
  # A NAT chain ahead of kube-proxy's (priority -100): the first NAT binding
  # wins, so the kubernetes Service reaches the API server on 127.0.0.1.
  nft -f - <<NFT
table ip devenv-node
delete table ip devenv-node
table ip devenv-node {
  chain prerouting {
    type nat hook prerouting priority -110; policy accept;
    iifname "$POD_BRIDGE" ip daddr $KUBERNETES_SERVICE_IP tcp dport 443 dnat to 127.0.0.1:$APISERVER_PORT
    iifname "$POD_BRIDGE" ip daddr $POD_GATEWAY tcp dport { $ports } dnat to 127.0.0.1
  }
  chain input {
    type filter hook input priority 0; policy accept;
    # From pods, the host answers only on the ports above and DNS-free ICMP.
    iifname "$POD_BRIDGE" ct status dnat accept
    iifname "$POD_BRIDGE" ct state established,related accept
    iifname "$POD_BRIDGE" meta l4proto icmp accept
    iifname "$POD_BRIDGE" drop
  }
}
NFT
  node_steering_up
}

# kube-network-policies decides on the first packet of every connection of a
# pod, which its own nftables rules send to NFQUEUE $NETPOL_QUEUE with the
# `queue` statement. This kernel is built without nft_queue (those rules fail
# to load with ENOENT) but has the xtables NFQUEUE target, so the same
# packets are steered by these iptables rules instead:
#  - postrouting: after kube-proxy's DNAT, so Services are judged by the pod
#    they lead to, as in kind;
#  - prerouting: connections from pods to the host itself (the API server and
#    the platform's services), judged by the address the pod dialled.
node_steering_up() {
  node_steering_down
  iptables -t mangle -N DEVENV-NETPOL
  iptables -t mangle -A DEVENV-NETPOL -s "$POD_CIDR" -j NFQUEUE --queue-num "$NETPOL_QUEUE"
  iptables -t mangle -A DEVENV-NETPOL -d "$POD_CIDR" -j NFQUEUE --queue-num "$NETPOL_QUEUE"
  iptables -t mangle -I POSTROUTING -m conntrack --ctstate NEW -j DEVENV-NETPOL
  iptables -t mangle -I PREROUTING -i "$POD_BRIDGE" -m conntrack --ctstate NEW -d "$POD_GATEWAY" -j NFQUEUE --queue-num "$NETPOL_QUEUE"
  iptables -t mangle -I PREROUTING -i "$POD_BRIDGE" -m conntrack --ctstate NEW -d "$KUBERNETES_SERVICE_IP" -p tcp --dport 443 -j NFQUEUE --queue-num "$NETPOL_QUEUE"
}

node_steering_down() {
  iptables -t mangle -D POSTROUTING -m conntrack --ctstate NEW -j DEVENV-NETPOL 2>/dev/null || true
  iptables -t mangle -D PREROUTING -i "$POD_BRIDGE" -m conntrack --ctstate NEW -d "$POD_GATEWAY" -j NFQUEUE --queue-num "$NETPOL_QUEUE" 2>/dev/null || true
  iptables -t mangle -D PREROUTING -i "$POD_BRIDGE" -m conntrack --ctstate NEW -d "$KUBERNETES_SERVICE_IP" -p tcp --dport 443 -j NFQUEUE --queue-num "$NETPOL_QUEUE" 2>/dev/null || true
  iptables -t mangle -F DEVENV-NETPOL 2>/dev/null || true
  iptables -t mangle -X DEVENV-NETPOL 2>/dev/null || true
}

node_network_down() {
  [[ -x "$(node_bin kube-proxy)" ]] && "$(node_bin kube-proxy)" --cleanup >/dev/null 2>&1 || true
  node_steering_down
  nft delete table ip devenv-node 2>/dev/null || true
  ip link del "$POD_BRIDGE" 2>/dev/null || true
}

# ---- containerd -----------------------------------------------------------

containerd_bin() { echo "$CACHE_DIR/bin/containerd-$CONTAINERD_VERSION"; }

write_containerd_config() {
  mkdir -p "$NODE_DIR"/{run/nri,containerd,cni/net.d,cni/ipam}
  cat > "$NODE_DIR/containerd.toml" <<TOML
version = 3
root = "$NODE_DIR/containerd/root"
state = "$NODE_DIR/containerd/state"
disabled_plugins = ["io.containerd.internal.v1.tracing"]
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$NODE_DIR/run/containerd.sock.ttrpc"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$PAUSE_IMAGE"
[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  # Without CAP_SYS_RESOURCE a container may not get a lower OOM score than
  # containerd itself.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$(command -v runc)"
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$NODE_DIR/cni/net.d"
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
# kube-network-policies subscribes here to learn each pod's IP before the
# pod sends its first packet (kubernetes/kubernetes#85966).
[plugins.'io.containerd.nri.v1.nri']
  disable = false
  socket_path = "$NODE_DIR/run/nri/nri.sock"
  plugin_path = "$NODE_DIR/nri/plugins"
  plugin_config_path = "$NODE_DIR/nri/conf.d"
TOML
  cat > "$NODE_DIR/cni/net.d/10-devenv.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "devenv",
  "plugins": [
    {
      "type": "bridge", "bridge": "$POD_BRIDGE", "isGateway": true,
      "ipMasq": true, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$NODE_DIR/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
CNI
}

containerd_ready() { "$(containerd_bin)/ctr" --address "$CONTAINERD_SOCK" version; }

start_containerd() {
  # Snapshot and state directories are made with containerd's umask: a
  # caller's 077 would leave image root directories unreadable to non-root
  # containers.
  umask 022
  node_network_up
  write_containerd_config
  # PATH: containerd starts the shim of its own release.
  PATH="$(containerd_bin):$PATH" spawn containerd "$(containerd_bin)/containerd" --config "$NODE_DIR/containerd.toml"
  wait_until 60 containerd containerd_ready
  # The node's own images; make e2e builds and imports the operator's.
  PATH="$(containerd_bin):$PATH" CONTAINERD_ADDRESS="$CONTAINERD_SOCK" bash "$DEVENV_SRC/images.sh" pause netpol coredns >>"$LOGS/images.log" 2>&1 \
    || die "images failed, see $LOGS/images.log"
}

# ---- kube-scheduler -------------------------------------------------------

start_kube_scheduler() {
  make_node_pki
  spawn kube-scheduler "$(node_bin kube-scheduler)" --kubeconfig "$(node_kubeconfig kube-scheduler)" \
    --authentication-kubeconfig "$(node_kubeconfig kube-scheduler)" \
    --authorization-kubeconfig "$(node_kubeconfig kube-scheduler)" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" -v=1
  wait_until 60 kube-scheduler curl -skf "https://127.0.0.1:$SCHEDULER_PORT/healthz"
}

# ---- kubelet --------------------------------------------------------------

write_kubelet_config() {
  local port=$1 healthz=$2
  cat > "$NODE_DIR/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $healthz
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
clusterDNS: [$DNS_SERVICE_IP]
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
failSwapOn: false
failCgroupV1: false
podCIDR: $POD_CIDR
maxPods: 60
serializeImagePulls: false
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
kubeAPIQPS: 50
kubeAPIBurst: 100
YAML
}

kubelet_ready() {
  curl -sf "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz" >/dev/null \
    && kubectl_admin get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -qx True
}

kubectl_admin() { "$(kube_bin kubectl)" --kubeconfig "$DEVENV_DIR/kubeconfig" "$@"; }

start_kubelet() {
  make_node_pki
  umask 022   # volume directories must be readable by non-root containers
  write_kubelet_config "$KUBELET_PORT" "$KUBELET_HEALTHZ_PORT"
  mkdir -p "$NODE_DIR/kubelet"
  spawn kubelet "$(node_bin kubelet)" --config "$NODE_DIR/kubelet.yaml" \
    --kubeconfig "$(node_kubeconfig kubelet)" --hostname-override "$NODE_NAME" \
    --node-ip "$POD_GATEWAY" --root-dir "$NODE_DIR/kubelet" --cert-dir "$NODE_DIR/kubelet/pki" -v=1
  wait_until 120 "kubelet (node Ready)" kubelet_ready
}

# ---- kube-proxy and kube-network-policies ---------------------------------

start_kube_proxy() {
  spawn kube-proxy "$(node_bin kube-proxy)" --kubeconfig "$(node_kubeconfig kube-proxy)" \
    --hostname-override "$NODE_NAME" --proxy-mode iptables --cluster-cidr "$POD_CIDR" \
    --bind-address 127.0.0.1 --healthz-bind-address "127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT" \
    --metrics-bind-address "127.0.0.1:$KUBE_PROXY_METRICS_PORT" --conntrack-max-per-core 0 -v=1
  wait_until 60 kube-proxy curl -sf "http://127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT/healthz"
}

# rolled_out KIND NAME: every replica runs the current template and is available.
rolled_out() {
  kubectl_admin -n kube-system get "$1" "$2" -o json | python3 -c '
import json, sys
o = json.load(sys.stdin); s = o.get("status", {})
done = s.get("observedGeneration") == o["metadata"]["generation"] and (
    s.get("updatedNumberScheduled", 0) == s.get("desiredNumberScheduled", -1) == s.get("numberAvailable", 0) > 0
    if o["kind"] == "DaemonSet" else
    s.get("updatedReplicas", 0) == o["spec"]["replicas"] == s.get("availableReplicas", 0) == s.get("replicas", 0))
sys.exit(0 if done else 1)'
}

netpol_ready() {
  rolled_out daemonset kube-network-policies && curl -sf "http://127.0.0.1:$NETPOL_METRICS_PORT/metrics" >/dev/null
}

# node_manifest FILE: a manifest of devenv/node with this environment's values.
node_manifest() {
  sed -e "s|@DNS_SERVICE_IP@|$DNS_SERVICE_IP|g" -e "s|@COREDNS_IMAGE@|$COREDNS_IMAGE|g" \
      -e "s|@NETPOL_IMAGE@|$NETPOL_IMAGE|g" -e "s|@NODE_NAME@|$NODE_NAME|g" \
      -e "s|@NETPOL_QUEUE@|$NETPOL_QUEUE|g" -e "s|@NETPOL_METRICS_PORT@|$NETPOL_METRICS_PORT|g" \
      -e "s|@APISERVER_PORT@|$APISERVER_PORT|g" -e "s|@NRI_DIR@|$NODE_DIR/run/nri|g" "$DEVENV_SRC/node/$1"
}

start_netpol() {
  node_manifest netpol.yaml | kubectl_admin apply --server-side --force-conflicts --field-manager devenv -f - >/dev/null
  wait_until 90 kube-network-policies netpol_ready
}

# ---- CoreDNS (a pod, as the tenants' allow-dns NetworkPolicy expects) ------

dns_ready() { rolled_out deployment coredns; }

start_coredns() {
  node_manifest coredns.yaml | kubectl_admin apply --server-side --force-conflicts --field-manager devenv -f - >/dev/null
  wait_until 120 coredns dns_ready
}

# ---- stop -----------------------------------------------------------------

# Pods outlive containerd (their shims are detached): stop them first, then
# unmount what the kubelet and the snapshotter left mounted.
stop_node_pods() {
  # The containers themselves: a shim's death does not end its container.
  local cg procs
  for cg in /sys/fs/cgroup/pids/kubepods /sys/fs/cgroup/unified/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d "$cg" ]] || continue
    procs=$(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u | tr '\n' ' ')
    # shellcheck disable=SC2086
    [[ -z "${procs// }" ]] || kill -KILL $procs 2>/dev/null || true
  done
  pkill -TERM -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" 2>/dev/null || true
  local deadline=$(( $(date +%s) + 20 ))
  while pgrep -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" >/dev/null && (( $(date +%s) < deadline )); do
    sleep 0.2
  done
  pkill -KILL -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" 2>/dev/null || true
  local m
  while read -r m; do umount -l "$m" 2>/dev/null || true; done \
    < <(awk -v d="$NODE_DIR/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r)
}
