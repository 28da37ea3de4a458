#!/usr/bin/env bash
# Install the Debian packages devenv runs (MariaDB, RabbitMQ), the tools the
# build needs, what devenv/images.sh builds images with and what a node runs
# (runc, CNI plugins, the packet filter and conntrack tools).
# Idempotent: does nothing when all are present.
. "$(dirname "$0")/lib.sh"

need=()
command -v mariadbd >/dev/null || [[ -x /usr/sbin/mariadbd ]] || need+=(mariadb-server)
command -v mariadb >/dev/null || need+=(mariadb-client)
command -v mariadb-dump >/dev/null || need+=(mariadb-client)
command -v rabbitmq-server >/dev/null || [[ -x /usr/sbin/rabbitmq-server ]] || need+=(rabbitmq-server)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
# Packages without a single telling command are checked with dpkg:
#   images: buildah, mmdebstrap, gcc + libc6-dev (the static pause binary),
#           libcap2-bin (setcap, CoreDNS binds :53 as non-root)
#   node:   runc, the CNI plugins, iptables, nftables,
#           conntrack, ipset, iproute2
for pkg in buildah mmdebstrap gcc libc6-dev libcap2-bin \
           runc containernetworking-plugins \
           iptables nftables conntrack ipset iproute2; do
  [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) == "install ok installed" ]] || need+=("$pkg")
done
if [[ ${#need[@]} -eq 0 ]]; then log "debian packages: present"; exit 0; fi

sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
log "debian packages: installing ${need[*]}"
$sudo apt-get update -qq
# No init system here: the packages' postinst cannot start the services,
# which is fine, devenv starts its own processes.
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
log "debian packages: installed"
