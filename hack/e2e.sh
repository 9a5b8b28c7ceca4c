#!/usr/bin/env bash
# Runs the e2e suite (test/e2e) against fresh clusters.
#   E2E_CLUSTER=all (default): kwok, then nodes.
#   E2E_CLUSTER=kwok: kwokctl cluster from source-built binaries, manager as a process; the
#     control-plane tests (simulated pods: 100 fleets at once, drift, Helm).
#   E2E_CLUSTER=nodes: real nodes on this machine (hack/node-cluster.sh); the tests whose pods
#     must run (the data path, replication, scaling and failure under load), twice: with the
#     manager installed from the Helm chart (then its upgrade tests), and from config/default
#     (then the leader-loss tests), as pods with their own RBAC (hack/operator.sh).
#     E2E_MANAGER=chart, kustomize or process (the manager as a local process, for debugging)
#     runs one pass only.
#   E2E_CLUSTER=kind: kind cluster, images built and loaded, operator deployed from config/default.
set -euo pipefail
cd "$(dirname "$0")/.."
E2E_CLUSTER="${E2E_CLUSTER:-all}"
if [[ "$E2E_CLUSTER" == all ]]; then
  E2E_CLUSTER=kwok "$0" && E2E_CLUSTER=nodes "$0"
  exit
fi
# The tests that need pods that really run: the kwok run leaves them out, the nodes run runs only them.
REAL_POD_TESTS='TestDataPathThroughTheNodeLocalAgent|TestWriteOnOneNodeInvalidatesAnotherNodesL1|TestShardsReplicateAndAgentsReportTheirEpoch|TestAuthAndSecretsAreFenced|TestScaleThreeFourThreeUnderLoad|TestPrimaryLossFailsOverWithoutLosingTheShard|TestRollingUpdateOfAllShardsKeepsTheHitRate'
# A node lost three ways (test/e2e/nodeloss_test.go): about a minute and a half each, run once.
NODE_LOSS_TESTS='TestANodeCutOffIsSeenByTheFleet|TestANodePoweredOffIsFailedOver|TestANodeWhoseKubeletDiesKeepsServing'
# The tests of the manager's own life, each on the install it needs (test/e2e/operator_test.go).
CHART_TESTS="TestManagerUpgradeLeavesShardsRunning|TestAgentImageRollsOneNodeAtATime|TestChartWatchingOneNamespace|$NODE_LOSS_TESTS"
KUSTOMIZE_TESTS='TestLeaderLossDuringScaleUp|TestLeaderLossDuringFailover|TestLeaderCrashIsReplacedAfterItsLease|TestManagerDownForAMinute'

bins="$(hack/k8s-bins.sh all)"
export PATH="$bins:$PATH" E2E_CLUSTER
logs="${XDG_CACHE_HOME:-$HOME/.cache}/cachefleet/e2e-logs-$E2E_CLUSTER"
rm -rf "$logs"; mkdir -p "$logs"
# A fresh discovery cache: clusters come and go on reused ports.
export KUBECACHEDIR="$logs/kube-cache"

# start_manager FLAGS...: the manager as a process against $KUBECONFIG, with the CRDs installed.
start_manager() {
  kubectl apply --server-side -f config/crd/bases >/dev/null
  go build -o bin/manager ./cmd/manager
  bin/manager --metrics-bind-address=0 --health-probe-bind-address=0 "$@" >"$logs/manager.log" 2>&1 &
  manager_pid=$!
  export E2E_MANAGER_PID=$manager_pid
}
stop_manager() {
  [[ -n "${manager_pid:-}" ]] && kill "$manager_pid" 2>/dev/null && wait "$manager_pid" 2>/dev/null || true
}

# run_suite NAME TIMEOUT GO-TEST-FLAGS...: the suite, its log kept as e2e-NAME.log, a summary printed.
run_suite() {
  local log="$logs/e2e-$1.log" timeout="$2"; shift 2
  if ! go test -tags e2e -count=1 -timeout "$timeout" -v "$@" ./test/e2e/ 2>&1 | tee "$log" |
    grep -E '^(=== RUN|--- |PASS|FAIL|ok|e2e-scale:)|_test.go'; then
    echo "e2e: FAILED; logs in $logs"; exit 1
  fi
  grep -q '^ok' "$log" || { echo "e2e: FAILED; logs in $logs"; exit 1; }
}

