#!/usr/bin/env bash
# A local Kubernetes control plane with simulated nodes: real etcd, kube-apiserver,
# kube-controller-manager (StatefulSet, DaemonSet, garbage collection) and kube-scheduler, with
# kwok making pods "run" on fake nodes. No container engine needed.
#
#   hack/kwok-cluster.sh create [name] [nodes]   # prints the kubeconfig path
#   hack/kwok-cluster.sh delete [name]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cmd="${1:-create}" name="${2:-cachefleet}" nodes="${3:-3}"
bins="$("$here/k8s-bins.sh" all)"
export PATH="$bins:$PATH"
kubeconfig="${KWOK_KUBECONFIG:-${XDG_CACHE_HOME:-$HOME/.cache}/cachefleet/kwok-$name.kubeconfig}"

case "$cmd" in
  create)
    kwokctl --name "$name" delete cluster >/dev/null 2>&1 || true
    rm -f "$kubeconfig"
    kwokctl create cluster --name "$name" --runtime binary \
      --etcd-binary "$bins/etcd" --kube-apiserver-binary "$bins/kube-apiserver" \
      --kube-controller-manager-binary "$bins/kube-controller-manager" \
      --kube-scheduler-binary "$bins/kube-scheduler" --kwok-controller-binary "$bins/kwok" \
      --disable-qps-limits --kubeconfig "$kubeconfig" --wait 2m >/dev/null 2>&1
    kwokctl --name "$name" scale node --replicas "$nodes" >/dev/null 2>&1
    # Default ServiceAccount tokens are not needed by simulated pods; wait for the namespace.
    for _ in $(seq 60); do kubectl --kubeconfig "$kubeconfig" get sa default >/dev/null 2>&1 && break; sleep 1; done
    echo "$kubeconfig"
    ;;
  delete)
    kwokctl --name "$name" delete cluster >/dev/null 2>&1 || true
    rm -f "$kubeconfig"
    ;;
  *) echo "usage: $0 create|delete [name] [nodes]" >&2; exit 2 ;;
esac
