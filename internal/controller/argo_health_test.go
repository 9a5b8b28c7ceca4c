package controller

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	lua "github.com/yuin/gopher-lua"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
	"github.com/cachefleet/cachefleet/internal/testenv"
)

// The Argo CD health checks in config/argocd/resource_customizations, in Argo's layout (each
// kind's health.lua, health_test.yaml and testdata/), run here with a Lua interpreter against
// objects whose status the controller's own computeStatus wrote. The testdata files are
// rewritten from it with -update, so Argo's own test runner sees the same objects.

const argoDir = "config/argocd/resource_customizations/cache.cachefleet.io"

type argoCase struct {
	file   string // testdata/<file>.yaml
	obj    runtime.Object
	status string // Argo CD health
	kstat  status.Status
}

func fleetCases() []argoCase {
	fleet := func(gen int64, prev cachev1alpha1.CacheFleetStatus, change func(*observation)) runtime.Object {
		obs := healthy()
		change(&obs)
		f := &cachev1alpha1.CacheFleet{TypeMeta: metav1.TypeMeta{APIVersion: "cache.cachefleet.io/v1alpha1", Kind: "CacheFleet"},
			ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: "shop", Generation: gen}}
		f.Status = computeStatus(prev, gen, obs)
		for i := range f.Status.Conditions { // stable files: the times are not what is tested
			f.Status.Conditions[i].LastTransitionTime = metav1.Unix(1_700_000_000, 0)
		}
		return f
	}
	return []argoCase{
		{"ready", fleet(1, cachev1alpha1.CacheFleetStatus{}, func(*observation) {}), "Healthy", status.CurrentStatus},
		{"provisioning", fleet(1, cachev1alpha1.CacheFleetStatus{}, func(o *observation) { o.readyAgents = 1 }), "Progressing", status.InProgressStatus},
		{"degraded", fleet(1, readyStatus(), func(o *observation) { o.shards[0].primaryReady = false }), "Degraded", status.InProgressStatus},
		{"draining", fleet(1, cachev1alpha1.CacheFleetStatus{}, func(o *observation) { o.draining = 1 }), "Progressing", status.InProgressStatus},
		{"reconcile-error", fleet(2, readyStatus(), func(o *observation) { o.firstErr = errors.New("apply StatefulSet: conflict") }), "Progressing", status.InProgressStatus},
		{"invalid-spec", fleet(2, readyStatus(), func(o *observation) {
			o.invalidSpec = &specError{"spec.shards.maxMemory", "spec.shards.maxMemory (1Gi) must be below resources.limits.memory (512Mi)"}
		}), "Degraded", status.FailedStatus},
	}
}

func policyCases() []argoCase {
	policy := func(in policyInputs) runtime.Object {
		p := &cachev1alpha1.CachePolicy{TypeMeta: metav1.TypeMeta{APIVersion: "cache.cachefleet.io/v1alpha1", Kind: "CachePolicy"},
			ObjectMeta: metav1.ObjectMeta{Name: "sessions", Namespace: "shop", Generation: 1}}
		p.Status = computePolicyStatus(cachev1alpha1.CachePolicyStatus{}, 1, in)
		for i := range p.Status.Conditions {
			p.Status.Conditions[i].LastTransitionTime = metav1.Unix(1_700_000_000, 0)
		}
		return p
	}
	return []argoCase{
		{"accepted", policy(policyInputs{fleetFound: true, inRing: true, ringEpoch: 3}), "Healthy", status.CurrentStatus},
		{"pending", policy(policyInputs{fleetFound: true, ringEpoch: 3}), "Progressing", status.InProgressStatus},
		{"conflicted", policy(policyInputs{fleetFound: true, conflictsWith: "sessions-old"}), "Degraded", status.FailedStatus},
		{"fleet-not-found", policy(policyInputs{}), "Degraded", status.FailedStatus},
	}
}

// argoTests is health_test.yaml in Argo CD's format.
type argoTests struct {
	Tests []argoTest `json:"tests"`
}

type argoTest struct {
	HealthStatus struct {
		Status  string `json:"status"`
		Message string `json:"message"`
	} `json:"healthStatus"`
	InputPath string `json:"inputPath"`
}

