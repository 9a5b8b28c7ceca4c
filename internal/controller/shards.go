package controller

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
)

// valkeyUID is the valkey user of the official valkey/valkey images.
const valkeyUID = 999

// valkeyConfig renders the static part of every shard's valkey.conf. The password and the
// replica's primary are added at start-up by the container (they must not sit in a ConfigMap).
func valkeyConfig(f *cachev1alpha1.CacheFleet) string {
	maxmemory, _ := f.Spec.Shards.EffectiveMaxMemory()
	lines := []string{
		fmt.Sprintf("port %d", ValkeyPort),
		"bind * -::*",
		// Reachability is limited by auth and the NetworkPolicy, not by loopback-only binding.
		"protected-mode no",
		fmt.Sprintf("maxmemory %d", maxmemory.Value()),
		"maxmemory-policy " + string(f.Spec.Shards.EvictionPolicy),
		// A cache: no RDB snapshots, no AOF. Replicas sync over the network without disk.
		`save ""`,
		"appendonly no",
		"repl-diskless-sync yes",
		"repl-diskless-load on-empty-db",
		"dir /data",
		"replica-read-only yes",
		"replica-serve-stale-data yes",
		// Evictions and expiries free memory in the background instead of stalling clients.
		"lazyfree-lazy-eviction yes",
		"lazyfree-lazy-expire yes",
		"lazyfree-lazy-server-del yes",
		"tcp-keepalive 60",
		fmt.Sprintf("proto-max-bulk-len %d", max(f.Spec.Tiers.L2.MaxValueSize.Value(), 1<<20)),
	}
	if f.Spec.Shards.Fenced() {
		// Every pod starts fenced: a primary takes writes only while a replica hears them. The
		// controller lifts the fence while no replica could take over (fencing.go).
		lines = append(lines, "min-replicas-to-write 1", fmt.Sprintf("min-replicas-max-lag %d", f.Spec.Shards.FencingMaxLag()))
	}
	return strings.Join(lines, "\n") + "\n"
}

// buildShardsConfig is the ConfigMap holding valkey.conf for every shard.
func buildShardsConfig(f *cachev1alpha1.CacheFleet) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: objectMeta(f, shardsConfigName(f), ComponentShard),
		Data:       map[string]string{"valkey.conf": valkeyConfig(f)},
	}
}

// shardStartScript writes the runtime config (password, replicaof) into a tmpfs and execs Valkey.
// The primary is the pod the controller named in the roles ConfigMap (PRIMARY_POD), never an
// ordinal. Nothing is persisted, so a primary always starts empty: if a peer still holds the
// shard's data (a replica with a replication offset), the starting primary replicates from the
// peer with the most data instead, and the controller promotes that peer. A replica must never
// full-sync from an empty primary (that wipes the shard). The password is escaped for Valkey's
// config syntax, so a user's Secret may hold quotes and backslashes.
const shardStartScript = `set -eu
primary="$PRIMARY_POD"
rm -f /run/valkey/deferred /run/valkey/synced
if [ "$POD_NAME" = "$primary" ]; then
  best=0
  for peer in $SHARD_PEERS; do
    [ "$peer" = "$POD_NAME" ] && continue
    offset=$(timeout 3 valkey-cli -h "$peer.$SHARD_DOMAIN" -p 6379 --no-auth-warning INFO replication 2>/dev/null |
      tr -d '\r' | sed -n 's/^master_repl_offset://p') || true
    if [ -n "$offset" ] && [ "$offset" -gt "$best" ]; then
      best=$offset primary=$peer
    fi
  done
  if [ "$primary" != "$POD_NAME" ]; then
    echo "started empty while $primary holds the shard's data (offset $best): replicating from it" >&2
    # Not ready until synced: the controller sees an unready primary and promotes the peer.
    touch /run/valkey/deferred
  fi
fi
{
  echo "include /etc/valkey/valkey.conf"
  if [ -n "${VALKEY_PASSWORD:-}" ]; then
    case "$VALKEY_PASSWORD" in
      *"
"*) echo "the password in the fleet's Secret must be a single line" >&2; exit 1 ;;
    esac
    # Valkey reads backslash sequences inside double quotes as escapes: escaping backslashes and
    # double quotes keeps every character of the password literal.
    pw=$(printf '%s' "$VALKEY_PASSWORD" | sed 's/[\\"]/\\&/g')
    printf 'requirepass "%s"\nmasterauth "%s"\n' "$pw" "$pw"
  fi
  if [ "$primary" != "$POD_NAME" ]; then
    echo "replicaof $primary.$SHARD_DOMAIN ` + "6379" + `"
  fi
} > /run/valkey/valkey.conf
exec valkey-server /run/valkey/valkey.conf
`

