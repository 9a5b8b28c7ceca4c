package controller

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// defaultedFleet is what the API server stores for the sample fleet: every default applied.
func defaultedFleet() *cachev1alpha1.CacheFleet {
	f := &cachev1alpha1.CacheFleet{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", UID: "uid-1"}}
	s := &f.Spec
	s.Shards = cachev1alpha1.ShardsSpec{
		Count: 3, Replicas: 1, Image: "valkey/valkey:8.1.4", EvictionPolicy: "allkeys-lru",
		Resources: corev1.ResourceRequirements{
			Limits:   corev1.ResourceList{corev1.ResourceMemory: mustQuantity("512Mi")},
			Requests: corev1.ResourceList{corev1.ResourceCPU: mustQuantity("100m"), corev1.ResourceMemory: mustQuantity("512Mi")},
		},
		PodDisruptionBudget: cachev1alpha1.PodDisruptionBudgetSpec{Enabled: true},
		Fencing:             cachev1alpha1.FencingSpec{Enabled: true, MaxLagSeconds: 2},
	}
	s.Ring = cachev1alpha1.RingSpec{Algorithm: "rendezvous", VirtualNodes: 160}
	s.Tiers.L1 = cachev1alpha1.L1Spec{Enabled: true, MaxMemory: mustQuantity("64Mi"), MaxTTL: metav1.Duration{Duration: time.Minute}}
	s.Tiers.L2 = cachev1alpha1.L2Spec{DefaultTTL: metav1.Duration{Duration: time.Hour}, MinUsableTTL: metav1.Duration{Duration: 5 * time.Second}, MaxValueSize: mustQuantity("1Mi")}
	s.Agent = cachev1alpha1.AgentSpec{Port: 6380, HTTPPort: 8080, Limits: cachev1alpha1.AgentLimits{MaxClients: 10000, ClientOutputBuffer: cachev1alpha1.ClientOutputBufferLimit{Hard: mustQuantity("32Mi"), Soft: mustQuantity("8Mi"), SoftSeconds: 10, Total: mustQuantity("128Mi")}}}
	s.Auth.Enabled = true
	s.Monitoring.ServiceMonitor = cachev1alpha1.ServiceMonitorSpec{Interval: "30s"}
	return f
}

func samplePolicies() []cachev1alpha1.CachePolicy {
	a := cachev1alpha1.CachePolicy{ObjectMeta: metav1.ObjectMeta{Name: "sessions"}}
	a.Spec = cachev1alpha1.CachePolicySpec{KeyPrefix: "session:", TTL: &metav1.Duration{Duration: 30 * time.Minute}, TTLJitterPercent: 10,
		L1: cachev1alpha1.PolicyL1{Enabled: true, Mode: "tracking", TTL: &metav1.Duration{Duration: 30 * time.Second}}, InvalidateOnWrite: true}
	b := cachev1alpha1.CachePolicy{ObjectMeta: metav1.ObjectMeta{Name: "catalog"}}
	b.Spec = cachev1alpha1.CachePolicySpec{KeyPrefix: "catalog:", TTL: &metav1.Duration{Duration: 10 * time.Minute},
		L1: cachev1alpha1.PolicyL1{Enabled: true, Mode: "ttl"}, InvalidateOnWrite: true,
		StampedeProtection: cachev1alpha1.StampedeProtection{Enabled: true, LeaseTTL: metav1.Duration{Duration: 5 * time.Second}},
		Compression:        cachev1alpha1.Compression{Algorithm: "zstd", MinSize: mustQuantity("1Ki")}}
	c := cachev1alpha1.CachePolicy{ObjectMeta: metav1.ObjectMeta{Name: "items"}}
	c.Spec = cachev1alpha1.CachePolicySpec{KeyPrefix: "item:", TTL: &metav1.Duration{Duration: time.Minute},
		L1: cachev1alpha1.PolicyL1{Enabled: true, Mode: "tracking"}, InvalidateOnWrite: true,
		NegativeCacheTTL:     &metav1.Duration{Duration: 30 * time.Second},
		StaleWhileRevalidate: &metav1.Duration{Duration: 30 * time.Second}, StaleIfError: &metav1.Duration{Duration: time.Hour},
		Origin: &cachev1alpha1.Origin{URL: "http://catalog.shop.svc:8080/items/{key}", Timeout: metav1.Duration{Duration: 2 * time.Second},
			HeadersFrom: &cachev1alpha1.SecretName{Name: "catalog-auth"}, AllowedStatusCodes: []int32{200, 203}}}
	return []cachev1alpha1.CachePolicy{a, b, c}
}

func assertGolden(t *testing.T, name string, obj any) {
	t.Helper()
	got, err := yaml.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run `make golden` to create it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s differs from the golden file; if the change is intended run `make golden`.\n--- got\n%s", name, got)
	}
}

