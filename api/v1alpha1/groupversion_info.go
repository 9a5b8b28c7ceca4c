// Package v1alpha1 contains the cache.cachefleet.io/v1alpha1 API: CacheFleet and CachePolicy.
// +kubebuilder:object:generate=true
// +groupName=cache.cachefleet.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every type in this package.
	GroupVersion = schema.GroupVersion{Group: "cache.cachefleet.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package with a runtime.Scheme. It is
	// apimachinery's, so the API package does not depend on controller-runtime.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &CacheFleet{}, &CacheFleetList{}, &CachePolicy{}, &CachePolicyList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
