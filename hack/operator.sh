#!/usr/bin/env bash
# Installs the operator the way users do, into the cluster of $KUBECONFIG: the manager as pods
# with leader election and only the RBAC its manifests grant. `make kind-deploy`, `make dev` and
# the real-node e2e suite all go through here, so the suite proves what kind users apply.
#   hack/operator.sh install kustomize|chart     # waits until the manager Deployment is available
#   hack/operator.sh uninstall kustomize|chart   # the manager and its RBAC; CRDs and fleets stay
#   hack/operator.sh where kustomize|chart       # prints "<namespace> <deployment>"
# Environment: IMG_MANAGER, IMG_AGENT (the images; default the :dev tags hack/node-cluster.sh
# imports), HELM (the helm binary, for chart), OPERATOR_NAMESPACE (chart; default cachefleet-system).
set -euo pipefail
cd "$(dirname "$0")/.."
cmd="${1:-}" how="${2:-}"
IMG_MANAGER="${IMG_MANAGER:-ghcr.io/cachefleet/manager:dev}"
IMG_AGENT="${IMG_AGENT:-ghcr.io/cachefleet/agent:dev}"
HELM="${HELM:-helm}"
chart_ns="${OPERATOR_NAMESPACE:-cachefleet-system}"

where() {
  case "$how" in
    kustomize) echo "cachefleet-system cachefleet-controller-manager" ;; # config/default's namePrefix and namespace
    chart) echo "$chart_ns cachefleet-manager" ;;                        # release "cachefleet"
    *) echo "usage: $0 install|uninstall|where kustomize|chart" >&2; exit 2 ;;
  esac
}

# kustomized prints config/default with the two images replaced, and fails if either was not
# there to replace (a renamed image would otherwise deploy the release tag unnoticed).
kustomized() {
  local out
  out="$(kubectl kustomize config/default)"
  grep -q 'image: ghcr.io/cachefleet/manager:' <<<"$out" && grep -q -- '--agent-image=ghcr.io/cachefleet/agent:' <<<"$out" || {
    echo "operator: config/default no longer names ghcr.io/cachefleet/manager and --agent-image" >&2; exit 1; }
  sed -e "s|image: ghcr.io/cachefleet/manager:[^[:space:]]*|image: $IMG_MANAGER|" \
    -e "s|--agent-image=ghcr.io/cachefleet/agent:[^[:space:]]*|--agent-image=$IMG_AGENT|" <<<"$out"
}

# without_crds drops the CustomResourceDefinitions from a multi-document YAML stream.
without_crds() { awk 'BEGIN { RS = "\n---\n"; ORS = "\n---\n" } !/\nkind: CustomResourceDefinition\n/ && !/^kind: CustomResourceDefinition\n/'; }

placement="$(where)"
read -r ns deploy <<<"$placement"
case "$cmd" in
  where) echo "$placement" ;;
  install)
    if [[ "$how" == kustomize ]]; then
      # --force-conflicts: the CRDs may have been applied by another field manager (make install, Helm).
      kustomized | kubectl apply --server-side --force-conflicts -f - >/dev/null
    else
      repo="${IMG_MANAGER%:*}" tag="${IMG_MANAGER##*:}"
      # CRDs applied before (config/default, make install) are adopted, as Helm documents it,
      # rather than refused: moving from kustomize to the chart keeps every fleet.
      for crd in cachefleets.cache.cachefleet.io cachepolicies.cache.cachefleet.io; do
        if kubectl get crd "$crd" >/dev/null 2>&1; then
          kubectl label --overwrite crd "$crd" app.kubernetes.io/managed-by=Helm >/dev/null
          kubectl annotate --overwrite crd "$crd" meta.helm.sh/release-name=cachefleet meta.helm.sh/release-namespace="$ns" >/dev/null
        fi
      done
      "$HELM" upgrade --install cachefleet charts/cachefleet --namespace "$ns" --create-namespace \
        --set image.repository="$repo" --set image.tag="$tag" --set agentImage="$IMG_AGENT" 2> >(grep -v 'found symbolic link in path' >&2) >/dev/null
    fi
    kubectl -n "$ns" rollout status "deployment/$deploy" --timeout=180s >/dev/null
    echo "operator: $how install of $IMG_MANAGER (agents $IMG_AGENT) available in $ns/$deploy"
    ;;
  uninstall)
    if [[ "$how" == kustomize ]]; then
      kustomized | without_crds | kubectl delete --ignore-not-found --wait -f - >/dev/null
    else
      "$HELM" uninstall cachefleet --namespace "$ns" --wait >/dev/null 2>&1 || true
      kubectl delete namespace "$ns" --ignore-not-found --wait >/dev/null
    fi
    echo "operator: $how install removed (CRDs and fleets kept)"
    ;;
  *) echo "usage: $0 install|uninstall|where kustomize|chart" >&2; exit 2 ;;
esac
