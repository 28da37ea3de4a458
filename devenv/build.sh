#!/usr/bin/env bash
# Build (or reuse from cache) every binary devenv runs: etcd, kube-apiserver,
# kube-controller-manager, kubectl and minio; `build.sh coredns` builds the
# CoreDNS binary that devenv/images.sh puts into an image. Binaries are cached
# by version under $CACHE_DIR so a second run takes seconds.
. "$(dirname "$0")/lib.sh"

command -v go >/dev/null || die "go is not installed (need Go >= 1.25)"

build_kubernetes() {
  local out="$CACHE_DIR/bin/kubernetes-$K8S_VERSION"
  if [[ -x "$out/kube-apiserver" && -x "$out/kube-controller-manager" && -x "$out/kubectl" ]]; then
    log "kubernetes $K8S_VERSION: cached"; return
  fi
  grep -q "k8s.io/kubernetes $K8S_VERSION" "$DEVENV_SRC/go/kubernetes/go.mod" \
    || die "devenv/go/kubernetes/go.mod does not pin $K8S_VERSION"
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  log "kubernetes $K8S_VERSION: building kube-apiserver, kube-controller-manager, kubectl (first time: 15-30 min on 2 cores)"
  local t=$(date +%s) tmp="$out.tmp.$$"
  mkdir -p "$tmp"
  (cd "$DEVENV_SRC/go/kubernetes" && go build -mod=mod -trimpath -ldflags "$ldflags" -o "$tmp/" \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kubectl)
  rm -rf "$out"; mv "$tmp" "$out"
  log "kubernetes $K8S_VERSION: built in $(( $(date +%s) - t ))s"
}

build_etcd() {
  local bin; bin=$(bin_path etcd "$ETCD_VERSION")
  if [[ -x "$bin" ]]; then log "etcd $ETCD_VERSION: cached"; return; fi
  grep -q "go.etcd.io/etcd/server/v3 $ETCD_VERSION" "$DEVENV_SRC/go/etcd/go.mod" \
    || die "devenv/go/etcd/go.mod does not pin $ETCD_VERSION"
  log "etcd $ETCD_VERSION: building"
  local t=$(date +%s)
  mkdir -p "$(dirname "$bin")"
  (cd "$DEVENV_SRC/go/etcd" && go build -mod=mod -trimpath -ldflags "-s -w" -o "$bin.tmp" .)
  mv "$bin.tmp" "$bin"
  log "etcd $ETCD_VERSION: built in $(( $(date +%s) - t ))s"
}

build_minio() {
  local bin; bin=$(bin_path minio "$MINIO_VERSION")
  if [[ -x "$bin" ]]; then log "minio $MINIO_VERSION: cached"; return; fi
  log "minio $MINIO_VERSION: building"
  local t=$(date +%s) gobin
  gobin=$(mktemp -d)
  GOBIN="$gobin" go install -trimpath -ldflags "-s -w" "github.com/minio/minio@$MINIO_VERSION"
  mkdir -p "$(dirname "$bin")"; mv "$gobin/minio" "$bin"; rmdir "$gobin"
  log "minio $MINIO_VERSION: built in $(( $(date +%s) - t ))s"
}

# What running pods takes, from the same pinned Kubernetes module: the
# scheduler, kubelet and kube-proxy.
build_node() {
  local out="$CACHE_DIR/bin/node-$K8S_VERSION"
  if [[ -x "$out/kubelet" && -x "$out/kube-proxy" && -x "$out/kube-scheduler" ]]; then
    log "kube-scheduler, kubelet, kube-proxy $K8S_VERSION: cached"; return
  fi
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  log "kube-scheduler, kubelet, kube-proxy $K8S_VERSION: building"
  local t=$(date +%s) tmp="$out.tmp.$$"
  mkdir -p "$tmp"
  (cd "$DEVENV_SRC/go/kubernetes" && go build -mod=mod -trimpath -ldflags "$ldflags" -o "$tmp/" \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
  rm -rf "$out"; mv "$tmp" "$out"
  log "kube-scheduler, kubelet, kube-proxy $K8S_VERSION: built in $(( $(date +%s) - t ))s"
}

# NetworkPolicy enforcement: the SIG Network implementation kind ships.
build_netpol() {
  local bin; bin=$(bin_path kube-network-policies "$KNP_VERSION")
  if [[ -x "$bin" ]]; then log "kube-network-policies $KNP_VERSION: cached"; return; fi
  log "kube-network-policies $KNP_VERSION: building"
  local t=$(date +%s) gobin
  gobin=$(mktemp -d)
  GOBIN="$gobin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kube-network-policies/cmd@$KNP_VERSION"
  mkdir -p "$(dirname "$bin")"; mv "$gobin/cmd" "$bin"; rmdir "$gobin"
  log "kube-network-policies $KNP_VERSION: built in $(( $(date +%s) - t ))s"
}

build_containerd() {
  local dir="$CACHE_DIR/bin/containerd-$CONTAINERD_VERSION"
  if [[ -x "$dir/containerd" && -x "$dir/containerd-shim-runc-v2" && -x "$dir/ctr" ]]; then
    log "containerd $CONTAINERD_VERSION: cached"; return
  fi
  log "containerd $CONTAINERD_VERSION: building"
  local t=$(date +%s) gobin m=github.com/containerd/containerd/v2/cmd
  gobin=$(mktemp -d)
  GOBIN="$gobin" go install -trimpath -ldflags "-s -w" "$m/containerd@$CONTAINERD_VERSION" \
    "$m/containerd-shim-runc-v2@$CONTAINERD_VERSION" "$m/ctr@$CONTAINERD_VERSION"
  rm -rf "$dir"; mkdir -p "$(dirname "$dir")"; mv "$gobin" "$dir"; chmod 755 "$dir"
  log "containerd $CONTAINERD_VERSION: built in $(( $(date +%s) - t ))s"
}

build_coredns() {
  local bin; bin=$(bin_path coredns "$COREDNS_VERSION")
  if [[ -x "$bin" ]]; then log "coredns $COREDNS_VERSION: cached"; return; fi
  log "coredns $COREDNS_VERSION: building"
  local t gobin
  t=$(date +%s); gobin=$(mktemp -d)
  # GitCommit is what CoreDNS's own Makefile stamps (`coredns -version`).
  GOBIN="$gobin" go install -trimpath \
    -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" \
    "github.com/coredns/coredns@$COREDNS_VERSION"
  mkdir -p "$(dirname "$bin")"; mv "$gobin/coredns" "$bin"; rmdir "$gobin"
  log "coredns $COREDNS_VERSION: built in $(( $(date +%s) - t ))s"
}

case "${1:-all}" in
  all) build_etcd; build_minio; build_kubernetes ;;
  node) build_node; build_containerd; build_netpol; build_coredns ;;
  etcd|minio|kubernetes|containerd|netpol|coredns) "build_$1" ;;
  *) die "usage: build.sh [all|node|etcd|minio|kubernetes|containerd|netpol|coredns]" ;;
esac