// shardPreStopScript is the planned switchover's fallback: the controller hands a terminating
// primary's role to its most up-to-date replica as soon as it sees the pod being deleted (see
// decideFailover); when it has not (it is down, or slower than the kubelet), the primary does it
// itself with Valkey's FAILOVER, which pauses writes until the replica has every one, so no
// acknowledged write is lost. Either way the hook waits for the handover under way (its own
// FAILOVER is refused while the controller's runs) before the container is stopped.
//
// A replica that is stopped is its fenced primary's last good replica, maybe: the primary would
// refuse writes from the moment it leaves until the controller lifts the fence (fencing.go),
// which it does as soon as it sees the pod being deleted. The hook waits for that, up to 3 s:
// until the primary no longer counts good replicas (fence lifted, or fencing off) or counts
// another one besides this.
const shardPreStopScript = `info=$(valkey-cli -h 127.0.0.1 -p 6379 info replication | tr -d '\r')
case "$info" in
  *failover-in-progress*|*waiting-for-sync*) ;;
  *role:master*)
    case "$info" in *connected_slaves:0*) exit 0 ;; esac
    valkey-cli -h 127.0.0.1 -p 6379 FAILOVER TIMEOUT 5000 >/dev/null ;;
  *role:slave*)
    host=$(echo "$info" | sed -n 's/^master_host://p')
    port=$(echo "$info" | sed -n 's/^master_port://p')
    i=0
    while [ $i -lt 30 ]; do
      good=$(valkey-cli -h "$host" -p "$port" info replication 2>/dev/null | tr -d '\r' | sed -n 's/^min_slaves_good_slaves://p')
      case "$good" in ""|[2-9]|[1-9][0-9]*) exit 0 ;; esac
      sleep 0.1
      i=$((i + 1))
    done
    exit 0 ;;
  *) exit 0 ;;
esac
i=0
while [ $i -lt 70 ]; do
  valkey-cli -h 127.0.0.1 -p 6379 info replication | grep -q master_failover_state:no-failover && exit 0
  sleep 0.1
  i=$((i + 1))
done`

// shardLivenessScript authenticates through REDISCLI_AUTH, so the password is not on a command line.
const shardLivenessScript = `valkey-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG`

// shardReadinessScript: alive and holding the shard's data: a primary (not one that deferred to
// a peer, see shardStartScript), or a replica once it has synced. Ready then stays ready while
// the process lives (a replica whose primary went away still holds the data the controller may
// promote), so a rollout moves to the next pod, a primary, only after this one can take over.
const shardReadinessScript = shardLivenessScript + ` && { [ -f /run/valkey/synced ] || {
  info=$(valkey-cli -h 127.0.0.1 -p 6379 info replication | tr -d '\r')
  case "$info" in
    *master_link_status:up*) ;;
    *role:master*) [ ! -f /run/valkey/deferred ] || exit 1 ;;
    *) exit 1 ;;
  esac
  touch /run/valkey/synced
}; }`

