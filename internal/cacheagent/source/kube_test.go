package source

import (
	"context"
	"maps"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/cachefleet/cachefleet/internal/contract"
	"github.com/cachefleet/cachefleet/internal/testenv"
)

// apiServer starts a real API server for the test and returns a client and a context that
// ends with the test.
func apiServer(t *testing.T) (kubernetes.Interface, context.Context) {
	t.Helper()
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return kubernetes.NewForConfigOrDie(env.Config), ctx
}

// TestKubeFollowsTheRingAndReportsItsEpoch runs the agent's Kubernetes source against a real
// API server, and checks the Lease with the labels and annotation the controller counts.
func TestKubeFollowsTheRingAndReportsItsEpoch(t *testing.T) {
	cs, ctx := apiServer(t)
	ns := "default"

	doc := &contract.Document{SchemaVersion: 1, Fleet: "web", Namespace: ns, Algorithm: "rendezvous",
		Shards: []contract.Shard{{Name: "shard-0", Primary: "a:6379"}},
		Auth:   contract.Auth{Enabled: true, Secret: &contract.SecretRef{Name: "web-auth", Key: "password"}}}
	doc.Seal(nil)
	data, _ := doc.Encode()
	cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "web-auth"}, Data: map[string][]byte{"password": []byte("pw")}}, metav1.CreateOptions{})
	cm, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "web-ring"},
		Data: map[string]string{contract.DocumentKey: string(data)}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var epochs []int64
	var password string
	k := &Kube{Client: cs, Fleet: "web", Namespace: ns, Node: "node-1", Pod: "web-agent-x", LeaseDuration: 3 * time.Second,
		Report: func(err error) { t.Logf("report: %v", err) },
		Apply: func(d *contract.Document, sec Secrets) error {
			mu.Lock()
			defer mu.Unlock()
			epochs, password = append(epochs, d.Epoch), sec.Password
			return nil
		}}
	if err := k.Run(ctx); err != nil {
		t.Fatal(err)
	}
	lease := func() *coordinationv1.Lease {
		l, err := cs.CoordinationV1().Leases(ns).Get(ctx, "web-agent-node-1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	l := lease()
	if l.Annotations[contract.AnnotationRingEpoch] != "1" || l.Labels[contract.LabelFleet] != "web" ||
		l.Labels[contract.LabelComponent] != contract.ComponentAgent || l.Labels[contract.LabelPartOf] != "cachefleet" {
		t.Errorf("Lease the controller cannot count: %+v", l.ObjectMeta)
	}
	mu.Lock()
	if password != "pw" {
		t.Errorf("password %q not read from the Secret", password)
	}
	mu.Unlock()

	next := *doc
	next.Shards = append(next.Shards, contract.Shard{Name: "shard-1", Primary: "b:6379"})
	next.Seal(doc)
	data, _ = next.Encode()
	cm.Data[contract.DocumentKey] = string(data)
	if _, err := cs.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for lease().Annotations[contract.AnnotationRingEpoch] != "2" {
		if time.Now().After(deadline) {
			t.Fatalf("Lease still at epoch %s; applied %v", lease().Annotations[contract.AnnotationRingEpoch], epochs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	first := lease().Spec.RenewTime.Time
	time.Sleep(1500 * time.Millisecond)
	if !lease().Spec.RenewTime.After(first) {
		t.Error("the Lease is not renewed")
	}
}

// TestKubeRetriesAndFollowsSecrets: a ring whose password Secret does not exist yet is
// applied as soon as the Secret appears (retried with backoff, not at the next ConfigMap
// change); a changed password and a bus key that appears later are applied at the same epoch;
// an unreadable bus key does not hold the ring back.
func TestKubeRetriesAndFollowsSecrets(t *testing.T) {
	cs, ctx := apiServer(t)
	ns := "default"
	doc := &contract.Document{SchemaVersion: 1, Fleet: "api", Namespace: ns, Algorithm: "rendezvous",
		Shards:       []contract.Shard{{Name: "shard-0", Primary: "a:6379"}},
		Auth:         contract.Auth{Enabled: true, Secret: &contract.SecretRef{Name: "api-auth", Key: "password"}},
		Invalidation: contract.Invalidation{Channel: "c", Secret: contract.SecretRef{Name: "api-bus", Key: "key"}},
		Policies:     []contract.Policy{{Name: "items", Prefix: "item:", Origin: &contract.Origin{URL: "http://o/{key}", HeadersSecret: "api-origin"}}}}
	publishRing(t, cs, ns, doc)
	var mu sync.Mutex
	var got []Secrets
	k := &Kube{Client: cs, Fleet: "api", Namespace: ns, Node: "node-1", Pod: "p", LeaseDuration: 30 * time.Second,
		Resync: 200 * time.Millisecond, Report: func(err error) { t.Logf("report: %v", err) },
		Apply: func(_ *contract.Document, sec Secrets) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, sec)
			return nil
		}}
	ran := make(chan error, 1)
	go func() { ran <- k.Run(ctx) }()
	time.Sleep(500 * time.Millisecond) // the password Secret is missing: nothing can be applied
	mu.Lock()
	if len(got) != 0 {
		t.Fatalf("applied without the password: %+v", got)
	}
	mu.Unlock()
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "api-auth"}, Data: map[string][]byte{"password": []byte("one")}}
	if _, err := cs.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := <-ran; err != nil {
		t.Fatalf("Run: %v", err)
	}
	last := func() Secrets {
		mu.Lock()
		defer mu.Unlock()
		return got[len(got)-1]
	}
	if s := last(); s.Password != "one" || s.BusKey != nil || s.OriginHeaders != nil {
		t.Fatalf("first apply: %+v (the missing bus and origin headers Secrets must not hold the ring back)", s)
	}
	waitFor := func(what string, ok func(Secrets) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok(last()) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: last applied %+v", what, last())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	secret.Data["password"] = []byte("two")
	if _, err := cs.CoreV1().Secrets(ns).Update(ctx, secret, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("password change followed", func(s Secrets) bool { return s.Password == "two" })
	if _, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "api-bus"},
		Data: map[string][]byte{"key": []byte("bus-key")}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("bus key picked up", func(s Secrets) bool { return string(s.BusKey) == "bus-key" })
	if _, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "api-origin"},
		Data: map[string][]byte{"Authorization": []byte("Bearer t")}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("origin headers picked up", func(s Secrets) bool { return s.OriginHeaders["api-origin"]["Authorization"] == "Bearer t" })
	mu.Lock()
	n := len(got)
	mu.Unlock()
	time.Sleep(600 * time.Millisecond) // several resyncs with nothing changed
	mu.Lock()
	if len(got) != n {
		t.Errorf("unchanged resyncs applied %d more times", len(got)-n)
	}
	mu.Unlock()
}

