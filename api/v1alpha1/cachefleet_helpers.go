package v1alpha1

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/resource"
)

// Names of the Secrets and keys the controller generates when the spec references none.
const (
	GeneratedPasswordKey = "password"
	GeneratedBusKey      = "key"
)

// maxMemoryPercentOfLimit leaves a quarter of the container's memory for replication buffers,
// client output buffers and allocator fragmentation, which maxmemory does not count.
const maxMemoryPercentOfLimit = 75

// Fenced says whether the shards' primaries run with Valkey's min-replicas-to-write (see
// FencingSpec): fencing is on and there are replicas to count.
func (s *ShardsSpec) Fenced() bool { return s.Fencing.Enabled && s.Replicas > 0 }

// FencingMaxLag is min-replicas-max-lag in seconds (2 when unset).
func (s *ShardsSpec) FencingMaxLag() int32 {
	if s.Fencing.MaxLagSeconds <= 0 {
		return 2
	}
	return s.Fencing.MaxLagSeconds
}

// EffectiveMaxMemory is the maxmemory Valkey runs with: spec.shards.maxMemory, else 75% of the
// memory limit. ok is false when neither is set (the API server refuses such a fleet).
func (s *ShardsSpec) EffectiveMaxMemory() (q resource.Quantity, ok bool) {
	if s.MaxMemory != nil {
		return s.MaxMemory.DeepCopy(), true
	}
	limit, found := s.Resources.Limits["memory"]
	if !found || limit.IsZero() {
		return resource.Quantity{}, false
	}
	return *resource.NewQuantity(limit.Value()*maxMemoryPercentOfLimit/100, resource.BinarySI), true
}

// InvalidationChannel is the effective bus channel: the spec's, else "cachefleet:<ns>/<name>".
func (f *CacheFleet) InvalidationChannel() string {
	if f.Spec.Invalidation.Channel != "" {
		return f.Spec.Invalidation.Channel
	}
	return fmt.Sprintf("cachefleet:%s/%s", f.Namespace, f.Name)
}

// PasswordSecret is the Secret and key holding the shards' password (generated when not referenced).
func (f *CacheFleet) PasswordSecret() SecretKeyRef {
	if ref := f.Spec.Auth.PasswordSecretRef; ref != nil {
		return *ref
	}
	return SecretKeyRef{Name: f.Name + "-auth", Key: GeneratedPasswordKey}
}

// BusSecret is the Secret and key holding the bus signing key (generated when not referenced).
func (f *CacheFleet) BusSecret() SecretKeyRef {
	if ref := f.Spec.Invalidation.SigningSecretRef; ref != nil {
		return *ref
	}
	return SecretKeyRef{Name: f.Name + "-bus", Key: GeneratedBusKey}
}
