package controller

import (
	"fmt"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
)

// specError is a spec that can never work, found by a check the API server cannot make.
type specError struct{ field, msg string }

func (e *specError) Error() string { return e.msg }

// validateSpec makes the checks the CRD's schema and CEL rules cannot: nil when the spec can work.
func validateSpec(f *cachev1alpha1.CacheFleet) *specError {
	if _, ok := f.Spec.Shards.EffectiveMaxMemory(); !ok {
		return &specError{"spec.shards", "spec.shards has neither maxMemory nor a memory limit"}
	}
	// Not in the CRD: a CEL rule over resources.limits exceeds the API server's cost budget (the
	// map and its quantities are unbounded).
	if mm, limit := f.Spec.Shards.MaxMemory, f.Spec.Shards.Resources.Limits.Memory(); mm != nil && !limit.IsZero() && mm.Cmp(*limit) >= 0 {
		return &specError{"spec.shards.maxMemory", fmt.Sprintf("spec.shards.maxMemory (%s) must be below resources.limits.memory (%s), leaving room for replication buffers",
			mm.String(), limit.String())}
	}
	return nil
}