// TestKubeReportsUnreachableShardsAtOnce: the shards the agent cannot reach, and those whose
// primary refuses writes, are in its Lease with its node, written when they change (Nudge), not
// at the next renewal.
func TestKubeReportsUnreachableShardsAtOnce(t *testing.T) {
	cs, ctx := apiServer(t)
	ns := "default"
	doc := &contract.Document{SchemaVersion: 1, Fleet: "api", Namespace: ns, Algorithm: "rendezvous",
		Shards: []contract.Shard{{Name: "shard-0", Primary: "a:6379"}}}
	publishRing(t, cs, ns, doc)
	var mu sync.Mutex
	lost, refusing := map[string]time.Time{}, map[string]time.Time{}
	k := &Kube{Client: cs, Fleet: "api", Namespace: ns, Node: "node-7", Pod: "api-agent-x", LeaseDuration: time.Minute,
		Report: func(err error) { t.Logf("report: %v", err) },
		Apply:  func(*contract.Document, Secrets) error { return nil },
		Unreachable: func() map[string]time.Time {
			mu.Lock()
			defer mu.Unlock()
			return maps.Clone(lost)
		},
		RefusingWrites: func() map[string]time.Time {
			mu.Lock()
			defer mu.Unlock()
			return maps.Clone(refusing)
		}}
	if err := k.Run(ctx); err != nil {
		t.Fatal(err)
	}
	annotations := func() map[string]string {
		l, err := cs.CoordinationV1().Leases(ns).Get(ctx, "api-agent-node-7", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return l.Annotations
	}
	if a := annotations(); a[contract.AnnotationNode] != "node-7" || a[contract.AnnotationUnreachable] != "" {
		t.Fatalf("first report %v", a)
	}
	since := time.UnixMilli(time.Now().UnixMilli())
	mu.Lock()
	lost["shard-0"], refusing["shard-1"] = since, since
	mu.Unlock()
	k.Nudge()
	deadline := time.Now().Add(5 * time.Second) // the next renewal is 20 s away
	for contract.ParseShardTimes(annotations()[contract.AnnotationUnreachable])["shard-0"] != since ||
		contract.ParseShardTimes(annotations()[contract.AnnotationRefusingWrites])["shard-1"] != since {
		if time.Now().After(deadline) {
			t.Fatalf("the lost shard is not reported: %v", annotations())
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	delete(lost, "shard-0")
	delete(refusing, "shard-1")
	mu.Unlock()
	k.Nudge()
	for annotations()[contract.AnnotationUnreachable] != "" || annotations()[contract.AnnotationRefusingWrites] != "" {
		if time.Now().After(deadline) {
			t.Fatalf("a shard reached again is still reported: %v", annotations())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// publishRing seals doc and publishes it as its fleet's first ring ConfigMap.
func publishRing(t *testing.T, cs kubernetes.Interface, ns string, doc *contract.Document) {
	t.Helper()
	doc.Seal(nil)
	data, _ := doc.Encode()
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(context.Background(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: contract.RingConfigMapName(doc.Fleet)},
		Data: map[string]string{contract.DocumentKey: string(data)}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}