# manager_logs HOW: the logs of every manager pod of that install, kept with the run's.
manager_logs() {
  local ns deploy
  read -r ns deploy <<<"$(hack/operator.sh where "$1")"
  kubectl -n "$ns" logs "deployment/$deploy" --all-pods --prefix --tail=-1 >"$logs/manager-$1.log" 2>&1 || true
}

case "$E2E_CLUSTER" in
  kwok)
    export E2E_KWOK_NAME="cachefleet-e2e"
    start=$(date +%s)
    KUBECONFIG="$(hack/kwok-cluster.sh create "$E2E_KWOK_NAME" 3)"
    export KUBECONFIG
    echo "e2e: kwok cluster up in $(( $(date +%s) - start ))s (kubeconfig $KUBECONFIG)"
    cleanup() { stop_manager; hack/kwok-cluster.sh delete "$E2E_KWOK_NAME"; }
    trap cleanup EXIT
    # A short drain timeout: simulated agents never report their epoch.
    start_manager --drain-timeout=15s --max-concurrent-reconciles=8
    # Pods do not run here: the real-pod tests are the nodes run's.
    if [[ -n "${E2E_RUN:-}" ]]; then run_suite kwok 20m -run "$E2E_RUN"; else
      run_suite kwok 20m -skip "^($REAL_POD_TESTS|$CHART_TESTS|$KUSTOMIZE_TESTS)\$"; fi
    ;;
  nodes)
    start=$(date +%s)
    cleanup() {
      stop_manager
      [[ -n "${how:-}" ]] && manager_logs "$how"
      cp -r "$(dirname "${KUBECONFIG:-.}")/logs" "$logs/cluster" 2>/dev/null || true
      hack/node-cluster.sh delete
    }
    trap cleanup EXIT
    trap 'exit 1' INT TERM # so an interrupted run still tears the nodes down
    KUBECONFIG="$(hack/node-cluster.sh create "${E2E_NODES:-2}")"
    export KUBECONFIG
    echo "e2e: cluster with real nodes up in $(( $(date +%s) - start ))s (kubeconfig $KUBECONFIG)"
    if [[ "${E2E_MANAGER:-}" == process ]]; then
      start_manager --agent-image=ghcr.io/cachefleet/agent:dev
      run_suite nodes-process 30m -run "${E2E_RUN:-^($REAL_POD_TESTS)\$}"
      exit
    fi
    export HELM="${HELM:-$(command -v helm)}"
    for how in ${E2E_MANAGER:-chart kustomize}; do
      hack/operator.sh install "$how"
      read -r E2E_MANAGER_NAMESPACE E2E_MANAGER_DEPLOYMENT <<<"$(hack/operator.sh where "$how")"
      extra=CHART_TESTS; [[ "$how" == kustomize ]] && extra=KUSTOMIZE_TESTS
      E2E_MANAGER="$how" E2E_MANAGER_NAMESPACE="$E2E_MANAGER_NAMESPACE" E2E_MANAGER_DEPLOYMENT="$E2E_MANAGER_DEPLOYMENT" \
        run_suite "nodes-$how" 30m -run "${E2E_RUN:-^($REAL_POD_TESTS|${!extra})\$}"
      manager_logs "$how"
      hack/operator.sh uninstall "$how"
    done
    how=""
    ;;
  kind)
    IMG_MANAGER="${IMG_MANAGER:-cachefleet/manager:dev}" IMG_AGENT="${IMG_AGENT:-cachefleet/agent:dev}"
    kind get clusters | grep -qx cachefleet || kind create cluster --config hack/kind-config.yaml
    export KUBECONFIG="${KUBECONFIG:-$HOME/.kube/config}"
    kubectl config use-context kind-cachefleet
    make kind-deploy IMG_MANAGER="$IMG_MANAGER" IMG_AGENT="$IMG_AGENT"
    read -r E2E_MANAGER_NAMESPACE E2E_MANAGER_DEPLOYMENT <<<"$(hack/operator.sh where kustomize)"
    export E2E_MANAGER=kustomize E2E_MANAGER_NAMESPACE E2E_MANAGER_DEPLOYMENT
    go test -tags e2e -count=1 -timeout 30m -v ./test/e2e/
    ;;
  *) echo "E2E_CLUSTER must be all, kwok, nodes or kind" >&2; exit 2 ;;
esac
