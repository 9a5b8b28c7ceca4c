package controller

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
)

func TestValidateSpec(t *testing.T) {
	q := func(s string) *resource.Quantity { v := resource.MustParse(s); return &v }
	limit := func(s string) corev1.ResourceRequirements {
		return corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(s)}}
	}
	for _, tc := range []struct {
		name      string
		shards    cachev1alpha1.ShardsSpec
		wantField string // "" when the spec can work
	}{
		{"a memory limit alone", cachev1alpha1.ShardsSpec{Resources: limit("512Mi")}, ""},
		{"maxMemory alone", cachev1alpha1.ShardsSpec{MaxMemory: q("256Mi")}, ""},
		{"maxMemory below the limit", cachev1alpha1.ShardsSpec{MaxMemory: q("256Mi"), Resources: limit("512Mi")}, ""},
		{"neither", cachev1alpha1.ShardsSpec{}, "spec.shards"},
		{"maxMemory at the limit", cachev1alpha1.ShardsSpec{MaxMemory: q("512Mi"), Resources: limit("512Mi")}, "spec.shards.maxMemory"},
		{"maxMemory above the limit", cachev1alpha1.ShardsSpec{MaxMemory: q("1Gi"), Resources: limit("512Mi")}, "spec.shards.maxMemory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &cachev1alpha1.CacheFleet{Spec: cachev1alpha1.CacheFleetSpec{Shards: tc.shards}}
			got := validateSpec(f)
			switch {
			case tc.wantField == "" && got != nil:
				t.Errorf("refused: %s", got.msg)
			case tc.wantField != "" && (got == nil || got.field != tc.wantField):
				t.Errorf("got %+v, want a refusal of %s", got, tc.wantField)
			}
		})
	}
}
