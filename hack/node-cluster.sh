#!/usr/bin/env bash
# A local Kubernetes cluster with real nodes on this machine, no container engine or registry:
# the control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, CoreDNS) runs
# as processes, and each node is a network namespace running its own containerd, kubelet and
# kube-proxy (kind gives each node a container; a namespace is the same isolation for networking,
# which is what lets several kubelets and kube-proxies share one machine). Images are built here
# (hack/images) and imported into every node's containerd.
#
#   hack/node-cluster.sh create [nodes]   # prints the kubeconfig path
#   hack/node-cluster.sh images           # rebuild the agent/valkey images and import them
#   hack/node-cluster.sh delete           # removes everything create made, even half-made
#   hack/node-cluster.sh stop-node i      # power node i off: its kubelet, kube-proxy, containerd
#                                         # and every container process killed at once
#   hack/node-cluster.sh stop-kubelet i   # node i's kubelet alone dies; its pods keep running
#   hack/node-cluster.sh start-node i     # start again whatever of node i is not running
#
# Addresses exist only on the bridge and namespaces made here (no default route, no NAT):
#   bridge cfbr0 10.250.0.1/24 (API server :6443, cluster DNS :53), node i 10.250.0.(10+i),
#   pods of node i 10.244.i.0/24, Services 10.96.0.0/16.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cmd="${1:-create}" nodes="${2:-2}"
state="${CF_NODES_STATE:-/var/lib/cachefleet-nodes}"
bridge=cfbr0 hostip=10.250.0.1 svccidr=10.96.0.0/16 podcidr=10.244.0.0/16
etcd_port=32379
log() { echo "node-cluster: $*" >&2; }

node_name() { echo "cfnode$1"; }
node_ip() { echo "10.250.0.$((10 + $1))"; }
cgroup_root() { echo "cachefleet-$(node_name "$1")"; }

