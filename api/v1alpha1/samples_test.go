package v1alpha1_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
	"github.com/cachefleet/cachefleet/internal/testenv"
)

// TestSamplesAreAccepted creates every object in config/samples and reads it back typed, with the
// API server's defaults applied.
func TestSamplesAreAccepted(t *testing.T) {
	ctx := context.Background()
	files, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "config", "samples", "cache_*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples found: %v", err)
	}
	// A generated name, so the test can run again against the same API server (-count=2).
	nsObj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"generateName": "samples-"}}}
	if err := env.Client.Create(ctx, nsObj); err != nil {
		t.Fatal(err)
	}
	ns := nsObj.GetName()
	var fleets, policies int
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range bytes.Split(data, []byte("\n---")) {
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			obj := mustObject(t, string(doc))
			obj.SetNamespace(ns)
			if err := env.Client.Create(ctx, obj); err != nil {
				t.Fatalf("%s: sample %s refused: %v", filepath.Base(file), obj.GetName(), err)
			}
			key := client.ObjectKeyFromObject(obj)
			switch obj.GetKind() {
			case "CacheFleet":
				fleets++
				var f cachev1alpha1.CacheFleet
				if err := env.Client.Get(ctx, key, &f); err != nil {
					t.Fatal(err)
				}
				checkFleetDefaults(t, &f)
			case "CachePolicy":
				policies++
				var p cachev1alpha1.CachePolicy
				if err := env.Client.Get(ctx, key, &p); err != nil {
					t.Fatal(err)
				}
				checkPolicyDefaults(t, &p)
			default:
				t.Errorf("unexpected kind %q in %s", obj.GetKind(), file)
			}
		}
	}
	if fleets == 0 || policies == 0 {
		t.Errorf("samples hold %d fleets and %d policies; want at least one of each", fleets, policies)
	}
}

// TestEmptyFleetGetsEveryDefault pins the effective configuration of `spec: {}`: what
// `kubectl get -o yaml` shows for a fleet that sets nothing.
func TestEmptyFleetGetsEveryDefault(t *testing.T) {
	ctx := context.Background()
	obj := mustObject(t, "apiVersion: cache.cachefleet.io/v1alpha1\nkind: CacheFleet\nmetadata: {name: empty, namespace: default}\nspec: {}\n")
	if err := env.Client.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, obj) })
	var f cachev1alpha1.CacheFleet
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(obj), &f); err != nil {
		t.Fatal(err)
	}
	checkFleetDefaults(t, &f)
	s := f.Spec
	checks := map[string]bool{
		"shards.count=3":              s.Shards.Count == 3,
		"shards.replicas=0":           s.Shards.Replicas == 0,
		"shards.image=valkey 8":       strings.HasPrefix(s.Shards.Image, "valkey/valkey:8."),
		"shards.limits.memory=1Gi":    s.Shards.Resources.Limits.Memory().String() == "1Gi",
		"shards.evictionPolicy":       s.Shards.EvictionPolicy == "allkeys-lru",
		"shards.pdb.enabled":          s.Shards.PodDisruptionBudget.Enabled,
		"ring.virtualNodes=160":       s.Ring.VirtualNodes == 160,
		"tiers.l1.enabled":            s.Tiers.L1.Enabled,
		"tiers.l1.maxMemory=64Mi":     s.Tiers.L1.MaxMemory.String() == "64Mi",
		"tiers.l1.maxTTL=60s":         s.Tiers.L1.MaxTTL.Duration == time.Minute,
		"tiers.l2.defaultTTL=1h":      s.Tiers.L2.DefaultTTL.Duration == time.Hour,
		"tiers.l2.maxValueSize=1Mi":   s.Tiers.L2.MaxValueSize.String() == "1Mi",
		"agent.httpPort=8080":         s.Agent.HTTPPort == 8080,
		"monitoring off":              !s.Monitoring.ServiceMonitor.Enabled,
		"monitoring.interval=30s":     s.Monitoring.ServiceMonitor.Interval == "30s",
		"invalidation.channel absent": s.Invalidation.Channel == "",
	}
	for name, ok := range checks {
		if !ok {
			t.Errorf("default %s not applied: %+v", name, s)
		}
	}
}

func checkFleetDefaults(t *testing.T, f *cachev1alpha1.CacheFleet) {
	t.Helper()
	s := f.Spec
	if s.Ring.Algorithm != cachev1alpha1.HashRendezvous {
		t.Errorf("%s: ring.algorithm = %q, want rendezvous", f.Name, s.Ring.Algorithm)
	}
	if s.Tiers.L2.MinUsableTTL.Duration != 5*time.Second {
		t.Errorf("%s: tiers.l2.minUsableTTL = %v, want 5s", f.Name, s.Tiers.L2.MinUsableTTL)
	}
	if !s.Auth.Enabled || s.Agent.Port != 6380 || s.Shards.Image == "" || s.Tiers.L1.MaxTTL == (metav1.Duration{}) {
		t.Errorf("%s: defaults missing: auth=%v port=%d image=%q l1.maxTTL=%v", f.Name, s.Auth.Enabled, s.Agent.Port, s.Shards.Image, s.Tiers.L1.MaxTTL)
	}
	if _, ok := s.Shards.EffectiveMaxMemory(); !ok {
		t.Errorf("%s: no effective maxmemory", f.Name)
	}
}

func checkPolicyDefaults(t *testing.T, p *cachev1alpha1.CachePolicy) {
	t.Helper()
	s := p.Spec
	if !s.InvalidateOnWrite || !s.L1.Enabled || s.L1.Mode == "" || s.Compression.Algorithm == "" ||
		s.Compression.MinSize.IsZero() || s.StampedeProtection.LeaseTTL.Duration == 0 {
		t.Errorf("%s: defaults missing: %+v", p.Name, s)
	}
}
