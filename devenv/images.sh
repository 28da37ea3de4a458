#!/usr/bin/env bash
# Build (or reuse from cache) the container images a local single-node
# Kubernetes runs, without a registry:
#   pause     $PAUSE_IMAGE, the sandbox image, from Kubernetes' own pause.c
#   coredns   localhost/coredns:$COREDNS_VERSION, the CoreDNS binary from scratch
#   operator  localhost/tenant-operator:<content hash>, the repo's Dockerfile
#             built on a local Debian base (localhost/tenant-operator-base,
#             made with mmdebstrap) instead of the public python image
# Each image is exported once to an OCI archive under $CACHE_DIR/images/,
# named after its tag, which is keyed by version or content, and after its
# recipe (the hash of the function here that builds it): a warm run only
# checks that the archives exist. With CONTAINERD_ADDRESS set (a containerd
# socket), the archives are imported into its k8s.io namespace, skipping the
# images it already holds at the same digest (CONTAINERD_SNAPSHOTTER, if
# set, names the snapshotter to unpack into). The operator image's tag is
# written to $DEVENV_DIR/image.env as OPERATOR_IMAGE=...
#   devenv/images.sh                 all images
#   devenv/images.sh pause operator  only these
# Needs root (buildah's storage, mmdebstrap, the containerd socket), gcc, go,
# buildah and mmdebstrap: devenv/install-deps.sh installs them.
. "$(dirname "$0")/lib.sh"
# Files copied into images keep their modes: never the callers' umask 077.
umask 022

[[ $(id -u) -eq 0 ]] || die "images.sh needs root (buildah storage, mmdebstrap, containerd)"
for tool in buildah mmdebstrap gcc go; do
  command -v "$tool" >/dev/null || die "$tool is not installed (run devenv/install-deps.sh)"
done

IMAGES_DIR="$CACHE_DIR/images"
BASE_REPO="localhost/tenant-operator-base"
OPERATOR_REPO="localhost/tenant-operator"
# The base image: what the Dockerfile's two stages need from python:3.11-slim
# (python3 and pip), plus what its runtime stage installs (so its apt-get is
# a no-op) and passwd for groupadd/useradd. Bookworm's python3 is 3.11.
BASE_SUITE=bookworm
BASE_PACKAGES=python3,python3-pip,mariadb-client,ca-certificates,passwd
# The host's Debian mirror and apt settings, used by mmdebstrap and kept in
# the image (the Dockerfile's apt-get runs against them too).
HOST_SOURCES=/etc/apt/sources.list.d/debian.sources
HOST_APTCONF=/etc/apt/apt.conf.d/99artifact-registry
# The host's CA bundle replaces the image's, so pip inside the build trusts
# what the host trusts.
HOST_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

