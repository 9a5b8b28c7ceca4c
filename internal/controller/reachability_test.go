package controller

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
	"github.com/cachefleet/cachefleet/internal/contract"
)

func TestPrimaryLost(t *testing.T) {
	now := time.Unix(1000, 0)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	can := func(node string) reachReport { return reachReport{node: node, renewed: ago(time.Second)} }
	cannot := func(node string, since time.Duration) reachReport {
		return reachReport{node: node, renewed: ago(time.Second), lostSince: ago(since)}
	}
	for _, tc := range []struct {
		name        string
		reports     []reachReport
		probeLost   time.Duration // 0: the controller reaches the primary
		wantLost    bool
		wantLostFor time.Duration
	}{
		{"everyone reaches it", []reachReport{can("n2"), can("n3")}, 0, false, 0},
		{"only the controller cannot: it is the one cut off", []reachReport{can("n2"), can("n3")}, 8 * time.Second, false, 0},
		{"one agent of three cannot: its node is the one cut off", []reachReport{cannot("n2", 8*time.Second), can("n3"), can("n4")}, 8 * time.Second, false, 0},
		{"two of three cannot, and the controller", []reachReport{cannot("n2", 8*time.Second), cannot("n3", 6*time.Second), can("n4")}, 8 * time.Second, true, 6 * time.Second},
		{"the agents cannot, the controller can", []reachReport{cannot("n2", 8*time.Second), cannot("n3", 8*time.Second)}, 0, false, 0},
		{"the verdict holds since the later of the majority and the probe", []reachReport{cannot("n2", 9*time.Second), cannot("n3", 9*time.Second)}, 3 * time.Second, true, 3 * time.Second},
		{"the agent on the primary's node is not asked", []reachReport{cannot("n1", 8*time.Second), can("n2")}, 8 * time.Second, false, 0},
		{"its report does not make a majority either", []reachReport{cannot("n1", 8*time.Second), cannot("n2", 8*time.Second), can("n3")}, 8 * time.Second, false, 0},
		{"stale reports are no evidence", []reachReport{{node: "n2", renewed: ago(40 * time.Second), lostSince: ago(50 * time.Second)}}, 8 * time.Second, false, 0},
		{"a stale report does not count among the voters", []reachReport{cannot("n2", 7*time.Second), {node: "n3", renewed: ago(40 * time.Second)}}, 8 * time.Second, true, 7 * time.Second},
		{"no agent on another node: Kubernetes decides", []reachReport{cannot("n1", 8*time.Second)}, 8 * time.Second, false, 0},
		{"no reports at all", nil, 8 * time.Second, false, 0},
		{"two voters: one is not a majority", []reachReport{cannot("n2", 8*time.Second), can("n3")}, 8 * time.Second, false, 0},
		{"two voters: both are", []reachReport{cannot("n2", 8*time.Second), cannot("n3", 5*time.Second)}, 8 * time.Second, true, 5 * time.Second},
		{"one voter on one other node", []reachReport{cannot("n2", 4*time.Second)}, 8 * time.Second, true, 4 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var probe time.Time
			if tc.probeLost > 0 {
				probe = ago(tc.probeLost)
			}
			lostFor, lost, reason := primaryLost("n1", tc.reports, probe, now)
			if lost != tc.wantLost || lostFor != tc.wantLostFor {
				t.Errorf("lost %v for %s (%q), want %v for %s", lost, lostFor, reason, tc.wantLost, tc.wantLostFor)
			}
			if lost && reason == "" {
				t.Error("a verdict without a reason")
			}
		})
	}
}

func TestReportsForReadsTheAgentLeases(t *testing.T) {
	now := time.Unix(1000, 0)
	lease := func(node, unreachable string, renewed time.Time) coordinationv1.Lease {
		l := coordinationv1.Lease{}
		l.Annotations = map[string]string{contract.AnnotationNode: node, contract.AnnotationUnreachable: unreachable}
		rt := metav1.NewMicroTime(renewed)
		l.Spec.RenewTime = &rt
		return l
	}
	leases := []coordinationv1.Lease{
		lease("n1", "", now),
		lease("n2", contract.FormatShardTimes(map[string]time.Time{"shard-0": now.Add(-3 * time.Second)}), now),
		lease("", "shard-0=1", now),        // an agent from before reports: left out
		lease("n3", "shard-1=999000", now), // another shard
	}
	got := reportsFor(leases, "shard-0")
	if len(got) != 3 || !got[0].lostSince.IsZero() || !got[1].lostSince.Equal(now.Add(-3*time.Second)) || !got[2].lostSince.IsZero() {
		t.Fatalf("reports %+v", got)
	}
	if !lostElsewhere(got, "n1", now) {
		t.Error("n2's fresh report of a loss is not seen")
	}
	if lostElsewhere(got, "n2", now) {
		t.Error("the primary's own node's agent counted")
	}
	if lostElsewhere(got, "n1", now.Add(time.Minute)) {
		t.Error("a stale report counted")
	}
}

