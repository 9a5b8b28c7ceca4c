package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
)

// applyResult says what apply did.
type applyResult int

const (
	unchanged applyResult = iota
	created
	updated
)

// apply makes the cluster hold desired. An input-hash annotation records what was last written,
// so an unchanged desired object costs one cached read and no write.
func apply(ctx context.Context, c client.Client, desired client.Object) (applyResult, error) {
	hash, err := inputHash(desired)
	if err != nil {
		return unchanged, err
	}
	ann := desired.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[AnnotationInputHash] = hash
	desired.SetAnnotations(ann)

	existing := reflect.New(reflect.TypeOf(desired).Elem()).Interface().(client.Object)
	if err := c.Get(ctx, client.ObjectKeyFromObject(desired), existing); err != nil {
		if !apierrors.IsNotFound(err) {
			return unchanged, err
		}
		if err := c.Create(ctx, desired); err != nil {
			return unchanged, fmt.Errorf("creating %T %s: %w", desired, desired.GetName(), err)
		}
		return created, nil
	}
	if existing.GetAnnotations()[AnnotationInputHash] == hash {
		return unchanged, nil
	}
	preserveServerFields(existing, desired)
	desired.SetResourceVersion(existing.GetResourceVersion())
	if err := c.Update(ctx, desired); err != nil {
		return unchanged, fmt.Errorf("updating %T %s: %w", desired, desired.GetName(), err)
	}
	return updated, nil
}

// preserveServerFields copies fields the API server allocates and refuses to see changed.
func preserveServerFields(existing, desired client.Object) {
	if e, ok := existing.(*corev1.Service); ok {
		d := desired.(*corev1.Service)
		d.Spec.ClusterIP, d.Spec.ClusterIPs = e.Spec.ClusterIP, e.Spec.ClusterIPs
		d.Spec.IPFamilies, d.Spec.IPFamilyPolicy = e.Spec.IPFamilies, e.Spec.IPFamilyPolicy
	}
}

func inputHash(obj client.Object) (string, error) {
	b, err := json.Marshal(obj)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:12]), nil
}

// deleteIfExists deletes obj when it exists and the fleet controls it.
func (r *CacheFleetReconciler) deleteIfExists(ctx context.Context, f *cachev1alpha1.CacheFleet, obj client.Object) error {
	if err := r.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		return client.IgnoreNotFound(err)
	}
	if !metav1.IsControlledBy(obj, f) {
		return nil
	}
	if err := r.Delete(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}
