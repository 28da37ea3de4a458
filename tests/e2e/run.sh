#!/usr/bin/env bash
# End to end on kind, for machines with a Docker engine: build the image, load it
# into a kind cluster, install the chart, apply the standard example Tenant and
# wait for Ready. Backends are not part of this run (no MySQL/RabbitMQ/MinIO in
# the kind cluster): the example is reduced to its Kubernetes-only parts.
set -euo pipefail
cd "$(dirname "$0")/../.."
CLUSTER="${KIND_CLUSTER:-tenant-operator-e2e}"
IMAGE="tenant-operator:e2e"

docker build -t "$IMAGE" .
kind create cluster --name "$CLUSTER" --wait 120s
trap 'kind delete cluster --name "$CLUSTER"' EXIT
kind load docker-image "$IMAGE" --name "$CLUSTER"
helm install tenant-operator charts/tenant-operator -n tenant-operator --create-namespace \
  --set image.repository=tenant-operator --set image.tag=e2e --set image.pullPolicy=Never --wait --timeout 180s
python3 - <<'PY' | kubectl apply -f -
import yaml
t = yaml.safe_load(open("examples/tenant-standard.yaml"))
for key in ("databases", "objectStorage", "messaging"):
    t["spec"].pop(key, None)
print(yaml.safe_dump(t))
PY
name=$(python3 -c 'import yaml; print(yaml.safe_load(open("examples/tenant-standard.yaml"))["metadata"]["name"])')
kubectl wait "tenant/$name" --for=jsonpath='{.status.phase}'=Ready --timeout=180s
kubectl get tenants
