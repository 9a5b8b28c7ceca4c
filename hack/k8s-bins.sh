#!/usr/bin/env bash
# Builds Kubernetes control-plane binaries from the Go module proxy and caches them by version.
# Prebuilt downloads (setup-envtest, release tarballs) are not reachable everywhere we run, so a
# source build is the path that must always work. Prints the directory holding the binaries.
#
#   hack/k8s-bins.sh envtest   # etcd, kube-apiserver, kubectl (what envtest needs)
#   hack/k8s-bins.sh all       # + kube-controller-manager, kube-scheduler, kwok, kwokctl
#   hack/k8s-bins.sh nodes     # all + kubelet, kube-proxy, coredns (real nodes: hack/node-cluster.sh)
#
# KUBEBUILDER_ASSETS, when set and holding the envtest binaries, wins for `envtest`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
what="${1:-envtest}"

if [[ "$what" == envtest && -n "${KUBEBUILDER_ASSETS:-}" && -x "${KUBEBUILDER_ASSETS}/kube-apiserver" && -x "${KUBEBUILDER_ASSETS}/etcd" ]]; then
  echo "$KUBEBUILDER_ASSETS"; exit 0
fi

cache="${XDG_CACHE_HOME:-$HOME/.cache}/cachefleet"
dir="$cache/k8s/v${KUBE_VERSION}-etcd${ETCD_VERSION}-kwok${KWOK_VERSION}"
mkdir -p "$dir"
log() { echo "k8s-bins: $*" >&2; }
export GOFLAGS="-mod=mod" CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"

build_etcd() {
  [[ -x "$dir/etcd" ]] && return
  log "building etcd v$ETCD_VERSION"
  # etcd's go.mod has replace directives, so `go install pkg@version` refuses it: use a module.
  local mod; mod="$(mktemp -d)"
  trap 'rm -rf "$mod"' RETURN
  (
    cd "$mod"
    go mod init cachefleet.local/etcdbin >/dev/null 2>&1
    printf 'package tools\nimport _ "go.etcd.io/etcd/server/v3"\n' > tools.go
    go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >/dev/null 2>&1
    go build -trimpath -ldflags "-s -w" -o "$dir/etcd.tmp" go.etcd.io/etcd/server/v3
    mv "$dir/etcd.tmp" "$dir/etcd"
  )
}

# Builds cmd/<name> from k8s.io/kubernetes in a throwaway module that points every staging repo
# at its published v0.x build (the repo's own go.mod points them at ./staging, absent in the module).
build_kube() {
  local missing=()
  for b in "$@"; do [[ -x "$dir/$b" ]] || missing+=("$b"); done
  [[ ${#missing[@]} -eq 0 ]] && return
  log "building ${missing[*]} v$KUBE_VERSION (several minutes when cold)"
  local mod; mod="$(mktemp -d)"
  trap 'rm -rf "$mod"' RETURN
  local staging="0.${KUBE_VERSION#1.}"
  (
    cd "$mod"
    go mod init cachefleet.local/kubebins >/dev/null 2>&1
    local gomod
    gomod="$(go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
    go mod edit -require "k8s.io/kubernetes@v$KUBE_VERSION"
    grep -E '^\s*k8s.io/[a-z0-9-]+ => ./staging/' "$gomod" | awk '{print $1}' | while read -r repo; do
      go mod edit -replace "$repo=$repo@v$staging"
    done
    printf 'package tools\nimport (\n' > tools.go
    for b in "${missing[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$b" >> tools.go; done
    printf ')\n' >> tools.go
    go mod tidy >/dev/null 2>&1 || true
    local v="k8s.io/component-base/version" cv="k8s.io/client-go/pkg/version"
    local ld="-s -w -X $v.gitVersion=v$KUBE_VERSION -X $v.gitMajor=1 -X $v.gitMinor=${staging#0.} -X $v.gitTreeState=clean"
    ld+=" -X $cv.gitVersion=v$KUBE_VERSION -X $cv.gitMajor=1 -X $cv.gitMinor=${staging#0.}"
    for b in "${missing[@]}"; do
      go build -trimpath -ldflags "$ld" -o "$dir/$b.tmp" "k8s.io/kubernetes/cmd/$b"
      mv "$dir/$b.tmp" "$dir/$b"
    done
  )
}

build_coredns() {
  # The directory is keyed by the Kubernetes, etcd and kwok versions; CoreDNS says its own.
  [[ -x "$dir/coredns" ]] && "$dir/coredns" -version 2>/dev/null | grep -qx "CoreDNS-$COREDNS_VERSION" && return
  log "building coredns v$COREDNS_VERSION"
  GOBIN="$dir" go install "github.com/coredns/coredns@v$COREDNS_VERSION"
}

build_kwok() {
  for b in kwok kwokctl; do
    [[ -x "$dir/$b" ]] && continue
    log "installing $b v$KWOK_VERSION"
    GOBIN="$dir" go install "sigs.k8s.io/kwok/cmd/$b@v$KWOK_VERSION"
  done
}

case "$what" in
  envtest) build_etcd; build_kube kube-apiserver kubectl ;;
  all) build_etcd; build_kube kube-apiserver kubectl kube-controller-manager kube-scheduler; build_kwok ;;
  nodes)
    build_etcd; build_kube kube-apiserver kubectl kube-controller-manager kube-scheduler kubelet kube-proxy
    build_kwok; build_coredns ;;
  *) echo "usage: $0 envtest|all|nodes" >&2; exit 2 ;;
esac
echo "$dir"
