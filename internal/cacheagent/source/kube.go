package source

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/cachefleet/cachefleet/internal/cacheagent/ring"
)

// Kube follows a fleet's ring ConfigMap and reports the epoch the agent serves in its Lease,
// which the controller counts to know when a removed shard is no longer used.
type Kube struct {
	Client    kubernetes.Interface
	Fleet     string
	Namespace string
	Node      string
	Pod       string
	// Apply installs a document with the shards' password (empty when auth is off).
	Apply  func(doc *ring.Document, password string) error
	Report func(error)
	// LeaseDuration is how long the Lease counts without renewal; renewed every third of it.
	LeaseDuration time.Duration

	served atomic.Int64
	ready  chan struct{}
}

// Labels the controller selects agent Leases by.
const (
	labelFleet     = "cachefleet.io/fleet"
	labelComponent = "app.kubernetes.io/component"
	labelPartOf    = "app.kubernetes.io/part-of"
	annRingEpoch   = "cachefleet.io/ring-epoch"
)

// Run watches the ConfigMap until ctx ends. It returns once the first document is applied
// (or fails), then keeps going in the background.
func (k *Kube) Run(ctx context.Context) error {
	k.ready = make(chan struct{})
	name := k.Fleet + "-ring"
	lw := cache.NewListWatchFromClient(k.Client.CoreV1().RESTClient(), "configmaps", k.Namespace,
		fields.OneTermEqualSelector("metadata.name", name))
	_, informer := cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: lw,
		ObjectType:    &corev1.ConfigMap{},
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { k.onConfigMap(ctx, o.(*corev1.ConfigMap)) },
			UpdateFunc: func(_, o any) { k.onConfigMap(ctx, o.(*corev1.ConfigMap)) },
		},
	})
	go informer.Run(ctx.Done())
	go k.renewLoop(ctx)
	select {
	case <-k.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Minute):
		return fmt.Errorf("no ring ConfigMap %s/%s after a minute", k.Namespace, name)
	}
}

func (k *Kube) onConfigMap(ctx context.Context, cm *corev1.ConfigMap) {
	doc, err := ring.Decode([]byte(cm.Data[ring.DocumentKey]))
	if err != nil {
		k.Report(fmt.Errorf("ring ConfigMap: %w", err))
		return
	}
	if doc.Epoch == k.served.Load() {
		return
	}
	password := ""
	if doc.Auth.Enabled && doc.Auth.Secret != nil {
		s, err := k.Client.CoreV1().Secrets(k.Namespace).Get(ctx, doc.Auth.Secret.Name, metav1.GetOptions{})
		if err != nil {
			k.Report(fmt.Errorf("reading the password Secret: %w", err))
			return
		}
		password = string(s.Data[doc.Auth.Secret.Key])
	}
	if err := k.Apply(doc, password); err != nil {
		k.Report(err)
		return
	}
	k.served.Store(doc.Epoch)
	if err := k.renew(ctx); err != nil {
		k.Report(err)
	}
	select {
	case <-k.ready:
	default:
		close(k.ready)
	}
}

func (k *Kube) renewLoop(ctx context.Context) {
	repeat(ctx, k.LeaseDuration/3, func() {
		if k.served.Load() == 0 {
			return
		}
		if err := k.renew(ctx); err != nil {
			k.Report(err)
		}
	})
}

// renew writes the Lease with the served epoch and a fresh renew time.
func (k *Kube) renew(ctx context.Context) error {
	leases := k.Client.CoordinationV1().Leases(k.Namespace)
	name := k.Fleet + "-agent-" + k.Node
	now := metav1.NewMicroTime(time.Now())
	secs := int32(k.LeaseDuration / time.Second)
	epoch := strconv.FormatInt(k.served.Load(), 10)
	l, err := leases.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		l = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: k.Namespace,
				Labels:      map[string]string{labelFleet: k.Fleet, labelComponent: "agent", labelPartOf: "cachefleet"},
				Annotations: map[string]string{annRingEpoch: epoch}},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &k.Pod, LeaseDurationSeconds: &secs, AcquireTime: &now, RenewTime: &now},
		}
		_, err = leases.Create(ctx, l, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	if l.Annotations == nil {
		l.Annotations = map[string]string{}
	}
	l.Annotations[annRingEpoch] = epoch
	l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime = &k.Pod, &secs, &now
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}
