#!/usr/bin/env bash
# The Debian packages the tests, the benchmark and the real-node cluster need. Run as root on
# Debian or Ubuntu it installs the missing ones; otherwise it prints the command and fails, in
# seconds, before anything spends minutes building. Used by .ci/run, `make test` and `make dev`.
set -euo pipefail
pkgs=()
command -v redis-server >/dev/null || pkgs+=(redis-server)   # compatibility checks
command -v redis-benchmark >/dev/null || pkgs+=(redis-tools) # redis-cli, redis-benchmark
command -v nutcracker >/dev/null || pkgs+=(nutcracker)        # the benchmark's peer
/usr/bin/python3 -c 'import redis' 2>/dev/null || pkgs+=(python3-redis) # redis-py client checks
command -v containerd >/dev/null || pkgs+=(containerd)        # real-node cluster
command -v runc >/dev/null || pkgs+=(runc)
[[ -x /usr/lib/cni/bridge ]] || pkgs+=(containernetworking-plugins)
{ [[ -x /bin/busybox ]] && /bin/busybox --list | grep -qx sh; } || pkgs+=(busybox-static)
command -v openssl >/dev/null || pkgs+=(openssl)
command -v iptables >/dev/null || pkgs+=(iptables)
command -v ip >/dev/null || pkgs+=(iproute2)     # bridges, veths, network namespaces
command -v pkill >/dev/null || pkgs+=(procps)    # node-cluster.sh teardown
command -v nsenter >/dev/null || pkgs+=(util-linux)
command -v bc >/dev/null || pkgs+=(bc)           # hack/bench.sh
((${#pkgs[@]})) || exit 0
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "deps: missing packages; install them first:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y ${pkgs[*]}" >&2
  exit 1
fi
echo "deps: installing ${pkgs[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${pkgs[@]}" >/dev/null
# Distribution packages start a redis-server on :6379 and a containerd on its default socket;
# tests start their own (shards on free ports, one containerd per node of the e2e cluster).
systemctl disable --now redis-server containerd >/dev/null 2>&1 || true
