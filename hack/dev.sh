#!/usr/bin/env bash
# `make dev`: a local cluster with the operator installed and the samples applied; `make
# dev-down` stops it all.
#   DEV_CLUSTER=nodes (default): real nodes on this machine (hack/node-cluster.sh): the manager
#     as pods from config/default (as `make kind-deploy` installs it), real Valkey pods and
#     agents, reachable with redis-cli through a port forward on 127.0.0.1.
#     DEV_MANAGER=process runs the manager as a local process instead, for a debugger.
#   DEV_CLUSTER=kwok: simulated nodes (hack/kwok-cluster.sh); no container runs, so the manager
#     runs as a local process.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd="${1:-up}" name="${2:-cachefleet}" kind="${DEV_CLUSTER:-nodes}" port="${DEV_PORT:-6380}"
state="${XDG_CACHE_HOME:-$HOME/.cache}/cachefleet/dev-$name"
[[ "$cmd" == down ]] || hack/deps.sh # packages first: before minutes of builds
bins="$(hack/k8s-bins.sh all)"
export PATH="$bins:$PATH"
mkdir -p "$state"
# Any failure stops here, naming the step and where its logs are.
trap 'echo "dev: failed: \`$BASH_COMMAND\` (line $LINENO); logs: $state (and ${CF_NODES_STATE:-/var/lib/cachefleet-nodes}/logs for the nodes)" >&2' ERR

stop() {
  local p
  for p in "$state"/*.pid; do
    if [[ -f "$p" ]]; then kill "$(cat "$p")" 2>/dev/null || true; rm -f "$p"; fi
  done
}

if [[ "$cmd" == down ]]; then
  stop
  hack/kwok-cluster.sh delete "$name"
  hack/node-cluster.sh delete
  rm -rf "$state"
  echo "dev: stopped"
  exit 0
fi

stop
t0=$SECONDS
# (Assigned before export: `export X="$(cmd)"` hides cmd's failure from set -e.)
if [[ "$kind" == kwok ]]; then
  kubeconfig="$(hack/kwok-cluster.sh create "$name" 3)"
  samples=config/samples agent_image=""
else
  kubeconfig="$(hack/node-cluster.sh create "${DEV_NODES:-2}")"
  samples=config/dev agent_image=--agent-image=ghcr.io/cachefleet/agent:dev
fi
export KUBECONFIG="$kubeconfig"
manager_log="$state/manager.log"
if [[ "$kind" == kwok || "${DEV_MANAGER:-pod}" == process ]]; then
  kubectl apply --server-side -f config/crd/bases >/dev/null
  go build -o bin/manager ./cmd/manager
  nohup bin/manager --metrics-bind-address=127.0.0.1:18080 --health-probe-bind-address=127.0.0.1:18081 \
    $agent_image >"$manager_log" 2>&1 &
  echo $! >"$state/manager.pid"
else
  hack/operator.sh install kustomize
  read -r ns deploy <<<"$(hack/operator.sh where kustomize)"
  manager_log="kubectl -n $ns logs deployment/$deploy --all-pods --prefix"
fi
kubectl apply -k "$samples" >/dev/null
kubectl wait --for=condition=Ready cachefleet/web-cache --timeout=5m >/dev/null
echo "dev: fleet Ready $((SECONDS - t0))s after start"
kubectl get cachefleets,cachepolicies

if [[ "$kind" == kwok ]]; then
  cat <<MSG

The fleet runs on a local kwok cluster (pods are simulated: no containers run).
  export KUBECONFIG=$KUBECONFIG
  export PATH=$bins:\$PATH      # kubectl
  manager log: $manager_log
Stop everything with: make dev-down
MSG
  exit 0
fi

kubectl rollout status daemonset/web-cache-agent --timeout=2m >/dev/null
nohup kubectl port-forward --address 127.0.0.1 service/web-cache-agent "$port:6380" >"$state/port-forward.log" 2>&1 &
echo $! >"$state/port-forward.pid"
password="$(kubectl get secret web-cache-auth -o jsonpath='{.data.password}' | base64 -d)"
for _ in $(seq 30); do
  [[ "$(REDISCLI_AUTH="$password" redis-cli -p "$port" PING 2>/dev/null)" == PONG ]] && break
  sleep 0.5
done
kubectl get pods -o wide
cat <<MSG

The fleet runs on real nodes on this machine: Valkey $(grep VALKEY_VERSION hack/versions.env | cut -d= -f2) shards and one agent per node.
  export KUBECONFIG=$KUBECONFIG
  export PATH=$bins:\$PATH      # kubectl
  export REDISCLI_AUTH=\$(kubectl get secret web-cache-auth -o jsonpath='{.data.password}' | base64 -d)
  redis-cli -p $port SET greeting hello && redis-cli -p $port GET greeting   # through an agent
  manager log: $manager_log
Stop everything with: make dev-down
MSG
