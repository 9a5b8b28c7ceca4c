#!/usr/bin/env bash
# `make dev`: a local kwok cluster with the CRDs, the manager running as a process, and the
# samples applied. `make dev-down` stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd="${1:-up}" name="${2:-cachefleet}"
state="${XDG_CACHE_HOME:-$HOME/.cache}/cachefleet/dev-$name"
bins="$(hack/k8s-bins.sh all)"
export PATH="$bins:$PATH"
mkdir -p "$state"

if [[ "$cmd" == down ]]; then
  [[ -f "$state/manager.pid" ]] && kill "$(cat "$state/manager.pid")" 2>/dev/null || true
  hack/kwok-cluster.sh delete "$name"
  rm -rf "$state"
  echo "dev: stopped"
  exit 0
fi

[[ -f "$state/manager.pid" ]] && kill "$(cat "$state/manager.pid")" 2>/dev/null || true
export KUBECONFIG="$(hack/kwok-cluster.sh create "$name" 3)"
kubectl apply --server-side -f config/crd/bases >/dev/null
go build -o bin/manager ./cmd/manager
nohup bin/manager --metrics-bind-address=127.0.0.1:18080 --health-probe-bind-address=127.0.0.1:18081 >"$state/manager.log" 2>&1 &
echo $! >"$state/manager.pid"
kubectl apply -k config/samples >/dev/null
for _ in $(seq 120); do
  [[ "$(kubectl get cachefleet web-cache -o jsonpath='{.status.phase}' 2>/dev/null)" == Ready ]] && break
  sleep 1
done
kubectl get cachefleets,cachepolicies
cat <<MSG

The fleet runs on a local kwok cluster (pods are simulated: no containers run).
  export KUBECONFIG=$KUBECONFIG
  export PATH=$bins:\$PATH      # kubectl
  manager log: $state/manager.log
Stop everything with: make dev-down
MSG
