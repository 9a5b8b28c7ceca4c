package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/cachefleet/cachefleet/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	var err error
	if env, err = testenv.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

// invalidCase is an object the API server must refuse, with the words its error must contain:
// the field path and the reason.
type invalidCase struct {
	name string
	yaml string
	want []string
}

const fleetHead = "apiVersion: cache.cachefleet.io/v1alpha1\nkind: CacheFleet\nmetadata: {name: %s, namespace: default}\n"

func fleet(spec string) string { return fmt.Sprintf(fleetHead, "f") + "spec:\n" + spec }

func TestCacheFleetValidation(t *testing.T) {
	cases := []invalidCase{
		{"zero shards", fleet("  shards: {count: 0}"), []string{"spec.shards.count: Invalid value: 0", "greater than or equal to 1"}},
		{"too many shards", fleet("  shards: {count: 257}"), []string{"spec.shards.count: Invalid value: 257", "less than or equal to 256"}},
		{"too many replicas", fleet("  shards: {replicas: 6}"), []string{"spec.shards.replicas: Invalid value: 6", "less than or equal to 5"}},
		{"unknown eviction policy", fleet("  shards: {evictionPolicy: lru}"), []string{"spec.shards.evictionPolicy: Unsupported value: \"lru\"", "allkeys-lru"}},
		{"no memory bound", fleet("  shards: {resources: {requests: {cpu: 100m}}}"), []string{"spec.shards.maxMemory", "set maxMemory or resources.limits.memory"}},
		{"failover too fast", fleet("  shards: {failoverAfter: 100ms}"), []string{"spec.shards.failoverAfter", "between 1s and 10m"}},
		{"warm-up window too long", fleet("  shards: {warmUpWindow: 25h}"), []string{"spec.shards.warmUpWindow", "between 0s and 24h"}},
		{"warm-up window not a duration", fleet("  shards: {warmUpWindow: forever}"), []string{"spec.shards.warmUpWindow: Invalid value: \"forever\""}},
		{"unknown hash", fleet("  ring: {algorithm: jump}"), []string{"spec.ring.algorithm: Unsupported value: \"jump\""}},
		{"zero virtual nodes", fleet("  ring: {virtualNodes: 0}"), []string{"spec.ring.virtualNodes: Invalid value: 0"}},
		{"L1 maxTTL zero", fleet("  tiers: {l1: {maxTTL: 0s}}"), []string{"spec.tiers.l1.maxTTL", "maxTTL must be positive"}},
		{"L1 maxTTL not a duration", fleet("  tiers: {l1: {maxTTL: ten seconds}}"), []string{"spec.tiers.l1.maxTTL: Invalid value: \"ten seconds\"", "should match"}},
		{"L1 too small", fleet("  tiers: {l1: {maxMemory: 512Ki}}"), []string{"spec.tiers.l1.maxMemory", "at least 1Mi"}},
		{"L2 defaultTTL zero", fleet("  tiers: {l2: {defaultTTL: 0s}}"), []string{"spec.tiers.l2.defaultTTL", "defaultTTL must be positive"}},
		{"minUsableTTL above defaultTTL", fleet("  tiers: {l2: {defaultTTL: 1h, minUsableTTL: 2h}}"), []string{"spec.tiers.l2.minUsableTTL", "shorter than defaultTTL"}},
		{"value size over Valkey's limit", fleet("  tiers: {l2: {maxValueSize: 1Gi}}"), []string{"spec.tiers.l2.maxValueSize", "between 1 byte and 512Mi"}},
		{"value size zero", fleet("  tiers: {l2: {maxValueSize: \"0\"}}"), []string{"spec.tiers.l2.maxValueSize", "between 1 byte and 512Mi"}},
		{"bad channel", fleet("  invalidation: {channel: \"bad channel!\"}"), []string{"spec.invalidation.channel: Invalid value: \"bad channel!\""}},
		{"signing secret without key", fleet("  invalidation: {signingSecretRef: {name: s}}"), []string{"spec.invalidation.signingSecretRef.key: Required value"}},
		{"agent port zero", fleet("  agent: {port: 0}"), []string{"spec.agent.port: Invalid value: 0"}},
		{"agent ports clash", fleet("  agent: {port: 8080, httpPort: 8080}"), []string{"spec.agent.httpPort", "port and httpPort must differ"}},
		{"password without auth", fleet("  auth: {enabled: false, passwordSecretRef: {name: s, key: k}}"), []string{"spec.auth.passwordSecretRef", "auth is disabled"}},
		{"bad scrape interval", fleet("  monitoring: {serviceMonitor: {interval: often}}"), []string{"spec.monitoring.serviceMonitor.interval: Invalid value: \"often\""}},
		{"name too long", fmt.Sprintf(fleetHead, strings.Repeat("a", 41)) + "spec: {}\n", []string{"metadata.name", "at most 40 characters"}},
		{"name not a DNS label", fmt.Sprintf(fleetHead, "a.b") + "spec: {}\n", []string{"metadata.name", "must be a DNS label"}},
	}
	runInvalid(t, cases)
}