func TestGoldenShardStatefulSet(t *testing.T) {
	assertGolden(t, "shard-statefulset.golden.yaml", buildShardStatefulSet(defaultedFleet(), 1))
}

func TestGoldenAgentDaemonSet(t *testing.T) {
	assertGolden(t, "agent-daemonset.golden.yaml", buildAgentDaemonSet(defaultedFleet(), "ghcr.io/cachefleet/agent:v0.1.0"))
}

func TestGoldenShardsConfig(t *testing.T) {
	assertGolden(t, "shards-configmap.golden.yaml", buildShardsConfig(defaultedFleet()))
}

// TestGoldenRingDocument pins the document agents follow; a change here is a change to the
// contract between controller and agents.
func TestGoldenRingDocument(t *testing.T) {
	doc := buildRingDocument(defaultedFleet(), samplePolicies(), nil)
	doc.Seal(nil)
	assertGolden(t, "ring-document.golden.yaml", doc)
}

func TestBuildersThatMayReturnNil(t *testing.T) {
	f := defaultedFleet()
	tests := []struct {
		name    string
		mutate  func(*cachev1alpha1.CacheFleet)
		pdb, sm bool
		secrets int
	}{
		{"defaults", func(*cachev1alpha1.CacheFleet) {}, true, false, 2},
		{"no replicas: no PDB", func(f *cachev1alpha1.CacheFleet) { f.Spec.Shards.Replicas = 0 }, false, false, 2},
		{"PDB disabled", func(f *cachev1alpha1.CacheFleet) { f.Spec.Shards.PodDisruptionBudget.Enabled = false }, false, false, 2},
		{"monitoring on", func(f *cachev1alpha1.CacheFleet) { f.Spec.Monitoring.ServiceMonitor.Enabled = true }, true, true, 2},
		{"own password", func(f *cachev1alpha1.CacheFleet) {
			f.Spec.Auth.PasswordSecretRef = &cachev1alpha1.SecretKeyRef{Name: "mine", Key: "pw"}
		}, true, false, 1},
		{"auth off, own signing key", func(f *cachev1alpha1.CacheFleet) {
			f.Spec.Auth.Enabled = false
			f.Spec.Invalidation.SigningSecretRef = &cachev1alpha1.SecretKeyRef{Name: "k", Key: "k"}
		}, true, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := f.DeepCopy()
			tt.mutate(g)
			if got := buildShardPDB(g, 0) != nil; got != tt.pdb {
				t.Errorf("PDB built = %v, want %v", got, tt.pdb)
			}
			if got := buildServiceMonitor(g) != nil; got != tt.sm {
				t.Errorf("ServiceMonitor built = %v, want %v", got, tt.sm)
			}
			if got := len(generatedSecrets(g)); got != tt.secrets {
				t.Errorf("%d generated secrets, want %d", got, tt.secrets)
			}
		})
	}
}

func TestShardPodsWithoutAuthGetNoPassword(t *testing.T) {
	f := defaultedFleet()
	f.Spec.Auth.Enabled = false
	for _, e := range buildShardStatefulSet(f, 0).Spec.Template.Spec.Containers[0].Env {
		if e.Name == "VALKEY_PASSWORD" || e.Name == "REDISCLI_AUTH" {
			t.Errorf("auth disabled but %s is set", e.Name)
		}
	}
	if r := buildAgentRole(f, nil); len(r.Rules[1].ResourceNames) != 1 {
		t.Errorf("agent may read %v; only the bus key is needed without auth", r.Rules[1].ResourceNames)
	}
}

