package controller

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
)

// shardRoles names each shard's primary pod (shard name -> pod name). The controller assigns it
// (pod 0 when a shard is created) and changes it only on failover; it never follows pod
// ordinals. It lives in a ConfigMap the shard pods read when their container starts (an env var
// from a configMapKeyRef, resolved at each start), so a restarted container sees its current role.
type shardRoles map[string]string

func rolesConfigMapName(f *cachev1alpha1.CacheFleet) string { return f.Name + "-roles" }

// shardPodName is the pod of shard i with the given ordinal.
func shardPodName(f *cachev1alpha1.CacheFleet, i, ordinal int) string {
	return fmt.Sprintf("%s-%d", shardStatefulSetName(f, i), ordinal)
}

// shardDomain is the headless Service's domain, under which every shard pod has a stable name.
func shardDomain(f *cachev1alpha1.CacheFleet) string {
	return fmt.Sprintf("%s.%s.svc", shardsServiceName(f), f.Namespace)
}

// podHost is the stable DNS name of a shard pod; podAddress adds the port.
func podHost(f *cachev1alpha1.CacheFleet, pod string) string { return pod + "." + shardDomain(f) }

func podAddress(f *cachev1alpha1.CacheFleet, pod string) string {
	return fmt.Sprintf("%s:%d", podHost(f, pod), ValkeyPort)
}

// withDefaults returns the roles with pod 0 as primary for every shard that has none yet, and
// without shards beyond the spec's count (their StatefulSets are being drained).
func (r shardRoles) withDefaults(f *cachev1alpha1.CacheFleet) shardRoles {
	out := shardRoles{}
	for i := 0; i < int(f.Spec.Shards.Count); i++ {
		name := shardName(i)
		if p, ok := r[name]; ok && ordinalOf(f, i, p) >= 0 && ordinalOf(f, i, p) <= int(f.Spec.Shards.Replicas) {
			out[name] = p
		} else {
			out[name] = shardPodName(f, i, 0)
		}
	}
	return out
}

// ordinalOf is pod's ordinal in shard i, or -1 when pod is not one of its pods.
func ordinalOf(f *cachev1alpha1.CacheFleet, i int, pod string) int {
	rest, ok := strings.CutPrefix(pod, shardStatefulSetName(f, i)+"-")
	if !ok {
		return -1
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

func buildRolesConfigMap(f *cachev1alpha1.CacheFleet, roles shardRoles) *corev1.ConfigMap {
	data := map[string]string{}
	for k, v := range roles {
		data[k] = v
	}
	return &corev1.ConfigMap{ObjectMeta: objectMeta(f, rolesConfigMapName(f), ComponentShard), Data: data}
}

// readRoles loads the shards' roles (pod 0 for shards that have none yet).
func (r *CacheFleetReconciler) readRoles(ctx context.Context, s *fleetScope) error {
	var cm corev1.ConfigMap
	err := r.Get(ctx, client.ObjectKey{Namespace: s.fleet.Namespace, Name: rolesConfigMapName(s.fleet)}, &cm)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	s.roles = shardRoles(cm.Data).withDefaults(s.fleet)
	return nil
}

// publishRoles writes the roles before the StatefulSets that read them exist or restart.
func (r *CacheFleetReconciler) publishRoles(ctx context.Context, s *fleetScope) error {
	return r.applyAndRecord(ctx, s.fleet, buildRolesConfigMap(s.fleet, s.roles))
}

// list is the roles in shard order, for the status.
func (r shardRoles) list() []cachev1alpha1.ShardPrimary {
	if len(r) == 0 {
		return nil
	}
	out := make([]cachev1alpha1.ShardPrimary, 0, len(r))
	for shard, pod := range r {
		out = append(out, cachev1alpha1.ShardPrimary{Shard: shard, Pod: pod})
	}
	slices.SortFunc(out, func(a, b cachev1alpha1.ShardPrimary) int {
		ai, _ := shardIndex(a.Shard)
		bi, _ := shardIndex(b.Shard)
		return ai - bi
	})
	return out
}
