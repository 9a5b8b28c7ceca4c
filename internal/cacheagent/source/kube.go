package source

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"slices"
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

	"github.com/cachefleet/cachefleet/internal/contract"
)

// Kube follows a fleet's ring ConfigMap and the Secrets it names, and reports the epoch the
// agent serves in its Lease, which the controller counts to know when a removed shard is no
// longer used. It is level-triggered: whenever the document, the shards' password or the bus
// key differs from what is applied, it applies again, and a failed apply (a Secret not yet
// readable, say) is retried with backoff instead of waiting for the next ConfigMap change.
type Kube struct {
	Client    kubernetes.Interface
	Fleet     string
	Namespace string
	Node      string
	Pod       string
	// Apply installs a document with the fleet's Secrets.
	Apply  func(doc *contract.Document, s Secrets) error
	Report func(error)
	// LeaseDuration is how long the Lease counts without renewal; renewed every third of it.
	LeaseDuration time.Duration
	// Resync is how often the Secrets are read again to follow changes (default 10s).
	Resync time.Duration
	// Unreachable, if set, is the shards whose primary the agent cannot reach, reported in the
	// Lease for the controller (package reach); Nudge renews the Lease when it changes.
	Unreachable func() map[string]time.Time
	// RefusingWrites, if set, is the shards whose primary refuses writes for want of a replica
	// (fencing), reported the same way: the controller lifts a fence no replica could use.
	RefusingWrites func() map[string]time.Time

	served  atomic.Int64
	ready   chan struct{}
	latest  atomic.Pointer[contract.Document]
	kick    chan struct{}
	nudge   chan struct{}
	applied appliedState
}

// Nudge renews the Lease now (what it reports changed), once the agent serves a ring.
func (k *Kube) Nudge() {
	select {
	case k.nudge <- struct{}{}:
	default:
	}
}

// Secrets are what the agent reads from the fleet's Secrets.
type Secrets struct {
	Password string // empty when auth is off
	// BusKey signs the invalidation bus; nil when the fleet has no bus or the Secret could not
	// be read this time (the bus keeps its current key).
	BusKey []byte
	// OriginHeaders are the request headers of the policies' origins, by Secret name: each
	// key of the Secret is a header name, its value the header's value.
	OriginHeaders map[string]map[string]string
}

// appliedState identifies what was last applied, so an unchanged resync does nothing.
type appliedState struct {
	epoch    int64
	password [32]byte
	busKey   [32]byte
	headers  [32]byte
}

// Retry backoff after a failed apply.
const (
	retryFirst = 200 * time.Millisecond
	retryMax   = 10 * time.Second
)

// Run watches the ConfigMap until ctx ends. It returns once the first document is applied,
// then keeps going in the background.
func (k *Kube) Run(ctx context.Context) error {
	k.ready, k.kick, k.nudge = make(chan struct{}), make(chan struct{}, 1), make(chan struct{}, 1)
	if k.Resync == 0 {
		k.Resync = 10 * time.Second
	}
	name := contract.RingConfigMapName(k.Fleet)
	lw := cache.NewListWatchFromClient(k.Client.CoreV1().RESTClient(), "configmaps", k.Namespace,
		fields.OneTermEqualSelector("metadata.name", name))
	_, informer := cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: lw,
		ObjectType:    &corev1.ConfigMap{},
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { k.onConfigMap(o.(*corev1.ConfigMap)) },
			UpdateFunc: func(_, o any) { k.onConfigMap(o.(*corev1.ConfigMap)) },
		},
	})
	go informer.Run(ctx.Done())
	go k.applyLoop(ctx)
	go k.renewLoop(ctx)
	select {
	case <-k.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Minute):
		return fmt.Errorf("no ring applied from ConfigMap %s/%s after a minute", k.Namespace, name)
	}
}

func (k *Kube) onConfigMap(cm *corev1.ConfigMap) {
	doc, err := contract.Decode([]byte(cm.Data[contract.DocumentKey]))
	if err != nil {
		k.Report(fmt.Errorf("decoding the ring ConfigMap: %w", err))
		return
	}
	k.latest.Store(doc)
	select {
	case k.kick <- struct{}{}:
	default:
	}
}

// applyLoop applies the latest document whenever it or its Secrets change, retrying failures.
func (k *Kube) applyLoop(ctx context.Context) {
	resync := time.NewTicker(k.Resync)
	defer resync.Stop()
	retry := time.NewTimer(0)
	<-retry.C
	backoff := retryFirst
	for {
		select {
		case <-ctx.Done():
			return
		case <-k.kick:
		case <-resync.C:
		case <-retry.C:
		}
		if err := k.sync(ctx); err != nil {
			k.Report(err)
			retry.Reset(backoff)
			backoff = min(2*backoff, retryMax)
			continue
		}
		backoff = retryFirst
	}
}