// unreachableAdmin answers no probe: every pod is as if on a node cut off.
type unreachableAdmin struct{ shardAdmin }

func (unreachableAdmin) Replication(context.Context, string, string) (replication, error) {
	return replication{}, errors.New("dial tcp: i/o timeout")
}

// TestAnUnreachablePrimaryIsRecordedOncePerLoss: the agents' reports and the controller's failed
// probe make one PrimaryUnreachable event per loss; a report of the primary reached again ends
// the loss, and the next one is recorded again.
func TestAnUnreachablePrimaryIsRecordedOncePerLoss(t *testing.T) {
	now := time.Unix(1000, 0)
	rec := events.NewFakeRecorder(10)
	r := &CacheFleetReconciler{Recorder: rec, Admin: unreachableAdmin{}, Now: func() time.Time { return now }}
	f := &cachev1alpha1.CacheFleet{}
	f.Name, f.Namespace = "web", "default"
	s := &fleetScope{fleet: f}
	pods := []shardPod{{name: "web-shard-0-0", node: "n1", addr: "10.0.0.1:6379"}, {name: "web-shard-0-1", node: "n2", addr: "10.0.0.2:6379"}}
	lostFromN2 := []reachReport{{node: "n2", renewed: now, lostSince: now.Add(-2 * time.Second)}, {node: "n1", renewed: now}}
	var lostFor time.Duration
	var lost bool
	watch := func(reports []reachReport) {
		t.Helper()
		var err error
		if lostFor, lost, err = r.watchReachability(context.Background(), s, "default/web/shard-0", "shard-0", "web-shard-0-0", pods, reports); err != nil {
			t.Fatal(err)
		}
	}
	recorded := func() []string {
		var out []string
		for {
			select {
			case e := <-rec.Events:
				out = append(out, e)
			default:
				return out
			}
		}
	}
	watch(lostFromN2)
	got := recorded()
	if len(got) != 1 || !strings.Contains(got[0], "PrimaryUnreachable") || !strings.Contains(got[0], "1 of 1 agents on other nodes") {
		t.Fatalf("events %q", got)
	}
	if s.requeue <= 0 || s.requeue > time.Second {
		t.Errorf("requeue %s while agents report the primary lost", s.requeue)
	}
	now = now.Add(time.Second)
	watch(lostFromN2)
	if got := recorded(); len(got) != 0 {
		t.Errorf("the same loss recorded again: %q", got)
	}
	if !lost || lostFor != time.Second {
		t.Errorf("lost %v for %s, want lost for 1s (since the controller's first failed probe)", lost, lostFor)
	}
	watch([]reachReport{{node: "n2", renewed: now}}) // reached again
	now = now.Add(time.Second)
	watch([]reachReport{{node: "n2", renewed: now, lostSince: now}})
	if got := recorded(); len(got) != 1 {
		t.Errorf("a second loss recorded as %q", got)
	}
	// The agent on the primary's own node alone is no evidence: nothing is probed.
	r.unreached.Delete("default/web/shard-0")
	r.told.Delete("default/web/shard-0")
	watch([]reachReport{{node: "n1", renewed: now, lostSince: now.Add(-5 * time.Second)}})
	if got := recorded(); len(got) != 0 {
		t.Errorf("the primary's own node's agent made %q", got)
	}
}

// TestALostPrimaryIsFailedOverAfterFailoverAfter: a primary Kubernetes still calls ready but the
// fleet has lost is failed over once the verdict has held for failoverAfter, to a replica the
// controller reaches; not before, and not to a replica it cannot reach (on the cut-off node).
func TestALostPrimaryIsFailedOverAfterFailoverAfter(t *testing.T) {
	const after = 5 * time.Second
	pods := func() []shardPod {
		return []shardPod{
			{name: "s-0", ordinal: 0, node: "n1", addr: "a", ready: true},                                             // lost: not reachable
			{name: "s-1", ordinal: 1, node: "n1", addr: "b", ready: true},                                             // a replica on the same cut-off node
			{name: "s-2", ordinal: 2, node: "n2", addr: "c", ready: true, reachable: true, role: "slave", offset: 90}, // reachable
		}
	}
	for _, tc := range []struct {
		lostFor time.Duration
		promote string
	}{{2 * time.Second, ""}, {after, "s-2"}} {
		p := pods()
		markLost(p, "s-0")
		d := decideFailover("s-0", p, tc.lostFor, after)
		if d.promote != tc.promote || (tc.promote == "" && d.wait == 0) {
			t.Errorf("lost for %s: promote %q wait %s (%s), want %q", tc.lostFor, d.promote, d.wait, d.reason, tc.promote)
		}
	}
}
