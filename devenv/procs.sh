# Process management for devenv components (sourced after lib.sh).

RUN="$DEVENV_DIR/run"
LOGS="$DEVENV_DIR/logs"
PKI="$DEVENV_DIR/pki"
STATE="$DEVENV_DIR/state.env"

# A port nobody listens on now; remembered in state.env so a restart of the
# environment keeps its addresses.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
# Letters and digits only: a secret starting with '-' is read as an option by the
# servers' CLIs (rabbitmqctl change_password), and one in 64 url-safe tokens does.
gen_secret() { python3 -c 'import secrets, string; a = string.ascii_letters + string.digits; print("".join(secrets.choice(a) for _ in range(32)))'; }

load_state() {
  if [[ ! -f "$STATE" ]]; then
    umask 077
    {
      for p in ETCD_PORT ETCD_PEER_PORT APISERVER_PORT KCM_PORT MYSQL_PORT AMQP_PORT RABBIT_MGMT_PORT RABBIT_DIST_PORT MINIO_PORT MINIO_CONSOLE_PORT; do
        echo "$p=$(free_port)"
      done
      echo "MYSQL_ADMIN_PASSWORD=$(gen_secret)"
      echo "RABBITMQ_ADMIN_PASSWORD=$(gen_secret)"
      echo "MINIO_SECRET_KEY=$(gen_secret)"
      # Unique per checkout so two environments on one machine do not share
      # an Erlang node name.
      echo "RABBIT_NODE=devenv$(echo "$DEVENV_DIR" | cksum | cut -d' ' -f1)@localhost"
    } > "$STATE"
  fi
  # Ports added since this environment was created.
  local p
  for p in SCHEDULER_PORT KUBELET_PORT KUBELET_HEALTHZ_PORT KUBE_PROXY_HEALTHZ_PORT KUBE_PROXY_METRICS_PORT NETPOL_METRICS_PORT \
           AMQP2_PORT RABBIT2_MGMT_PORT RABBIT2_DIST_PORT; do
    grep -q "^$p=" "$STATE" || echo "$p=$(free_port)" >> "$STATE"
  done
  # The second RabbitMQ server: a node of its own (not a cluster member).
  grep -q "^RABBIT2_NODE=" "$STATE" || \
    echo "RABBIT2_NODE=devenv$(echo "$DEVENV_DIR" | cksum | cut -d' ' -f1)b@localhost" >> "$STATE"
  grep -q "^RABBITMQ2_ADMIN_PASSWORD=" "$STATE" || echo "RABBITMQ2_ADMIN_PASSWORD=$(gen_secret)" >> "$STATE"
  # shellcheck disable=SC1090
  . "$STATE"
}

