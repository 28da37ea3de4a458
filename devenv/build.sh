#!/usr/bin/env bash
# Build (or reuse from cache) every binary devenv runs: etcd, kube-apiserver,
# kube-controller-manager, kubectl and minio; `build.sh coredns` builds the
# CoreDNS binary that devenv/images.sh puts into an image. Binaries are cached
# by version under $CACHE_DIR so a second run takes seconds.
. "$(dirname "$0")/lib.sh"

command -v go >/dev/null || die "go is not installed (need Go >= 1.25)"

# k8s_build SET NOTE CMD...: build k8s.io/kubernetes/cmd/CMD... of the pinned
# release, with an honest version, into the cache directory SET-$K8S_VERSION.
k8s_build() {
  local set=$1 note=$2; shift 2
  local out="$CACHE_DIR/bin/$set-$K8S_VERSION" cmd missing=0
  for cmd in "$@"; do [[ -x "$out/$cmd" ]] || missing=1; done
  if (( ! missing )); then log "$* $K8S_VERSION: cached"; return; fi
  grep -q "k8s.io/kubernetes $K8S_VERSION" "$DEVENV_SRC/go/kubernetes/go.mod" \
    || die "devenv/go/kubernetes/go.mod does not pin $K8S_VERSION"
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  log "$* $K8S_VERSION: building$note"
  local t=$(date +%s) tmp="$out.tmp.$$"
  mkdir -p "$tmp"
  (cd "$DEVENV_SRC/go/kubernetes" && go build -mod=mod -trimpath -ldflags "$ldflags" -o "$tmp/" \
      "${@/#/k8s.io/kubernetes/cmd/}")
  rm -rf "$out"; mv "$tmp" "$out"
  log "$* $K8S_VERSION: built in $(( $(date +%s) - t ))s"
}

build_kubernetes() {
  k8s_build kubernetes " (first time: 15-30 min on 2 cores)" kube-apiserver kube-controller-manager kubectl
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

# go_install NAME VERSION PACKAGE [LDFLAGS]: `go install PACKAGE@VERSION` into
# the version cache as NAME (go names the binary after PACKAGE's last element).
go_install() {
  local name=$1 version=$2 pkg=$3 ldflags=${4:-"-s -w"} bin t gobin
  bin=$(bin_path "$name" "$version")
  if [[ -x "$bin" ]]; then log "$name $version: cached"; return; fi
  log "$name $version: building"
  t=$(date +%s); gobin=$(mktemp -d)
  GOBIN="$gobin" go install -trimpath -ldflags "$ldflags" "$pkg@$version"
  mkdir -p "$(dirname "$bin")"; mv "$gobin/${pkg##*/}" "$bin"; rm -rf "$gobin"
  log "$name $version: built in $(( $(date +%s) - t ))s"
}

build_minio() { go_install minio "$MINIO_VERSION" github.com/minio/minio; }

# What running pods takes, from the same pinned Kubernetes module: the
# scheduler, kubelet and kube-proxy.
build_node() { k8s_build node "" kube-scheduler kubelet kube-proxy; }

# NetworkPolicy enforcement: the SIG Network implementation kind ships.
build_netpol() { go_install kube-network-policies "$KNP_VERSION" sigs.k8s.io/kube-network-policies/cmd; }

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

# GitCommit is what CoreDNS's own Makefile stamps (`coredns -version`).
build_coredns() {
  go_install coredns "$COREDNS_VERSION" github.com/coredns/coredns \
    "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION"
}

case "${1:-all}" in
  all) build_etcd; build_minio; build_kubernetes ;;
  node) build_node; build_containerd; build_netpol; build_coredns ;;
  etcd|minio|kubernetes|containerd|netpol|coredns) "build_$1" ;;
  *) die "usage: build.sh [all|node|etcd|minio|kubernetes|containerd|netpol|coredns]" ;;
esac