// buildShardStatefulSet is shard i: 1+replicas pods, one of them the primary (see shardRoles).
func buildShardStatefulSet(f *cachev1alpha1.CacheFleet, i int) *appsv1.StatefulSet {
	s := f.Spec.Shards
	name := shardStatefulSetName(f, i)
	selector := selectorLabels(f, ComponentShard)
	selector[LabelShard] = shardName(i)
	podLabels := commonLabels(f, ComponentShard)
	podLabels[LabelShard] = shardName(i)
	meta := objectMeta(f, name, ComponentShard)
	meta.Labels[LabelShard] = shardName(i)

	peers := make([]string, 0, 1+s.Replicas)
	for o := 0; o <= int(s.Replicas); o++ {
		peers = append(peers, shardPodName(f, i, o))
	}
	env := []corev1.EnvVar{
		fieldEnv("POD_NAME", "metadata.name"),
		{Name: "PRIMARY_POD", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: rolesConfigMapName(f)}, Key: shardName(i)}}},
		{Name: "SHARD_PEERS", Value: strings.Join(peers, " ")},
		{Name: "SHARD_DOMAIN", Value: shardDomain(f)},
	}
	if f.Spec.Auth.Enabled {
		env = append(env, secretEnv("VALKEY_PASSWORD", f.PasswordSecret()), secretEnv("REDISCLI_AUTH", f.PasswordSecret()))
	}
	probe := func(script string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", script}}},
			PeriodSeconds:    period,
			TimeoutSeconds:   3,
			FailureThreshold: failures,
		}
	}
	affinity := s.Scheduling.Affinity
	if affinity == nil && s.Replicas > 0 {
		// A replica on its primary's node dies with it; keep a shard's pods on different nodes.
		affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
				LabelSelector: &metav1.LabelSelector{MatchLabels: selector},
				TopologyKey:   corev1.LabelHostname,
			}},
		}}
	}
	spread := s.Scheduling.TopologySpreadConstraints
	if len(spread) == 0 {
		// Spread the fleet's shard pods over nodes, so one node failure takes few primaries.
		spread = []corev1.TopologySpreadConstraint{{
			MaxSkew:           1,
			TopologyKey:       corev1.LabelHostname,
			WhenUnsatisfiable: corev1.ScheduleAnyway,
			LabelSelector:     &metav1.LabelSelector{MatchLabels: selectorLabels(f, ComponentShard)},
		}}
	}
	configHash := sha256.Sum256([]byte(valkeyConfig(f)))

	return &appsv1.StatefulSet{
		ObjectMeta: meta,
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr.To(1 + s.Replicas),
			ServiceName:         shardsServiceName(f),
			Selector:            &metav1.LabelSelector{MatchLabels: selector},
			PodManagementPolicy: appsv1.OrderedReadyPodManagement,
			UpdateStrategy:      appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      podLabels,
					Annotations: map[string]string{AnnotationConfigHash: hex.EncodeToString(configHash[:8])},
				},
				Spec: corev1.PodSpec{
					AutomountServiceAccountToken:  ptr.To(false),
					EnableServiceLinks:            ptr.To(false),
					SecurityContext:               restrictedPod(valkeyUID),
					TerminationGracePeriodSeconds: ptr.To[int64](30),
					NodeSelector:                  s.Scheduling.NodeSelector,
					Tolerations:                   s.Scheduling.Tolerations,
					Affinity:                      affinity,
					TopologySpreadConstraints:     spread,
					Containers: []corev1.Container{{
						Name:           shardContainerName,
						Image:          s.Image,
						Command:        []string{"sh", "-c", shardStartScript},
						Env:            env,
						Ports:          []corev1.ContainerPort{{Name: "valkey", ContainerPort: ValkeyPort, Protocol: corev1.ProtocolTCP}},
						Resources:      s.Resources,
						ReadinessProbe: probe(shardReadinessScript, 5, 2),
						LivenessProbe:  probe(shardLivenessScript, 10, 6),
						Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{
							Exec: &corev1.ExecAction{Command: []string{"sh", "-c", shardPreStopScript}}}},
						SecurityContext: restrictedContainer(),
						VolumeMounts: []corev1.VolumeMount{
							{Name: "config", MountPath: "/etc/valkey", ReadOnly: true},
							{Name: "run", MountPath: "/run/valkey"},
							{Name: "data", MountPath: "/data"},
						},
					}},
					Volumes: []corev1.Volume{
						{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
							LocalObjectReference: corev1.LocalObjectReference{Name: shardsConfigName(f)}}}},
						{Name: "run", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
							Medium: corev1.StorageMediumMemory, SizeLimit: ptr.To(resource.MustParse("1Mi"))}}},
						{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
					},
				},
			},
		},
	}
}

// buildShardsService is the headless Service giving every shard pod a stable DNS name. Not-ready
// addresses are published so replicas can find a primary that is still starting.
func buildShardsService(f *cachev1alpha1.CacheFleet) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: objectMeta(f, shardsServiceName(f), ComponentShard),
		Spec: corev1.ServiceSpec{
			ClusterIP:                corev1.ClusterIPNone,
			PublishNotReadyAddresses: true,
			Selector:                 selectorLabels(f, ComponentShard),
			Ports: []corev1.ServicePort{{
				Name: "valkey", Port: ValkeyPort, TargetPort: intstr.FromString("valkey"), Protocol: corev1.ProtocolTCP,
			}},
		},
	}
}

// buildShardPDB limits voluntary disruption of shard i to one pod; nil when the shard has no
// replicas (a lone primary cannot be evicted without an outage anyway) or PDBs are off.
func buildShardPDB(f *cachev1alpha1.CacheFleet, i int) *policyv1.PodDisruptionBudget {
	if f.Spec.Shards.Replicas == 0 || !f.Spec.Shards.PodDisruptionBudget.Enabled {
		return nil
	}
	selector := selectorLabels(f, ComponentShard)
	selector[LabelShard] = shardName(i)
	meta := objectMeta(f, shardStatefulSetName(f, i), ComponentShard)
	meta.Labels[LabelShard] = shardName(i)
	return &policyv1.PodDisruptionBudget{
		ObjectMeta: meta,
		Spec: policyv1.PodDisruptionBudgetSpec{
			MaxUnavailable: ptr.To(intstr.FromInt32(1)),
			Selector:       &metav1.LabelSelector{MatchLabels: selector},
		},
	}
}

// newPDB is an empty PodDisruptionBudget with shard i's name, for lookups and deletes.
func newPDB(f *cachev1alpha1.CacheFleet, i int) *policyv1.PodDisruptionBudget {
	return &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Namespace: f.Namespace, Name: shardStatefulSetName(f, i)}}
}