pid_of() { [[ -f "$RUN/$1.pid" ]] && cat "$RUN/$1.pid"; }
is_running() { local p; p=$(pid_of "$1") && [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; }

# wait_until SECONDS DESCRIPTION COMMAND... : poll COMMAND until it succeeds.
wait_until() {
  local timeout=$1 what=$2; shift 2
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    if (( $(date +%s) >= deadline )); then die "$what not ready after ${timeout}s"; fi
    sleep 0.5
  done
}

# spawn NAME COMMAND...: run detached, log to logs/NAME.log, record pid.
spawn() {
  local name=$1; shift
  setsid "$@" >>"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN/$name.pid"
}

stop_component() {
  local c=$1 p
  if ! is_running "$c"; then rm -f "$RUN/$c.pid"; return; fi
  p=$(pid_of "$c")
  if [[ "$c" == rabbitmq || "$c" == rabbitmq2 ]]; then
    rabbit_vars "$c"
    rabbit_env_of "$c" rabbitmqctl -n "$R_NODE" stop >/dev/null 2>&1 || true
  fi
  kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
  local deadline=$(( $(date +%s) + 30 ))
  while kill -0 "$p" 2>/dev/null && (( $(date +%s) < deadline )); do sleep 0.2; done
  kill -KILL -- "-$p" 2>/dev/null || true
  rm -f "$RUN/$c.pid"
  # The node started epmd as a daemon; stop it too unless other nodes use it.
  if [[ "$c" == rabbitmq || "$c" == rabbitmq2 ]] && command -v epmd >/dev/null && ! epmd -names 2>/dev/null | grep -q '^name '; then
    epmd -kill >/dev/null 2>&1 || true
  fi
  log "$c: stopped"
}

# ---- Kubernetes ---------------------------------------------------------

kube_bin() { echo "$CACHE_DIR/bin/kubernetes-$K8S_VERSION/$1"; }

make_pki() {
  [[ -f "$PKI/admin.crt" ]] && return
  log "pki: generating CA, serving, admin and service-account keys"
  (
    cd "$PKI"; umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout ca.key -out ca.crt -subj "/CN=devenv-ca" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.0.0.1\n' > san.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile san.ext -out apiserver.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=devenv-admin" 2>/dev/null
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -out admin.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f ./*.csr san.ext
  )
}

# client_kubeconfig FILE CERT: a kubeconfig for the client certificate $PKI/CERT.crt.
client_kubeconfig() {
  local file=$1 cert=$2
  (umask 077; cat > "$file" <<KC
apiVersion: v1
kind: Config
clusters:
- name: devenv
  cluster: {server: "https://127.0.0.1:$APISERVER_PORT", certificate-authority: "$PKI/ca.crt"}
users:
- name: $cert
  user: {client-certificate: "$PKI/$cert.crt", client-key: "$PKI/$cert.key"}
contexts:
- name: devenv
  context: {cluster: devenv, user: $cert}
current-context: devenv
KC
  )
}

write_kubeconfig() { client_kubeconfig "$DEVENV_DIR/kubeconfig" admin; }

api_ready() {
  curl -sf --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://127.0.0.1:$APISERVER_PORT/readyz" | grep -qx ok
}

start_etcd() {
  mkdir -p "$DEVENV_DIR/etcd"
  spawn etcd "$(bin_path etcd "$ETCD_VERSION")" --name devenv \
    --data-dir "$DEVENV_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "devenv=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --quota-backend-bytes 4294967296 --log-level warn
  wait_until 30 etcd curl -sf "http://127.0.0.1:$ETCD_PORT/health"
}

start_kube_apiserver() {
  make_pki; write_kubeconfig
  spawn kube-apiserver "$(kube_bin kube-apiserver)" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --advertise-address "$POD_GATEWAY" \
    --kubelet-client-certificate "$PKI/admin.crt" --kubelet-client-key "$PKI/admin.key" \
    --kubelet-preferred-address-types Hostname \
    --cert-dir "$PKI" --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --service-cluster-ip-range 10.0.0.0/24 --allow-privileged=true \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --service-account-issuer "https://127.0.0.1:$APISERVER_PORT/" \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --enable-priority-and-fairness=false \
    --max-requests-inflight 2000 --max-mutating-requests-inflight 1000 \
    --profiling=false -v=1
  wait_until 120 kube-apiserver api_ready
}

start_kube_controller_manager() {
  spawn kube-controller-manager "$(kube_bin kube-controller-manager)" \
    --kubeconfig "$DEVENV_DIR/kubeconfig" --leader-elect=false \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --use-service-account-credentials=false \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" \
    --controllers namespace-controller,garbage-collector-controller,cronjob-controller,job-controller,resourcequota-controller,serviceaccount-controller,serviceaccount-token-controller,deployment-controller,replicaset-controller,daemonset-controller,endpointslice-controller,root-ca-certificate-publisher-controller,ttl-after-finished-controller,pod-garbage-collector-controller,node-lifecycle-controller \
    --concurrent-namespace-syncs 10 --concurrent-gc-syncs 20 \
    --kube-api-qps 200 --kube-api-burst 400 -v=1
  wait_until 60 kube-controller-manager curl -skf "https://127.0.0.1:$KCM_PORT/healthz"
}

# ---- MariaDB ------------------------------------------------------------

mysql_admin() {
  mariadb --protocol=tcp -h127.0.0.1 -P"$MYSQL_PORT" -uadmin -p"$MYSQL_ADMIN_PASSWORD" "$@"
}

start_mariadb() {
  command -v mariadbd >/dev/null || [[ -x /usr/sbin/mariadbd ]] || die "mariadb-server is not installed (run devenv/install-deps.sh)"
  local d="$DEVENV_DIR/mariadb" fresh=0
  if [[ ! -d "$d/data/mysql" ]]; then
    mkdir -p "$d/data"
    mariadb-install-db --datadir="$d/data" --user=root --auth-root-authentication-method=normal \
      --skip-test-db >>"$LOGS/mariadb.log" 2>&1 || die "mariadb-install-db failed, see $LOGS/mariadb.log"
    fresh=1
  fi
  spawn mariadb /usr/sbin/mariadbd --no-defaults --datadir="$d/data" --socket="$d/mysqld.sock" \
    --pid-file="$d/mysqld.pid" --port="$MYSQL_PORT" --bind-address=127.0.0.1 --user=root \
    --skip-name-resolve --max-connections=2000 --innodb-flush-log-at-trx-commit=2 \
    --innodb-buffer-pool-size=256M --log-error="$LOGS/mariadb-error.log"
  wait_until 60 mariadb mariadb-admin --no-defaults --socket="$d/mysqld.sock" -uroot ping
  if (( fresh )); then
    mariadb --no-defaults --socket="$d/mysqld.sock" -uroot <<SQL
DELETE FROM mysql.global_priv WHERE User='';
CREATE USER IF NOT EXISTS 'admin'@'%' IDENTIFIED BY '$MYSQL_ADMIN_PASSWORD';
GRANT ALL PRIVILEGES ON *.* TO 'admin'@'%' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
  fi
  wait_until 30 "mariadb admin login" mysql_admin -e 'SELECT 1'
}

# ---- RabbitMQ -----------------------------------------------------------

# RabbitMQ servers: `rabbitmq`, and `rabbitmq2` unless DEVENV_RABBITMQ_SERVERS=1.
# The second is an independent server (its own node name, data dir, ports and
# admin user), for placement across servers; both are on 127.0.0.1.
rabbit_components() {
  case "${DEVENV_RABBITMQ_SERVERS:-2}" in
    1) echo rabbitmq ;;
    2) echo rabbitmq rabbitmq2 ;;
    *) die "DEVENV_RABBITMQ_SERVERS must be 1 or 2, got '${DEVENV_RABBITMQ_SERVERS}'" ;;
  esac
}

# rabbit_vars COMPONENT: R_DIR, R_NODE, R_AMQP, R_MGMT, R_DIST, R_PASSWORD of that server.
rabbit_vars() {
  R_DIR="$DEVENV_DIR/$1"
  if [[ "$1" == rabbitmq2 ]]; then
    R_NODE=$RABBIT2_NODE R_AMQP=$AMQP2_PORT R_MGMT=$RABBIT2_MGMT_PORT R_DIST=$RABBIT2_DIST_PORT
    R_PASSWORD=$RABBITMQ2_ADMIN_PASSWORD
  else
    R_NODE=$RABBIT_NODE R_AMQP=$AMQP_PORT R_MGMT=$RABBIT_MGMT_PORT R_DIST=$RABBIT_DIST_PORT
    R_PASSWORD=$RABBITMQ_ADMIN_PASSWORD
  fi
}

# The Debian wrappers switch to the rabbitmq user with `su`, which keeps
# these variables, so every rabbitmq command sees this node's files.
# rabbit_env_of COMPONENT COMMAND...
rabbit_env_of() {
  rabbit_vars "$1"; shift
  local d=$R_DIR
  (
    export RABBITMQ_MNESIA_BASE="$d/mnesia" RABBITMQ_LOG_BASE="$d/log" \
      RABBITMQ_NODENAME="$R_NODE" RABBITMQ_CONFIG_FILE="$d/rabbitmq" \
      RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins" \
      RABBITMQ_PID_FILE="$d/rabbit.pid" RABBITMQ_DIST_PORT="$R_DIST" \
      RABBITMQ_CONF_ENV_FILE="$d/rabbitmq-env.conf" ERL_EPMD_ADDRESS=127.0.0.1
    "$@"
  )
}

rabbit_env() { rabbit_env_of rabbitmq "$@"; }

# rabbit_mgmt_ready [COMPONENT]
rabbit_mgmt_ready() {
  rabbit_vars "${1:-rabbitmq}"
  curl -sf -u "admin:$R_PASSWORD" "http://127.0.0.1:$R_MGMT/api/overview"
}

start_rabbitmq() { start_rabbit_server rabbitmq; }
start_rabbitmq2() { start_rabbit_server rabbitmq2; }

start_rabbit_server() {
  local c=$1
  command -v rabbitmq-server >/dev/null || die "rabbitmq-server is not installed (run devenv/install-deps.sh)"
  rabbit_vars "$c"
  local d=$R_DIR node=$R_NODE password=$R_PASSWORD
  mkdir -p "$d/mnesia" "$d/log"
  cat > "$d/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$R_AMQP
management.tcp.ip = 127.0.0.1
management.tcp.port = $R_MGMT
loopback_users.guest = true
# The operator opens and closes many short management sessions in tests.
collect_statistics_interval = 5000
CONF
  echo '[rabbitmq_management].' > "$d/enabled_plugins"
  # Sourced by the server script right before it starts Erlang. `su` resets
  # the soft open-files limit to 1024, and every vhost keeps message-store
  # files open: at a few hundred vhosts the broker hits emfile and loses its
  # tables. Erlang distribution (the node and every CLI call) stays on loopback.
  cat > "$d/rabbitmq-env.conf" <<'ENVCONF'
ulimit -S -n "$(ulimit -H -n)" 2>/dev/null || true
SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
ENVCONF
  chown -R rabbitmq:rabbitmq "$d"
  rabbit_env_of "$c" spawn "$c" rabbitmq-server
  wait_until 90 "$c" rabbit_env_of "$c" rabbitmqctl -n "$node" await_startup
  if ! rabbit_mgmt_ready "$c" >/dev/null 2>&1; then
    rabbit_env_of "$c" rabbitmqctl -n "$node" add_user admin "$password" >/dev/null 2>&1 \
      || rabbit_env_of "$c" rabbitmqctl -n "$node" change_password admin "$password" >/dev/null
    rabbit_env_of "$c" rabbitmqctl -n "$node" set_user_tags admin administrator >/dev/null
    rabbit_env_of "$c" rabbitmqctl -n "$node" set_permissions -p / admin '.*' '.*' '.*' >/dev/null
  fi
  wait_until 60 "$c management API" rabbit_mgmt_ready "$c"
}

# ---- MinIO --------------------------------------------------------------

start_minio() {
  mkdir -p "$DEVENV_DIR/minio/data"
  MINIO_ROOT_USER=devenvadmin MINIO_ROOT_PASSWORD="$MINIO_SECRET_KEY" \
  MINIO_BROWSER=off MINIO_UPDATE=off MINIO_CI_CD=1 \
    spawn minio "$(bin_path minio "$MINIO_VERSION")" server "$DEVENV_DIR/minio/data" \
      --address "127.0.0.1:$MINIO_PORT" --console-address "127.0.0.1:$MINIO_CONSOLE_PORT" --quiet
  wait_until 60 minio curl -sf "http://127.0.0.1:$MINIO_PORT/minio/health/ready"
}

# ---- outputs ------------------------------------------------------------

write_outputs() {
  umask 077
  cat > "$DEVENV_DIR/env" <<ENV
# Generated by devenv/up.sh: source it to talk to the local platform.
export PATH="$DEVENV_DIR/bin:\$PATH"
export KUBECONFIG="$DEVENV_DIR/kubeconfig"
export MYSQL_HOST=127.0.0.1
export MYSQL_PORT=$MYSQL_PORT
export MYSQL_ADMIN_USER=admin
export MYSQL_ADMIN_PASSWORD='$MYSQL_ADMIN_PASSWORD'
export RABBITMQ_MGMT_URL=http://127.0.0.1:$RABBIT_MGMT_PORT
export RABBITMQ_AMQP_HOST=127.0.0.1
export RABBITMQ_AMQP_PORT=$AMQP_PORT
export RABBITMQ_ADMIN_USER=admin
export RABBITMQ_ADMIN_PASSWORD='$RABBITMQ_ADMIN_PASSWORD'
$(rabbit2_env)
export MINIO_ENDPOINT=http://127.0.0.1:$MINIO_PORT
export MINIO_ACCESS_KEY=devenvadmin
export MINIO_SECRET_KEY='$MINIO_SECRET_KEY'
ENV
  cat > "$DEVENV_DIR/operator-config.yaml" <<CFG
# Generated by devenv/up.sh: the operator's configuration for the local platform.
namespacePrefix: tenant-
mysql:
  default: main
  servers:
    main:
      host: 127.0.0.1
      port: $MYSQL_PORT
      adminUser: admin
      adminPassword: '$MYSQL_ADMIN_PASSWORD'
objectStorage:
  backend: minio
  endpoint: http://127.0.0.1:$MINIO_PORT
  region: us-east-1
  accessKey: devenvadmin
  secretKey: '$MINIO_SECRET_KEY'
rabbitmq:
  default: main
  servers:
    main:
      managementUrl: http://127.0.0.1:$RABBIT_MGMT_PORT
      amqpHost: 127.0.0.1
      amqpPort: $AMQP_PORT
      adminUser: admin
      adminPassword: '$RABBITMQ_ADMIN_PASSWORD'
$(rabbit2_config)
CFG
}

# The second RabbitMQ server in .devenv/env and the operator config, when it runs.
rabbit2_env() {
  [[ " $(rabbit_components) " == *" rabbitmq2 "* ]] || return 0
  cat <<ENV
export RABBITMQ2_MGMT_URL=http://127.0.0.1:$RABBIT2_MGMT_PORT
export RABBITMQ2_AMQP_HOST=127.0.0.1
export RABBITMQ2_AMQP_PORT=$AMQP2_PORT
export RABBITMQ2_ADMIN_USER=admin
export RABBITMQ2_ADMIN_PASSWORD='$RABBITMQ2_ADMIN_PASSWORD'
ENV
}

rabbit2_config() {
  [[ " $(rabbit_components) " == *" rabbitmq2 "* ]] || return 0
  # Weight 0: a Tenant gets here only by naming it (spec.placement.rabbitmq:
  # second); automatic placement keeps using main, which the demo and the
  # tests read their vhosts from.
  cat <<CFG
    second:
      managementUrl: http://127.0.0.1:$RABBIT2_MGMT_PORT
      amqpHost: 127.0.0.1
      amqpPort: $AMQP2_PORT
      adminUser: admin
      adminPassword: '$RABBITMQ2_ADMIN_PASSWORD'
      weight: 0
CFG
}

# shellcheck source=node.sh
. "$DEVENV_SRC/node.sh"