// TestAgentsMayReadTheOriginHeadersSecrets: the Role grows by the Secrets the published
// policies' origins take headers from, and by nothing else.
func TestAgentsMayReadTheOriginHeadersSecrets(t *testing.T) {
	f := defaultedFleet()
	doc := buildRingDocument(f, samplePolicies(), nil)
	got := buildAgentRole(f, doc).Rules[1].ResourceNames
	want := append(buildAgentRole(f, nil).Rules[1].ResourceNames, "catalog-auth")
	if !slices.Equal(got, want) {
		t.Errorf("agent may read Secrets %v, want %v", got, want)
	}
}

func TestBuildersDoNotMutateTheFleet(t *testing.T) {
	f := defaultedFleet()
	before := f.DeepCopy()
	buildShardStatefulSet(f, 0)
	buildAgentDaemonSet(f, "x")
	buildRingDocument(f, samplePolicies(), nil)
	buildServiceMonitor(f)
	if !equalJSON(t, f, before) {
		t.Error("a builder changed its input")
	}
}

func equalJSON(t *testing.T, a, b any) bool {
	ja, _ := yaml.Marshal(a)
	jb, _ := yaml.Marshal(b)
	return string(ja) == string(jb)
}

func TestRingDocumentCarriesAllowFlush(t *testing.T) {
	f := defaultedFleet()
	if buildRingDocument(f, nil, nil).Tiers.AllowFlush {
		t.Error("a fleet that does not allow flushes publishes allowFlush")
	}
	f.Spec.Tiers.L2.AllowFlush = true
	if !buildRingDocument(f, nil, nil).Tiers.AllowFlush {
		t.Error("spec.tiers.l2.allowFlush does not reach the agents")
	}
}

func TestAgentThreadsFollowItsCPULimit(t *testing.T) {
	for _, tc := range []struct {
		limit string // "" for none
		want  string // the --procs argument, "" for none (the agent's default of two)
	}{
		{"", ""},
		{"500m", "--procs=1"},
		{"1", "--procs=1"},
		{"1500m", "--procs=2"},
		{"4", "--procs=4"},
	} {
		f := defaultedFleet()
		f.Spec.Agent.Resources = corev1.ResourceRequirements{}
		if tc.limit != "" {
			f.Spec.Agent.Resources.Limits = corev1.ResourceList{corev1.ResourceCPU: mustQuantity(tc.limit)}
		}
		got := ""
		for _, a := range agentArgs(f) {
			if strings.HasPrefix(a, "--procs") {
				got = a
			}
		}
		if got != tc.want {
			t.Errorf("CPU limit %q: got %q, want %q", tc.limit, got, tc.want)
		}
	}
}

// TestServiceMonitorSendsThePasswordWhenAuthIsOn: agents with a password answer /metrics only
// with it, so the scrape must carry it, and only then.
func TestServiceMonitorSendsThePasswordWhenAuthIsOn(t *testing.T) {
	for _, auth := range []bool{true, false} {
		f := defaultedFleet()
		f.Spec.Monitoring.ServiceMonitor.Enabled = true
		f.Spec.Auth.Enabled = auth
		if !auth {
			f.Spec.Auth.PasswordSecretRef = nil
		}
		a := buildServiceMonitor(f).Spec.Endpoints[0].Authorization
		if !auth {
			if a != nil {
				t.Errorf("auth off: the scrape sends %+v", a)
			}
			continue
		}
		if a == nil || a.Type != "Bearer" || a.Credentials == nil || a.Credentials.Name != f.PasswordSecret().Name || a.Credentials.Key != f.PasswordSecret().Key {
			t.Errorf("auth on: scrape authorization %+v, want Bearer from %+v", a, f.PasswordSecret())
		}
	}
}