func policy(spec string) string {
	return "apiVersion: cache.cachefleet.io/v1alpha1\nkind: CachePolicy\nmetadata: {name: p, namespace: default}\nspec:\n" +
		"  fleetRef: {name: f}\n" + spec
}

func TestCachePolicyValidation(t *testing.T) {
	cases := []invalidCase{
		{"empty prefix", policy("  keyPrefix: \"\""), []string{"spec.keyPrefix: Invalid value: \"\"", "at least 1 chars long"}},
		{"missing prefix", policy("  ttl: 1m"), []string{"spec.keyPrefix: Required value"}},
		{"missing fleet", "apiVersion: cache.cachefleet.io/v1alpha1\nkind: CachePolicy\nmetadata: {name: p, namespace: default}\nspec: {keyPrefix: a}\n", []string{"spec.fleetRef: Required value"}},
		{"zero ttl", policy("  keyPrefix: a\n  ttl: 0s"), []string{"spec.ttl", "ttl must be positive"}},
		{"ttl not a duration", policy("  keyPrefix: a\n  ttl: soon"), []string{"spec.ttl: Invalid value: \"soon\""}},
		{"jitter over 50", policy("  keyPrefix: a\n  ttlJitterPercent: 51"), []string{"spec.ttlJitterPercent: Invalid value: 51", "less than or equal to 50"}},
		{"negative jitter", policy("  keyPrefix: a\n  ttlJitterPercent: -1"), []string{"spec.ttlJitterPercent: Invalid value: -1"}},
		{"unknown L1 mode", policy("  keyPrefix: a\n  l1: {mode: lazy}"), []string{"spec.l1.mode: Unsupported value: \"lazy\""}},
		{"L1 ttl with L1 off", policy("  keyPrefix: a\n  l1: {enabled: false, ttl: 10s}"), []string{"spec.l1.ttl", "l1 is disabled"}},
		{"value size over the limit", policy("  keyPrefix: a\n  maxValueSize: 1Gi"), []string{"spec.maxValueSize", "between 1 byte and 512Mi"}},
		{"negative cache outlives the value", policy("  keyPrefix: a\n  ttl: 1m\n  negativeCacheTTL: 2m"), []string{"spec.negativeCacheTTL", "must not exceed ttl"}},
		{"negative cache without leases or origin", policy("  keyPrefix: a\n  negativeCacheTTL: 10s"), []string{"spec.negativeCacheTTL", "needs an origin or stampedeProtection.enabled"}},
		{"stale-while-revalidate without origin", policy("  keyPrefix: a\n  staleWhileRevalidate: 10s"), []string{"spec.staleWhileRevalidate", "needs an origin"}},
		{"stale-if-error without origin", policy("  keyPrefix: a\n  staleIfError: 10s"), []string{"spec.staleIfError", "needs an origin"}},
		{"stale-while-revalidate too long", policy("  keyPrefix: a\n  origin: {url: \"http://o/{key}\"}\n  staleWhileRevalidate: 25h"), []string{"spec.staleWhileRevalidate", "between 0s (excluded) and 24h"}},
		{"stale-if-error zero", policy("  keyPrefix: a\n  origin: {url: \"http://o/{key}\"}\n  staleIfError: 0s"), []string{"spec.staleIfError", "between 0s (excluded) and 168h"}},
		{"origin without {key}", policy("  keyPrefix: a\n  origin: {url: \"http://o/items\"}"), []string{"spec.origin.url", "must contain {key}"}},
		{"origin not http", policy("  keyPrefix: a\n  origin: {url: \"ftp://o/{key}\"}"), []string{"spec.origin.url", "must start with http:// or https://"}},
		{"origin without url", policy("  keyPrefix: a\n  origin: {timeout: 1s}"), []string{"spec.origin.url: Required value"}},
		{"origin timeout too long", policy("  keyPrefix: a\n  origin: {url: \"http://o/{key}\", timeout: 2m}"), []string{"spec.origin.timeout", "between 10ms and 60s"}},
		{"origin status not 2xx", policy("  keyPrefix: a\n  origin: {url: \"http://o/{key}\", allowedStatusCodes: [200, 404]}"), []string{"spec.origin.allowedStatusCodes[1]: Invalid value: 404"}},
		{"origin headers Secret without name", policy("  keyPrefix: a\n  origin: {url: \"http://o/{key}\", headersFrom: {}}"), []string{"spec.origin.headersFrom.name: Required value"}},
		{"lease too long", policy("  keyPrefix: a\n  stampedeProtection: {enabled: true, leaseTTL: 10m}"), []string{"spec.stampedeProtection.leaseTTL", "between 100ms and 5m"}},
		{"lease too short", policy("  keyPrefix: a\n  stampedeProtection: {leaseTTL: 10ms}"), []string{"spec.stampedeProtection.leaseTTL", "between 100ms and 5m"}},
		{"unknown compression", policy("  keyPrefix: a\n  compression: {algorithm: gzip}"), []string{"spec.compression.algorithm: Unsupported value: \"gzip\""}},
	}
	runInvalid(t, cases)
}