// sync applies the latest document with freshly read Secrets unless nothing changed. An
// unreadable bus key does not hold the ring back: it is applied with the bus left as it is,
// and the error is returned so the read is retried.
func (k *Kube) sync(ctx context.Context) error {
	doc := k.latest.Load()
	if doc == nil {
		return nil
	}
	sec, busErr, err := k.readSecrets(ctx, doc)
	if err != nil {
		return err
	}
	state := appliedState{epoch: doc.Epoch, password: sha256.Sum256([]byte(sec.Password)), busKey: k.applied.busKey,
		headers: headersSum(sec.OriginHeaders)}
	if sec.BusKey != nil {
		state.busKey = sha256.Sum256(sec.BusKey)
	}
	if state != k.applied {
		if err := k.Apply(doc, sec); err != nil {
			return fmt.Errorf("applying ring epoch %d: %w", doc.Epoch, err)
		}
		k.applied = state
		k.served.Store(doc.Epoch)
		if err := k.renew(ctx); err != nil {
			k.Report(fmt.Errorf("renewing the agent Lease: %w", err))
		}
		select {
		case <-k.ready:
		default:
			close(k.ready)
		}
	}
	return busErr
}

// readSecrets reads the shards' password (required when auth is on), the bus key and the
// origins' headers (optional: their errors are returned apart).
func (k *Kube) readSecrets(ctx context.Context, doc *contract.Document) (sec Secrets, busErr, err error) {
	if doc.Auth.Enabled && doc.Auth.Secret != nil {
		v, err := k.secretValue(ctx, doc.Auth.Secret.Name, doc.Auth.Secret.Key)
		if err != nil {
			return sec, nil, fmt.Errorf("reading the password Secret: %w", err)
		}
		sec.Password = string(v)
	}
	// An unreadable origin headers Secret does not hold the ring back either: that origin is
	// not asked until it can be read (see origin.KindMisconfigured).
	var headerErrs []error
	for _, name := range doc.OriginHeaderSecrets() {
		s, err := k.Client.CoreV1().Secrets(k.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			headerErrs = append(headerErrs, fmt.Errorf("reading the origin headers Secret %s: %w", name, err))
			continue
		}
		if sec.OriginHeaders == nil {
			sec.OriginHeaders = map[string]map[string]string{}
		}
		sec.OriginHeaders[name] = map[string]string{}
		for h, v := range s.Data {
			sec.OriginHeaders[name][h] = string(v)
		}
	}
	if len(headerErrs) > 0 {
		busErr = errors.Join(headerErrs...)
	}
	if ref := doc.Invalidation.Secret; ref.Name != "" {
		v, err := k.secretValue(ctx, ref.Name, ref.Key)
		if err != nil {
			return sec, errors.Join(busErr, fmt.Errorf("reading the bus Secret: %w", err)), nil
		}
		sec.BusKey = v
	}
	return sec, busErr, nil
}

func (k *Kube) secretValue(ctx context.Context, name, key string) ([]byte, error) {
	s, err := k.Client.CoreV1().Secrets(k.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	v, ok := s.Data[key]
	if !ok {
		return nil, fmt.Errorf("the Secret %s has no key %q", name, key)
	}
	return v, nil
}

func (k *Kube) renewLoop(ctx context.Context) {
	t := time.NewTicker(k.LeaseDuration / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-k.nudge:
		}
		if k.served.Load() == 0 {
			continue
		}
		if err := k.renew(ctx); err != nil {
			k.Report(err)
		}
	}
}

// renew writes the Lease with the served epoch and a fresh renew time.
func (k *Kube) renew(ctx context.Context) error {
	leases := k.Client.CoordinationV1().Leases(k.Namespace)
	name := contract.AgentLeaseName(k.Fleet, k.Node)
	now := metav1.NewMicroTime(time.Now())
	secs := int32(k.LeaseDuration / time.Second)
	report := k.report()
	l, err := leases.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		l = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: k.Namespace,
				Labels:      map[string]string{contract.LabelFleet: k.Fleet, contract.LabelComponent: contract.ComponentAgent, contract.LabelPartOf: contract.PartOf},
				Annotations: report},
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
	maps.Copy(l.Annotations, report)
	l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime = &k.Pod, &secs, &now
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}

// report is what the Lease's annotations say: the epoch served, the node, the shards whose
// primary the agent cannot reach, and those whose primary refuses writes (empty when none).
func (k *Kube) report() map[string]string {
	a := map[string]string{contract.AnnotationRingEpoch: strconv.FormatInt(k.served.Load(), 10), contract.AnnotationNode: k.Node}
	if k.Unreachable != nil {
		a[contract.AnnotationUnreachable] = contract.FormatShardTimes(k.Unreachable())
	}
	if k.RefusingWrites != nil {
		a[contract.AnnotationRefusingWrites] = contract.FormatShardTimes(k.RefusingWrites())
	}
	return a
}

// headersSum identifies a set of origin headers, so a changed Secret is applied again.
func headersSum(bySecret map[string]map[string]string) [32]byte {
	h := sha256.New()
	for _, name := range slices.Sorted(maps.Keys(bySecret)) {
		fmt.Fprintf(h, "%q\n", name)
		for _, k := range slices.Sorted(maps.Keys(bySecret[name])) {
			fmt.Fprintf(h, "%q=%q\n", k, bySecret[name][k])
		}
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}