func TestArgoCDHealthChecks(t *testing.T) {
	for kind, cases := range map[string][]argoCase{"CacheFleet": fleetCases(), "CachePolicy": policyCases()} {
		t.Run(kind, func(t *testing.T) {
			dir := filepath.Join(testenv.RepoRoot(), argoDir, kind)
			script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
			if err != nil {
				t.Fatal(err)
			}
			var want argoTests
			for _, tc := range cases {
				if got := kstatusOf(t, tc.obj); got != tc.kstat {
					t.Errorf("%s: kstatus %s, want %s", tc.file, got, tc.kstat)
				}
				u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(tc.obj)
				if err != nil {
					t.Fatal(err)
				}
				st, msg := runHealth(t, script, u)
				if st != tc.status {
					t.Errorf("%s: Argo CD health %s (%q), want %s", tc.file, st, msg, tc.status)
				}
				path := filepath.Join("testdata", tc.file+".yaml")
				if *update {
					out, err := yaml.Marshal(u)
					if err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(filepath.Join(dir, path), out, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				var e argoTest
				e.HealthStatus.Status, e.HealthStatus.Message, e.InputPath = st, msg, path
				want.Tests = append(want.Tests, e)
			}
			testsFile := filepath.Join(dir, "health_test.yaml")
			if *update {
				out, err := yaml.Marshal(want)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(testsFile, out, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			// What Argo CD's runner checks: each file's object gives the recorded health.
			raw, err := os.ReadFile(testsFile)
			if err != nil {
				t.Fatalf("%v (go test ./internal/controller/ -run ArgoCD -update writes it)", err)
			}
			var recorded argoTests
			if err := yaml.Unmarshal(raw, &recorded); err != nil {
				t.Fatal(err)
			}
			if len(recorded.Tests) != len(cases) {
				t.Errorf("health_test.yaml has %d cases, the controller %d (run with -update)", len(recorded.Tests), len(cases))
			}
			for _, rt := range recorded.Tests {
				raw, err := os.ReadFile(filepath.Join(dir, rt.InputPath))
				if err != nil {
					t.Fatal(err)
				}
				var u map[string]any
				if err := yaml.Unmarshal(raw, &u); err != nil {
					t.Fatal(err)
				}
				if st, msg := runHealth(t, script, u); st != rt.HealthStatus.Status || msg != rt.HealthStatus.Message {
					t.Errorf("%s: %s %q, health_test.yaml says %s %q (stale: run with -update)", rt.InputPath, st, msg, rt.HealthStatus.Status, rt.HealthStatus.Message)
				}
			}
		})
	}
}

// runHealth runs an Argo CD health script as Argo does: the object as the global obj, the
// returned table's status and message.
func runHealth(t *testing.T, script []byte, obj map[string]any) (string, string) {
	t.Helper()
	L := lua.NewState()
	defer L.Close()
	L.SetGlobal("obj", toLua(L, obj))
	fn, err := L.LoadString(string(script))
	if err != nil {
		t.Fatal(err)
	}
	L.Push(fn)
	if err := L.PCall(0, 1, nil); err != nil {
		t.Fatal(err)
	}
	ret, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		t.Fatalf("health.lua returned %v, not a table", L.Get(-1))
	}
	return lua.LVAsString(ret.RawGetString("status")), lua.LVAsString(ret.RawGetString("message"))
}

// toLua converts decoded JSON/YAML into Lua values, as Argo CD hands objects to scripts.
func toLua(L *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(x)
	case string:
		return lua.LString(x)
	case int64:
		return lua.LNumber(x)
	case float64:
		return lua.LNumber(x)
	case int:
		return lua.LNumber(x)
	case map[string]any:
		tb := L.NewTable()
		for k, e := range x {
			tb.RawSetString(k, toLua(L, e))
		}
		return tb
	case []any:
		tb := L.NewTable()
		for _, e := range x {
			tb.Append(toLua(L, e))
		}
		return tb
	}
	panic(fmt.Sprintf("toLua: %T", v))
}