# ---- teardown: safe to run at any point, and twice ----
delete() {
  local pidfile
  for pidfile in "$state"/pids/*.pid; do
    [[ -f "$pidfile" ]] || continue
    kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  sleep 1
  for pidfile in "$state"/pids/*.pid; do
    [[ -f "$pidfile" ]] || continue
    kill -9 "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  done
  # Containers outlive containerd: their shims name this cluster's sockets on their command line.
  pkill -9 -f "containerd-shim-runc-v2 .*$state/" 2>/dev/null || true
  for dir in /sys/fs/cgroup/*/; do
    for root in "$dir"cachefleet-cfnode*; do
      [[ -d "$root" ]] || continue
      # Whatever still runs in a node's cgroups belongs to that node: stop it, then remove them.
      find "$root" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    done
  done
  sleep 0.5
  for dir in /sys/fs/cgroup/*/; do
    for root in "$dir"cachefleet-cfnode*; do
      [[ -d "$root" ]] && find "$root" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
  done
  if [[ -d "$state" ]]; then
    awk -v s="$state" 'index($2, s) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
      umount -l "$m" 2>/dev/null || true
    done
  fi
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '/^cfnode[0-9]+/ {print $1}'); do ip netns delete "$ns" || true; done
  ip link delete "$bridge" 2>/dev/null || true
  if [[ -f "$state/sysctl.saved" ]]; then
    # The kubelet sets these kernel-wide on start; put back what this machine had.
    while IFS='=' read -r k v; do echo "$v" >"/proc/sys/$k" 2>/dev/null || true; done <"$state/sysctl.saved"
  fi
  rm -rf "$state"
}

# ---- pieces of create ----
start() { # name, command...: a background process with a pid file and a log
  local name="$1"; shift
  nohup "$@" >"$state/logs/$name.log" 2>&1 &
  echo $! >"$state/pids/$name.pid"
}

write_if_changed() { # file < content: a running kube-proxy exits when its config file changes
  local tmp; tmp="$(mktemp)"
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; fi
}

running() { # name: its process (start's pid file) is alive
  [[ -f "$state/pids/$1.pid" ]] && kill -0 "$(cat "$state/pids/$1.pid")" 2>/dev/null
}

stop_node() { # i [what]: every process of node i at once (what=all), or its kubelet alone
  local i="$1" what="${2:-all}" name pids=() p h
  name="$(node_name "$i")"
  if [[ "$what" == kubelet ]]; then
    running "$name-kubelet" && kill -9 "$(cat "$state/pids/$name-kubelet.pid")"
    return 0
  fi
  for p in "$state/pids/$name"-*.pid; do [[ -f "$p" ]] && pids+=("$(cat "$p")"); done
  # The containers' processes are in the node's cgroups; their shims name the node's directory
  # on their command line.
  for h in /sys/fs/cgroup/*/; do
    [[ -d "$h$(cgroup_root "$i")" ]] || continue
    mapfile -t -O "${#pids[@]}" pids < <(find "$h$(cgroup_root "$i")" -name cgroup.procs -exec cat {} + 2>/dev/null)
  done
  mapfile -t -O "${#pids[@]}" pids < <(pgrep -f "containerd-shim-runc-v2 .*$state/$name/" || true)
  ((${#pids[@]})) && kill -9 "${pids[@]}" 2>/dev/null || true
}

certs() {
  local pki="$state/pki"
  mkdir -p "$pki"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" -subj "/CN=cachefleet-local-ca" 2>/dev/null
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  cert apiserver "/CN=kube-apiserver" \
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:10.96.0.1,IP:$hostip,IP:127.0.0.1"
  cert admin "/O=system:masters/CN=cachefleet-admin" "DNS:localhost"
  local i
  for i in $(seq "$nodes"); do
    cert "$(node_name "$i")" "/O=system:nodes/CN=system:node:$(node_name "$i")" "IP:$(node_ip "$i")"
  done
}

cert() { # name, subject, SANs
  local pki="$state/pki"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$pki/$1.key" \
    -out "$pki/$1.csr" -subj "$2" 2>/dev/null
  openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 3650 -out "$pki/$1.crt" -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$3") 2>/dev/null
}

kubeconfig() { # name (a cert) -> $state/<name>.kubeconfig
  local f="$state/$1.kubeconfig" pki="$state/pki"
  kubectl config --kubeconfig "$f" set-cluster local --server "https://$hostip:6443" \
    --certificate-authority "$pki/ca.crt" --embed-certs >/dev/null
  kubectl config --kubeconfig "$f" set-credentials "$1" --client-certificate "$pki/$1.crt" \
    --client-key "$pki/$1.key" --embed-certs >/dev/null
  kubectl config --kubeconfig "$f" set-context local --cluster local --user "$1" >/dev/null
  kubectl config --kubeconfig "$f" use-context local >/dev/null
}

network() {
  ip link add "$bridge" type bridge
  ip addr add "$hostip/24" dev "$bridge"
  ip link set "$bridge" up
  local i j
  for i in $(seq "$nodes"); do
    local ns; ns="$(node_name "$i")"
    ip netns add "$ns"
    ip link add "veth-$ns" type veth peer name eth0 netns "$ns"
    ip link set "veth-$ns" master "$bridge" up
    ip -n "$ns" addr add "$(node_ip "$i")/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
    # Un-translated Service traffic stays on the bridge (and dies there): kube-proxy's DNAT needs
    # a route to exist for connections the node itself opens.
    ip -n "$ns" route add "$svccidr" dev eth0
    ip route add "10.244.$i.0/24" via "$(node_ip "$i")"
    for j in $(seq "$nodes"); do
      [[ "$i" == "$j" ]] || ip -n "$ns" route add "10.244.$j.0/24" via "$(node_ip "$j")"
    done
  done
}

control_plane() {
  local pki="$state/pki"
  start etcd etcd --data-dir "$state/etcd" --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
    --initial-cluster "default=http://127.0.0.1:$((etcd_port + 1))" --unsafe-no-fsync
  start kube-apiserver kube-apiserver --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address "$hostip" --advertise-address "$hostip" --secure-port 6443 \
    --service-cluster-ip-range "$svccidr" --client-ca-file "$pki/ca.crt" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --kubelet-client-certificate "$pki/admin.crt" --kubelet-client-key "$pki/admin.key" \
    --allow-privileged=true --kubelet-preferred-address-types InternalIP
  local ok=""
  for _ in $(seq 120); do
    kubectl --kubeconfig "$state/admin.kubeconfig" get --raw /readyz >/dev/null 2>&1 && { ok=1; break; }
    sleep 0.5
  done
  [[ -n "$ok" ]] || { tail -20 "$state/logs/kube-apiserver.log" >&2; return 1; }
  start kube-controller-manager kube-controller-manager --kubeconfig "$state/admin.kubeconfig" \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --use-service-account-credentials --leader-elect=false --cluster-signing-cert-file "$pki/ca.crt" \
    --cluster-signing-key-file "$pki/ca.key" --bind-address 127.0.0.1 --secure-port 0 \
    --kube-api-qps 100 --kube-api-burst 200
  start kube-scheduler kube-scheduler --kubeconfig "$state/admin.kubeconfig" --leader-elect=false \
    --bind-address 127.0.0.1 --secure-port 0
  cat >"$state/Corefile" <<EOF
.:53 {
    bind $hostip
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $state/admin.kubeconfig local
        pods insecure
        ttl 5
    }
}
EOF
  start coredns coredns -conf "$state/Corefile"
}

node() { # i: containerd, kubelet and kube-proxy inside the node's network namespace
  local i="$1" name ip dir netns
  name="$(node_name "$i")" ip="$(node_ip "$i")" dir="$state/$(node_name "$i")" netns="/run/netns/$(node_name "$i")"
  mkdir -p "$dir/cni" "$dir/kubelet" "$dir/pod-logs"
  write_if_changed "$dir/cni/10-cachefleet.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "cachefleet", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$dir/ipam", "ranges": [[{"subnet": "10.244.$i.0/24"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
]}
EOF
  write_if_changed "$dir/containerd.toml" <<EOF
version = 2
root = "$dir/containerd"
state = "$dir/containerd-state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$dir/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "cachefleet.local/pause:1"
  netns_mounts_under_state_dir = true
  enable_unprivileged_ports = true
  # This machine refuses to lower a process's oom_score_adj below its parent's (the kubelet asks
  # -998 for sandboxes): clamp to containerd's own instead of failing every pod.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
EOF
  # The kubelet's cgroups live under a root of their own per node (cgroup v1 here, one per hierarchy).
  local h
  for h in /sys/fs/cgroup/*/; do
    [[ -f "$h/cgroup.procs" ]] || continue
    mkdir -p "$h$(cgroup_root "$i")"
    if [[ -f "$h/cpuset.cpus" ]]; then
      cat "$h/cpuset.cpus" >"$h$(cgroup_root "$i")/cpuset.cpus"
      cat "$h/cpuset.mems" >"$h$(cgroup_root "$i")/cpuset.mems"
    fi
  done
  echo "nameserver $hostip" | write_if_changed "$dir/resolv.conf"
  write_if_changed "$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $ip
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $state/pki/ca.crt}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$dir/containerd.sock
cgroupDriver: cgroupfs
cgroupRoot: /$(cgroup_root "$i")
failCgroupV1: false
failSwapOn: false
clusterDNS: [$hostip]
clusterDomain: cluster.local
resolvConf: $dir/resolv.conf
podLogsDir: $dir/pod-logs
maxPods: 60
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
nodeStatusReportFrequency: 10s
EOF
  write_if_changed "$dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $state/admin.kubeconfig}
hostnameOverride: $name
bindAddress: $ip
clusterCIDR: $podcidr
mode: iptables
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
EOF
  # nsenter --net, not `ip netns exec`: the latter gives each process a mount namespace of its
  # own, and the kubelet and containerd must see each other's mounts (volumes, rootfs).
  # What is running already is left alone: start-node brings back what stop-node killed.
  if ! running "$name-containerd"; then
    rm -f "$dir/containerd.sock"
    start "$name-containerd" nsenter --net="$netns" containerd --config "$dir/containerd.toml"
    for _ in $(seq 60); do [[ -S "$dir/containerd.sock" ]] && break; sleep 0.5; done
    import_images "$i"
  fi
  running "$name-kubelet" || start "$name-kubelet" nsenter --net="$netns" kubelet --config "$dir/kubelet.yaml" \
    --kubeconfig "$state/$name.kubeconfig" --root-dir "$dir/kubelet" --cert-dir "$dir/kubelet/pki" \
    --hostname-override "$name" --node-ip "$ip"
  running "$name-kube-proxy" || start "$name-kube-proxy" nsenter --net="$netns" kube-proxy --config "$dir/kube-proxy.yaml"
}

images() { # builds the images every node runs into $state/images
  local out="$state/images" valkey bb
  mkdir -p "$out"
  (cd "$here/.." && go build -o "$out/imagesbin" ./hack/images &&
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/pause" ./hack/pause &&
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/agent" ./cmd/agent &&
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/manager" ./cmd/manager &&
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/appclient" ./test/appclient)
  valkey="$(dirname "$("$here/valkey-bins.sh")")"
  [[ -x "$valkey/valkey-server" ]] || { log "the shard image needs Valkey built from source (hack/valkey-bins.sh)"; return 1; }
  bb="$(command -v busybox)" || { log "the shard image needs a static busybox: apt-get install busybox-static"; return 1; }
  "$out/imagesbin" -tag cachefleet.local/pause:1 -out "$out/pause.tar" -entrypoint /pause "$out/pause=/pause"
  "$out/imagesbin" -tag ghcr.io/cachefleet/agent:dev -out "$out/agent.tar" -entrypoint /agent -user 65532 "$out/agent=/agent"
  "$out/imagesbin" -tag ghcr.io/cachefleet/manager:dev -out "$out/manager.tar" -entrypoint /manager -user 65532 "$out/manager=/manager"
  "$out/imagesbin" -tag cachefleet.local/appclient:1 -out "$out/appclient.tar" -entrypoint /appclient -user 65532 "$out/appclient=/appclient"
  "$out/imagesbin" -tag "docker.io/valkey/valkey:$VALKEY_VERSION" -out "$out/valkey.tar" -cmd valkey-server -user 999 \
    -busybox "$bb" "$valkey/valkey-server=/usr/local/bin/valkey-server" "$valkey/valkey-cli=/usr/local/bin/valkey-cli"
}

import_images() { # i
  local dir; dir="$state/$(node_name "$1")"
  local t
  for t in "$state"/images/*.tar; do
    ctr --address "$dir/containerd.sock" -n k8s.io images import "$t" >/dev/null
  done
  # A second tag of the operator's images: what an upgrade to a new version changes in the pod
  # templates (the e2e upgrade tests roll the manager and the agents to it).
  for t in manager agent; do
    ctr --address "$dir/containerd.sock" -n k8s.io images tag --force "ghcr.io/cachefleet/$t:dev" "ghcr.io/cachefleet/$t:next" >/dev/null
  done
}

create() {
  command -v containerd >/dev/null && command -v runc >/dev/null && [[ -x /usr/lib/cni/bridge ]] || {
    log "needs containerd, runc and the CNI plugins: apt-get install containerd runc containernetworking-plugins"; exit 1; }
  local bins; bins="$("$here/k8s-bins.sh" nodes)"
  export PATH="$bins:$PATH"
  # shellcheck source=versions.env
  source "$here/versions.env"
  delete
  mkdir -p "$state/pids" "$state/logs"
  local k
  for k in vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys kernel/keys/root_maxbytes; do
    echo "$k=$(cat "/proc/sys/$k")" >>"$state/sysctl.saved"
  done
  local t0=$SECONDS
  images
  log "images built in $((SECONDS - t0))s"
  certs
  kubeconfig admin
  local i
  for i in $(seq "$nodes"); do kubeconfig "$(node_name "$i")"; done
  network
  control_plane
  for i in $(seq "$nodes"); do node "$i"; done
  export KUBECONFIG="$state/admin.kubeconfig"
  for _ in $(seq 120); do
    [[ "$(kubectl get nodes --no-headers 2>/dev/null | grep -c ' Ready')" == "$nodes" ]] && break
    sleep 1
  done
  kubectl get nodes --no-headers 2>/dev/null | grep -c ' Ready' | grep -qx "$nodes" || {
    log "nodes not Ready"; kubectl get nodes >&2 || true; exit 1; }
  for _ in $(seq 60); do kubectl get sa default >/dev/null 2>&1 && break; sleep 1; done
  log "cluster with $nodes real nodes up in $((SECONDS - t0))s"
  echo "$state/admin.kubeconfig"
}

case "$cmd" in
  create) create ;;
  images)
    export PATH="$("$here/k8s-bins.sh" nodes):$PATH"
    # shellcheck source=versions.env
    source "$here/versions.env"
    images
    for d in "$state"/cfnode*/; do import_images "$(basename "$d" | tr -dc 0-9)"; done
    ;;
  delete) delete ;;
  stop-node) stop_node "$nodes" ;;
  stop-kubelet) stop_node "$nodes" kubelet ;;
  start-node)
    export PATH="$("$here/k8s-bins.sh" nodes):$PATH"
    node "$nodes"
    ;;
  *) echo "usage: $0 create [nodes]|images|delete|stop-node i|stop-kubelet i|start-node i" >&2; exit 2 ;;
esac
