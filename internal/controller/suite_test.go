package controller

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
	"github.com/cachefleet/cachefleet/internal/testenv"
)

// The suite runs the real controllers in a manager against a real kube-apiserver and etcd.
// envtest has no kube-controller-manager: tests write workload status themselves, and garbage
// collection is checked through owner references (the kwok e2e suite sees real deletion).
var (
	env       *testenv.Env
	k8s       client.Client // uncached, for assertions
	testDrain = 3 * time.Second
	nsSeq     atomic.Int32
)

func TestMain(m *testing.M) {
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.Level(zapLevel()))))
	var err error
	if env, err = testenv.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := AddToScheme(env.Scheme); err != nil {
		panic(err)
	}
	k8s, err = client.New(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		panic(err)
	}
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 env.Scheme,
		Cache:                  cache.Options{ByObject: CacheByObject()},
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptrTo(true)},
	})
	if err != nil {
		panic(err)
	}
	if err := Setup(mgr, Options{MaxConcurrentReconciles: 2, AgentImage: "agent:test", DrainTimeout: testDrain}); err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		if err := mgr.Start(ctx); err != nil {
			panic(err)
		}
	}()
	code := m.Run()
	cancel()
	_ = env.Stop()
	os.Exit(code)
}

func zapLevel() int8 {
	if os.Getenv("TEST_VERBOSE") != "" {
		return -2
	}
	return 1 // errors only
}

func ptrTo[T any](v T) *T { return &v }

// newNamespace gives each test its own namespace.
func newNamespace(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("t%d", nsSeq.Add(1))
	if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
	return name
}

// eventually polls cond until it returns nil or the timeout passes.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}

func newFleet(ns, name string, mutate func(*cachev1alpha1.CacheFleet)) *cachev1alpha1.CacheFleet {
	f := &cachev1alpha1.CacheFleet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	f.Spec.Shards.Count = 3
	f.Spec.Shards.Replicas = 1
	f.Spec.Shards.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: mustQuantity("512Mi")}
	if mutate != nil {
		mutate(f)
	}
	return f
}

// createFleet creates a fleet through the API server (defaults applied) and reads it back.
func createFleet(t *testing.T, f *cachev1alpha1.CacheFleet) *cachev1alpha1.CacheFleet {
	t.Helper()
	// Round-trip through unstructured-free JSON would drop defaults on zero values; send only
	// the fields the test set by creating from the typed object, then read back.
	if err := k8s.Create(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	got := &cachev1alpha1.CacheFleet{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(f), got); err != nil {
		t.Fatal(err)
	}
	return got
}

func getFleet(t *testing.T, ns, name string) *cachev1alpha1.CacheFleet {
	t.Helper()
	f := &cachev1alpha1.CacheFleet{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, f); err != nil {
		t.Fatal(err)
	}
	return f
}

func installServiceMonitorCRD(t *testing.T) {
	t.Helper()
	_, err := envtest.InstallCRDs(env.Config, envtest.CRDInstallOptions{
		Paths: []string{filepath.Join(testenv.RepoRoot(), "test", "crds")}, ErrorIfPathMissing: true,
	})
	if err != nil {
		t.Fatal(err)
	}
}