func runInvalid(t *testing.T, cases []invalidCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obj := mustObject(t, tc.yaml)
			err := env.Client.Create(context.Background(), obj)
			if err == nil {
				_ = env.Client.Delete(context.Background(), obj)
				t.Fatalf("the API server accepted an invalid object:\n%s", tc.yaml)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}

func mustObject(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
		t.Fatalf("bad test YAML: %v\n%s", err, doc)
	}
	return obj
}

// TestWarmUpWindowZeroIsKept: "0s" turns warm-up off; the default must not replace it.
func TestWarmUpWindowZeroIsKept(t *testing.T) {
	for _, tc := range []struct{ spec, want string }{{"  shards: {warmUpWindow: 0s}", "0s"}, {"  shards: {count: 2}", "10m"}} {
		obj := mustObject(t, fmt.Sprintf(fleetHead, "warm")+"spec:\n"+tc.spec)
		if err := env.Client.Create(context.Background(), obj); err != nil {
			t.Fatal(err)
		}
		got, _, _ := unstructured.NestedString(obj.Object, "spec", "shards", "warmUpWindow")
		_ = env.Client.Delete(context.Background(), obj)
		if got != tc.want {
			t.Fatalf("%s: stored warmUpWindow = %q, want %q", tc.spec, got, tc.want)
		}
	}
}

// TestOriginPolicyIsDefaulted: an origin needs only its URL; the API server fills in the rest.
func TestOriginPolicyIsDefaulted(t *testing.T) {
	obj := mustObject(t, policy("  keyPrefix: \"item:\"\n  negativeCacheTTL: 30s\n  staleIfError: 1h\n"+
		"  origin: {url: \"http://catalog.shop.svc:8080/items/{key}\", headersFrom: {name: catalog-auth}}"))
	if err := env.Client.Create(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
	defer env.Client.Delete(context.Background(), obj)
	timeout, _, _ := unstructured.NestedString(obj.Object, "spec", "origin", "timeout")
	codes, _, _ := unstructured.NestedSlice(obj.Object, "spec", "origin", "allowedStatusCodes")
	if timeout != "2s" || fmt.Sprint(codes) != "[200]" {
		t.Errorf("stored origin timeout %q, allowedStatusCodes %v; want 2s and [200]", timeout, codes)
	}
}
