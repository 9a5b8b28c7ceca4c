package v1alpha1

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestEffectiveMaxMemory(t *testing.T) {
	q := resource.MustParse
	ptr := func(s string) *resource.Quantity { v := q(s); return &v }
	tests := []struct {
		name   string
		spec   ShardsSpec
		want   int64
		wantOK bool
	}{
		{"explicit wins over limit", ShardsSpec{MaxMemory: ptr("100Mi"), Resources: limits("1Gi")}, 100 << 20, true},
		{"derived as 75% of the limit", ShardsSpec{Resources: limits("1Gi")}, 768 << 20, true},
		{"derived from decimal units", ShardsSpec{Resources: limits("1G")}, 750_000_000, true},
		{"neither set", ShardsSpec{}, 0, false},
		{"zero limit counts as unset", ShardsSpec{Resources: limits("0")}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.spec.EffectiveMaxMemory()
			if ok != tt.wantOK || got.Value() != tt.want {
				t.Fatalf("EffectiveMaxMemory() = %v, %v; want %d, %v", got.Value(), ok, tt.want, tt.wantOK)
			}
		})
	}
}

func limits(memory string) corev1.ResourceRequirements {
	return corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(memory)}}
}

func TestDerivedNames(t *testing.T) {
	f := &CacheFleet{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"}}
	if got := f.InvalidationChannel(); got != "cachefleet:shop/web" {
		t.Errorf("default channel = %q", got)
	}
	if got := f.PasswordSecret(); got != (SecretKeyRef{Name: "web-auth", Key: "password"}) {
		t.Errorf("default password secret = %+v", got)
	}
	if got := f.BusSecret(); got != (SecretKeyRef{Name: "web-bus", Key: "key"}) {
		t.Errorf("default bus secret = %+v", got)
	}

	f.Spec.Invalidation.Channel = "custom"
	f.Spec.Auth.PasswordSecretRef = &SecretKeyRef{Name: "mine", Key: "pw"}
	f.Spec.Invalidation.SigningSecretRef = &SecretKeyRef{Name: "sig", Key: "k"}
	if f.InvalidationChannel() != "custom" || f.PasswordSecret().Name != "mine" || f.BusSecret().Key != "k" {
		t.Errorf("references in the spec were not honoured: %q %+v %+v", f.InvalidationChannel(), f.PasswordSecret(), f.BusSecret())
	}
}
