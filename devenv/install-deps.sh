#!/usr/bin/env bash
# Install the Debian packages devenv runs (MariaDB, RabbitMQ) and the tools
# the build needs. Idempotent: does nothing when all are present.
. "$(dirname "$0")/lib.sh"

need=()
command -v mariadbd >/dev/null || [[ -x /usr/sbin/mariadbd ]] || need+=(mariadb-server)
command -v mariadb >/dev/null || need+=(mariadb-client)
command -v mariadb-dump >/dev/null || need+=(mariadb-client)
command -v rabbitmq-server >/dev/null || [[ -x /usr/sbin/rabbitmq-server ]] || need+=(rabbitmq-server)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
if [[ ${#need[@]} -eq 0 ]]; then log "debian packages: present"; exit 0; fi

sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
log "debian packages: installing ${need[*]}"
$sudo apt-get update -qq
# No init system here: the packages' postinst cannot start the services,
# which is fine, devenv starts its own processes.
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
log "debian packages: installed"