# Scratch space and working containers go away with the script, also when
# it fails halfway.
WORK=$(mktemp -d)
CONTAINERS=()
cleanup() {
  local c
  for c in "${CONTAINERS[@]}"; do buildah rm "$c" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
# new_container IMAGE: sets $ctr to a working container of IMAGE
new_container() { ctr=$(buildah from -q "$1"); CONTAINERS+=("$ctr"); }

have_image() { buildah inspect --type image "$1" >/dev/null 2>&1; }
short_hash() { sha256sum | cut -c1-12; }
# The recipe of an image is written into it as a label, so that an image of
# the same tag in buildah's storage that was built otherwise is not taken
# for this one.
RECIPE_LABEL=dev.tenant-operator.devenv.recipe
# recipe_of TAG BUILD_FUNCTION -> the hash of both
recipe_of() { { echo "$1"; declare -f "$2"; } | short_hash; }
# have_recipe TAG RECIPE: buildah's storage holds TAG, built by RECIPE
have_recipe() {
  [[ $(buildah inspect --type image --format "{{index .OCIv1.Config.Labels \"$RECIPE_LABEL\"}}" "$1" 2>/dev/null) == "$2" ]]
}
# archive_of TAG RECIPE -> the image's OCI archive under $IMAGES_DIR
archive_of() { local name=${1//\//_}; echo "$IMAGES_DIR/${name//:/_}.$2.oci.tar"; }

# export_image TAG FILE: buildah storage -> OCI archive. The archive's index
# names the image TAG, which `ctr images import` keeps.
export_image() {
  local tag=$1 file=$2
  mkdir -p "$IMAGES_DIR"
  buildah push -q "$tag" "oci-archive:$file.tmp.$$:$tag" >/dev/null
  mv "$file.tmp.$$" "$file"
  log "$tag: exported to $file ($(du -h "$file" | cut -f1))"
}

# ensure_image TAG BUILD_FUNCTION: the archive exists afterwards and is
# queued for import. The build runs only when neither the archive nor the
# image in buildah storage exist; BUILD_FUNCTION TAG labels the image with
# $RECIPE.
ensure_image() {
  local tag=$1 build=$2 file t
  RECIPE=$(recipe_of "$tag" "$build"); file=$(archive_of "$tag" "$RECIPE")
  IMPORT_TAGS+=("$tag"); IMPORT_FILES+=("$file")
  # touch: the archive's age is its last use (prune_operator keeps the newest).
  if [[ -f "$file" ]]; then touch "$file"; log "$tag: cached ($file)"; return; fi
  if ! have_recipe "$tag" "$RECIPE"; then
    local old; old=$(buildah inspect --type image --format '{{.FromImageID}}' "$tag" 2>/dev/null || true)
    t=$(date +%s)
    log "$tag: building"
    "$build" "$tag"
    log "$tag: built in $(( $(date +%s) - t ))s ($(image_size "$tag"))"
    # The image this tag named before, unless another tag still names it.
    [[ -z "$old" ]] || buildah rmi "$old" >/dev/null 2>&1 || true
  fi
  export_image "$tag" "$file"
}

image_size() { buildah images --format '{{.Size}}' "$1" | head -1; }

# --- pause ------------------------------------------------------------------

build_pause() {
  local tag=$1 k8s_mod="k8s.io/kubernetes@$K8S_VERSION" dir src ctr
  dir="$(go env GOMODCACHE)/$k8s_mod/build/pause"
  if [[ ! -f "$dir/linux/pause.c" ]]; then
    log "pause: downloading $k8s_mod"
    (cd "$DEVENV_SRC/go/kubernetes" && GOFLAGS=-mod=mod go mod download "$k8s_mod")
  fi
  src="$dir/linux/pause.c"
  [[ -f "$src" ]] || die "$src not found after go mod download"
  # The Makefile there tags the image it builds; it must be the one pinned.
  local version=${tag##*:}
  grep -qx "TAG ?= $version" "$dir/Makefile" \
    || die "$dir/Makefile does not build pause $version (PAUSE_IMAGE=$PAUSE_IMAGE)"
  # The Makefile's CFLAGS; VERSION is what `pause -v` prints (v<tag>-<rev>).
  gcc -Os -Wall -Werror -static -DVERSION="v$version-$K8S_VERSION" -o "$WORK/pause" "$src"
  "$WORK/pause" -v >/dev/null || die "the pause binary does not run"
  # As build/pause/Dockerfile: from scratch, USER 65535:65535.
  new_container scratch
  buildah copy -q --chmod 0755 "$ctr" "$WORK/pause" /pause >/dev/null
  buildah config --entrypoint '["/pause"]' --user 65535:65535 --label "$RECIPE_LABEL=$RECIPE" "$ctr"
  buildah commit -q --rm "$ctr" "$tag" >/dev/null
}

# --- coredns ----------------------------------------------------------------

# kube-network-policies runs as a privileged host-network DaemonSet (as in
# kind): a static binary from scratch.
build_netpol_image() {
  local tag=$1 ctr
  bash "$DEVENV_SRC/build.sh" netpol
  new_container scratch
  buildah copy -q --chmod 0755 "$ctr" "$(bin_path kube-network-policies "$KNP_VERSION")" /bin/netd >/dev/null
  buildah config --entrypoint '["/bin/netd"]' --label "$RECIPE_LABEL=$RECIPE" "$ctr"
  buildah commit -q --rm "$ctr" "$tag" >/dev/null
}

build_coredns_image() {
  local tag=$1 bin ctr
  bash "$DEVENV_SRC/build.sh" coredns
  bin=$(bin_path coredns "$COREDNS_VERSION")
  cp "$bin" "$WORK/coredns"
  # As CoreDNS's own image: non-root (numeric, for runAsNonRoot), with the
  # file capability to bind :53. The xattr travels in the layer.
  setcap cap_net_bind_service=+ep "$WORK/coredns"
  new_container scratch
  buildah copy -q --chmod 0755 "$ctr" "$WORK/coredns" /coredns >/dev/null
  buildah config --entrypoint '["/coredns"]' --user 65532:65532 --workingdir / \
    --port 53 --port 53/udp --label "$RECIPE_LABEL=$RECIPE" "$ctr"
  buildah commit -q --rm "$ctr" "$tag" >/dev/null
}

# --- base: Debian from mmdebstrap -------------------------------------------

# The tag hashes the package list, the recipe below, the mirror settings and
# the CA bundle: changing any of them makes a new base.
base_tag() {
  [[ -f "$HOST_SOURCES" && -f "$HOST_APTCONF" ]] || die "missing $HOST_SOURCES or $HOST_APTCONF"
  local h
  h=$( { echo "$BASE_SUITE $BASE_PACKAGES"; declare -f build_base; cat "$HOST_SOURCES" "$HOST_APTCONF" "$HOST_CA_BUNDLE"; } | short_hash)
  echo "$BASE_REPO:$BASE_SUITE-$h"
}

build_base() {
  local tag=$1 ctr mnt
  # minbase and no recommends (mmdebstrap's default); documentation and
  # translations are left out, as in the python slim images, also for
  # packages installed later (the dpkg options stay in the image).
  mmdebstrap --variant=minbase --include="$BASE_PACKAGES" \
    --aptopt="$HOST_APTCONF" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --quiet "$BASE_SUITE" "$WORK/rootfs.tar" "$HOST_SOURCES"
  new_container scratch
  mnt=$(buildah mount "$ctr")
  # No device nodes in an image: the runtime provides /dev.
  tar -xf "$WORK/rootfs.tar" -C "$mnt" --numeric-owner --exclude='./dev/*'
  rm "$WORK/rootfs.tar"
  cp "$HOST_CA_BUNDLE" "$mnt/etc/ssl/certs/ca-certificates.crt"
  buildah umount "$ctr" >/dev/null
  # PIP_BREAK_SYSTEM_PACKAGES: Debian marks its python as externally managed
  # (PEP 668); in an image, pip installing into it is what is wanted.
  buildah config --env LANG=C.UTF-8 --env PIP_BREAK_SYSTEM_PACKAGES=1 \
    --cmd '["python3"]' "$ctr"
  buildah commit -q --rm "$ctr" "$tag" >/dev/null
}

# --- operator ---------------------------------------------------------------

# The tag covers the build context (as .dockerignore filters it), the
# Dockerfile and the base image, uncommitted changes included.
operator_tag() {
  local base=$1 h
  h=$(cd "$REPO_ROOT" && {
        echo "$base"
        find Dockerfile .dockerignore pyproject.toml operator -type f \
          ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' -print0 \
          | LC_ALL=C sort -z | xargs -0 sha256sum
      } | short_hash)
  echo "$OPERATOR_REPO:$h"
}

# build_operator TAG: on $BASE_IMAGE, built first if absent. The build's
# output goes to a log, shown when it fails.
build_operator() {
  local tag=$1 t buildlog="$IMAGES_DIR/operator-build.log"
  if have_image "$BASE_IMAGE"; then
    log "$BASE_IMAGE: cached"
  else
    t=$(date +%s)
    log "$BASE_IMAGE: building (mmdebstrap $BASE_SUITE: $BASE_PACKAGES)"
    build_base "$BASE_IMAGE"
    log "$BASE_IMAGE: built in $(( $(date +%s) - t ))s ($(image_size "$BASE_IMAGE"))"
  fi
  mkdir -p "$IMAGES_DIR"
  if ! (cd "$REPO_ROOT" && buildah build --isolation chroot --network host \
          --build-arg PYTHON_IMAGE="$BASE_IMAGE" --label "$RECIPE_LABEL=$RECIPE" \
          -t "$tag" . >"$buildlog" 2>&1); then
    tail -n 30 "$buildlog" >&2
    die "$tag: buildah build failed (full output: $buildlog)"
  fi
  verify_operator "$tag"
}

verify_operator() {
  local tag=$1 ctr check
  new_container "$tag"
  for check in "tenant-operator --help" "mariadb-dump --version" \
               "python3 -c 'import kopf, pymysql, minio, pika, boto3'"; do
    buildah run --isolation chroot "$ctr" -- sh -c "$check" >/dev/null \
      || die "$tag: \`$check\` fails in the image"
  done
  log "$tag: verified (tenant-operator --help, mariadb-dump --version, python imports)"
}

ensure_operator() {
  local tag
  BASE_IMAGE=$(base_tag); tag=$(operator_tag "$BASE_IMAGE")
  ensure_image "$tag" build_operator
  mkdir -p "$DEVENV_DIR"
  echo "OPERATOR_IMAGE=$tag" > "$DEVENV_DIR/image.env"
  log "operator image: $tag (written to $DEVENV_DIR/image.env)"
  prune_operator
}

# Every source change makes a new operator image (~500 MB in buildah's
# storage, ~150 MB archived): keep the $OPERATOR_KEEP most recently used.
OPERATOR_KEEP=3
prune_operator() {
  local file tag n=0
  while IFS= read -r file; do
    n=$((n + 1)); [[ $n -gt $OPERATOR_KEEP ]] || continue
    tag=$(basename "$file"); tag=${tag#localhost_tenant-operator_}; tag="$OPERATOR_REPO:${tag%%.*}"
    rm -f "$file"
    if have_image "$tag"; then buildah rmi "$tag" >/dev/null; fi
    log "$tag: pruned"
  done < <(find "$IMAGES_DIR" -maxdepth 1 -name 'localhost_tenant-operator_*.oci.tar' -printf '%T@ %p\n' \
             | sort -rn | cut -d' ' -f2-)
}

# --- containerd -------------------------------------------------------------

# import_image TAG FILE: into $CONTAINERD_ADDRESS's k8s.io namespace, unless
# it already holds TAG at the archive's manifest digest.
import_image() {
  local tag=$1 file=$2 want have
  want=$(tar -xOf "$file" index.json | grep -o '"digest":"sha256:[0-9a-f]*"' | head -1 | cut -d'"' -f4)
  have=$("${CTR[@]}" images ls "name==$tag" | awk -v t="$tag" '$1 == t {print $3}')
  if [[ -n "$want" && "$have" == "$want" ]]; then
    log "$tag: present in containerd"; return
  fi
  "${CTR[@]}" images import ${CONTAINERD_SNAPSHOTTER:+--snapshotter "$CONTAINERD_SNAPSHOTTER"} "$file" >/dev/null
  log "$tag: imported into containerd ($want)"
}

IMPORT_TAGS=() IMPORT_FILES=()
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(pause netpol coredns operator)
for target in "${targets[@]}"; do
  case "$target" in
    pause) ensure_image "$PAUSE_IMAGE" build_pause ;;
    netpol) ensure_image "$NETPOL_IMAGE" build_netpol_image ;;
    coredns) ensure_image "$COREDNS_IMAGE" build_coredns_image ;;
    operator) ensure_operator ;;
    *) die "usage: images.sh [pause] [netpol] [coredns] [operator]" ;;
  esac
done

if [[ -n "${CONTAINERD_ADDRESS:-}" ]]; then
  [[ -S "$CONTAINERD_ADDRESS" ]] || die "CONTAINERD_ADDRESS=$CONTAINERD_ADDRESS is not a socket"
  CONTAINERD_ADDRESS=$(realpath "$CONTAINERD_ADDRESS")   # ctr 2.x reads a relative path as a URL
  # The ctr of the node's containerd release (devenv/build.sh containerd).
  ctr_bin="$CACHE_DIR/bin/containerd-$CONTAINERD_VERSION/ctr"
  [[ -x "$ctr_bin" ]] || ctr_bin=$(command -v ctr) || die "no ctr: run devenv/build.sh containerd"
  CTR=("$ctr_bin" --address "$CONTAINERD_ADDRESS" -n k8s.io)
  for i in "${!IMPORT_TAGS[@]}"; do import_image "${IMPORT_TAGS[$i]}" "${IMPORT_FILES[$i]}"; done
fi
