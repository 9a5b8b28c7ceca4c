package controller

import (
	"fmt"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
	"github.com/cachefleet/cachefleet/internal/contract"
)

// Label keys. Children carry the recommended app.kubernetes.io labels; the cachefleet.io ones
// select pods precisely (shard index, role) without depending on names.
const (
	LabelName      = "app.kubernetes.io/name"
	LabelInstance  = "app.kubernetes.io/instance"
	LabelComponent = contract.LabelComponent
	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelPartOf    = contract.LabelPartOf
	LabelFleet     = contract.LabelFleet
	LabelShard     = "cachefleet.io/shard"

	ComponentShard = "shard"
	ComponentAgent = contract.ComponentAgent
	ComponentRing  = "ring"
	ComponentAuth  = "auth"

	// AnnotationInputHash records the hash of the desired object that was last written, so an
	// unchanged object is never written again.
	AnnotationInputHash = "cachefleet.io/input-hash"
	// AnnotationConfigHash rolls shard pods when their Valkey configuration changes.
	AnnotationConfigHash = "cachefleet.io/config-hash"
	// AnnotationRingEpoch and AnnotationPublishedAt are part of the agents' contract.
	AnnotationRingEpoch   = contract.AnnotationRingEpoch
	AnnotationPublishedAt = contract.AnnotationPublishedAt

	// ValkeyPort is the port of every shard pod.
	ValkeyPort = 6379
	// shardContainerName is the Valkey container of every shard pod.
	shardContainerName = "valkey"
)

// commonLabels are on every child of a fleet.
func commonLabels(f *cachev1alpha1.CacheFleet, component string) map[string]string {
	return map[string]string{
		LabelName:      "cachefleet",
		LabelInstance:  f.Name,
		LabelComponent: component,
		LabelManagedBy: "cachefleet-operator",
		LabelPartOf:    contract.PartOf,
		LabelFleet:     f.Name,
	}
}

// selectorLabels select a fleet's pods of one component; immutable once a workload exists.
func selectorLabels(f *cachev1alpha1.CacheFleet, component string) map[string]string {
	return map[string]string{LabelFleet: f.Name, LabelComponent: component}
}

func shardName(i int) string { return fmt.Sprintf("shard-%d", i) }
func shardStatefulSetName(f *cachev1alpha1.CacheFleet, i int) string {
	return fmt.Sprintf("%s-shard-%d", f.Name, i)
}
func shardsServiceName(f *cachev1alpha1.CacheFleet) string { return f.Name + "-shards" }
func shardsConfigName(f *cachev1alpha1.CacheFleet) string  { return f.Name + "-shards-config" }
func ringConfigMapName(f *cachev1alpha1.CacheFleet) string { return contract.RingConfigMapName(f.Name) }
func agentName(f *cachev1alpha1.CacheFleet) string         { return f.Name + "-agent" }
func networkPolicyName(f *cachev1alpha1.CacheFleet) string { return f.Name + "-shards" }

// agentLeaseName is the Lease an agent on node renews with the ring epoch it serves.
func agentLeaseName(fleet, node string) string { return contract.AgentLeaseName(fleet, node) }

// objectMeta is the metadata of a child: name, namespace, labels and the controller reference
// that lets garbage collection remove it with the fleet.
func objectMeta(f *cachev1alpha1.CacheFleet, name, component string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:      name,
		Namespace: f.Namespace,
		Labels:    commonLabels(f, component),
		OwnerReferences: []metav1.OwnerReference{
			*metav1.NewControllerRef(f, cachev1alpha1.GroupVersion.WithKind("CacheFleet")),
		},
	}
}

// shardIndex parses "shard-<i>".
func shardIndex(name string) (int, bool) {
	n, ok := strings.CutPrefix(name, "shard-")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(n)
	return i, err == nil && i >= 0
}
