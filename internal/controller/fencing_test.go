package controller

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/events"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
)

func TestDecideFence(t *testing.T) {
	const ask = fenceSet(99)
	for _, tc := range []struct {
		name string
		in   fenceInput
		want fenceSet
	}{
		{"first look: ask the primary", fenceInput{on: true, couldTakeOver: true, good: -1}, ask},
		{"first look, a good replica: fenced", fenceInput{on: true, couldTakeOver: true, good: 1}, fenceOn},
		{"first look, none heard: lifted", fenceInput{on: true, couldTakeOver: true, good: 0}, fenceLifted},
		{"fenced, nobody refused: nothing to ask", fenceInput{on: true, couldTakeOver: true, current: fenceOn, good: -1}, fenceOn},
		{"fenced, an agent is refused: ask", fenceInput{on: true, couldTakeOver: true, current: fenceOn, refused: true, good: -1}, ask},
		{"fenced, refused, none heard: lifted", fenceInput{on: true, couldTakeOver: true, current: fenceOn, refused: true, good: 0}, fenceLifted},
		{"fenced, refused, yet a good replica (the report is late): fenced", fenceInput{on: true, couldTakeOver: true, current: fenceOn, refused: true, good: 1}, fenceOn},
		{"lifted: ask whether a replica is back", fenceInput{on: true, couldTakeOver: true, current: fenceLifted, good: -1}, ask},
		{"lifted, a replica is back: fenced", fenceInput{on: true, couldTakeOver: true, current: fenceLifted, good: 1}, fenceOn},
		{"no replica could take over (restarting, deleted): lifted at once", fenceInput{on: true, current: fenceOn, good: -1}, fenceLifted},
		{"fencing off: nothing set", fenceInput{couldTakeOver: true, good: -1}, fenceUnknown},
		{"fencing turned off: lifted", fenceInput{couldTakeOver: true, current: fenceOn, good: -1}, fenceLifted},
	} {
		got, asked := decideFence(tc.in)
		if asked {
			got = ask
		}
		if got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestRefusedWrites(t *testing.T) {
	now := time.Unix(1000, 0)
	if refusedWrites([]reachReport{{node: "n1", renewed: now}}, now) {
		t.Error("no refusal reported, one seen")
	}
	if !refusedWrites([]reachReport{{node: "n1", renewed: now}, {node: "n1", renewed: now, refusingSince: now}}, now) {
		t.Error("a fresh refusal not seen")
	}
	if refusedWrites([]reachReport{{node: "n1", renewed: now.Add(-time.Minute), refusingSince: now}}, now) {
		t.Error("a stale refusal seen")
	}
}

// fenceAdmin records what the controller asks of the shard pods; addresses in down answer nothing.
type fenceAdmin struct {
	shardAdmin
	roles      map[string]string // addr -> role
	lags       map[string][]int  // addr -> its online replicas' lags
	down       map[string]bool
	fences     []string // "addr=on|off"
	replicaOfs []string // "addr->host"
	failSet    bool
}

func (a *fenceAdmin) Replication(_ context.Context, addr, _ string) (replication, error) {
	if a.down[addr] {
		return replication{}, errors.New("dial tcp: i/o timeout")
	}
	return replication{role: a.roles[addr], offset: 10, lags: a.lags[addr]}, nil
}

func (a *fenceAdmin) SetFence(_ context.Context, addr, _ string, on bool) error {
	if a.failSet || a.down[addr] {
		return errors.New("dial tcp: i/o timeout")
	}
	a.fences = append(a.fences, map[bool]string{true: addr + "=on", false: addr + "=off"}[on])
	return nil
}

func (a *fenceAdmin) ReplicaOf(_ context.Context, addr, _, host string, _ int) error {
	a.replicaOfs = append(a.replicaOfs, addr+"->"+host)
	a.roles[addr] = "slave"
	return nil
}

func fencedFleet() *cachev1alpha1.CacheFleet {
	f := &cachev1alpha1.CacheFleet{}
	f.Name, f.Namespace = "web", "default"
	f.Spec.Shards.Replicas = 1
	f.Spec.Shards.Fencing.Enabled = true
	return f
}

// TestKeepFenceFollowsTheReplicas: the fence is set once per primary run, lifted while no
// replica could take over (restarting, deleted) or while the primary counts none (agents report
// it refusing writes), put back once it counts one, and tried again after a back-off when the
// primary cannot be told.
func TestKeepFenceFollowsTheReplicas(t *testing.T) {
	now := time.Unix(1000, 0)
	admin := &fenceAdmin{roles: map[string]string{"a": "master", "b": "slave"}, lags: map[string][]int{"a": {0}}, down: map[string]bool{}}
	rec := events.NewFakeRecorder(10)
	r := &CacheFleetReconciler{Admin: admin, Recorder: rec, Now: func() time.Time { return now }}
	s := &fleetScope{fleet: fencedFleet()}
	pods := func(replica shardPod) []shardPod {
		replica.name, replica.addr = "s-1", "b"
		return []shardPod{{name: "s-0", addr: "a", ready: true, uid: "u0"}, replica}
	}
	keep := func(p []shardPod, refused bool) {
		t.Helper()
		if err := r.keepFence(context.Background(), s, "default/web/shard-0", "shard-0", "s-0", p, refused); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(step string, want ...string) {
		t.Helper()
		if strings.Join(admin.fences, " ") != strings.Join(want, " ") {
			t.Fatalf("%s: fences set %q, want %q", step, admin.fences, want)
		}
		admin.fences = nil
	}
	keep(pods(shardPod{ready: true}), false)
	expect("first look", "a=on")
	keep(pods(shardPod{ready: true}), false)
	expect("nothing changed")
	keep(pods(shardPod{ready: true, gone: true}), false)
	expect("replica deleted", "a=off")
	if e := <-rec.Events; !strings.Contains(e, "FenceLifted") {
		t.Errorf("event %q", e)
	}
	keep(pods(shardPod{ready: true}), false)
	expect("replica back", "a=on")
	admin.lags["a"] = nil // the replica's node is cut off: the primary hears it no more
	keep(pods(shardPod{ready: true}), false)
	expect("nobody refused yet")
	keep(pods(shardPod{ready: true}), true)
	expect("the primary refuses writes and counts no replica", "a=off")
	keep(pods(shardPod{ready: true}), false)
	expect("lifted while the replica stays unheard (Kubernetes still calls it ready)")
	if s.requeue <= 0 || s.requeue > 2*time.Second {
		t.Errorf("requeue %s while lifted with a replica that may come back", s.requeue)
	}
	admin.lags["a"] = []int{1}
	keep(pods(shardPod{ready: true}), false)
	expect("the replica is heard again", "a=on")

	// A primary that cannot be told is tried again after a back-off, not on every look.
	admin.failSet = true
	keep(pods(shardPod{}), false)
	admin.failSet = false
	keep(pods(shardPod{}), false)
	expect("within the back-off")
	now = now.Add(time.Second)
	keep(pods(shardPod{}), false)
	expect("after the back-off", "a=off")
}

// TestAFormerPrimaryRejoinsOnceItAnswers: a primary cut off when it was replaced keeps out of
// the fence while it does not answer, and is told to follow the new primary once it does; a
// stray primary found while the primary refuses writes is told the same.
func TestAFormerPrimaryRejoinsOnceItAnswers(t *testing.T) {
	now := time.Unix(1000, 0)
	admin := &fenceAdmin{roles: map[string]string{"a": "master", "b": "master"}, down: map[string]bool{"a": true}}
	r := &CacheFleetReconciler{Admin: admin, Recorder: events.NewFakeRecorder(10), Now: func() time.Time { return now }}
	s := &fleetScope{fleet: fencedFleet()}
	const key = "default/web/shard-0"
	pods := func() []shardPod {
		return []shardPod{{name: "web-shard-0-0", addr: "a", ready: true}, {name: "web-shard-0-1", addr: "b", ready: true, uid: "u1"}}
	}
	r.strays.Store(key, "web-shard-0-0")
	p := pods()
	if err := r.rejoinStray(context.Background(), s, key, "shard-0", "web-shard-0-1", p); err != nil {
		t.Fatal(err)
	}
	if len(admin.replicaOfs) != 0 || p[0].ready || s.requeue != time.Second {
		t.Fatalf("cut off: replicaof %q, ready %v, requeue %s", admin.replicaOfs, p[0].ready, s.requeue)
	}
	if couldTakeOver("web-shard-0-1", p) {
		t.Error("a former primary that does not answer counts as a pod that could take over")
	}
	delete(admin.down, "a")
	p = pods()
	if err := r.rejoinStray(context.Background(), s, key, "shard-0", "web-shard-0-1", p); err != nil {
		t.Fatal(err)
	}
	if len(admin.replicaOfs) != 1 || !strings.HasPrefix(admin.replicaOfs[0], "a->web-shard-0-1.") {
		t.Fatalf("healed: replicaof %q", admin.replicaOfs)
	}
	if _, ok := r.strays.Load(key); ok {
		t.Error("the stray is still remembered after it rejoined")
	}

	// Found by the fence: a pod answering as a primary beside the shard's is remembered, then told.
	admin.replicaOfs, admin.roles["a"] = nil, "master"
	if err := r.keepFence(context.Background(), s, key, "shard-0", "web-shard-0-1", pods(), true); err != nil {
		t.Fatal(err)
	}
	if err := r.rejoinStray(context.Background(), s, key, "shard-0", "web-shard-0-1", pods()); err != nil {
		t.Fatal(err)
	}
	if len(admin.replicaOfs) != 1 {
		t.Fatalf("a stray primary found by the fence: replicaof %q", admin.replicaOfs)
	}

	// A primary that restarted empty and defers to the peer holding the data is not followed.
	admin.replicaOfs, admin.roles["a"], admin.roles["b"] = nil, "master", "slave"
	r.strays.Store(key, "web-shard-0-0")
	if err := r.rejoinStray(context.Background(), s, key, "shard-0", "web-shard-0-1", pods()); err != nil {
		t.Fatal(err)
	}
	if len(admin.replicaOfs) != 0 {
		t.Errorf("the peer holding the data was told to follow a primary that is not one: %q", admin.replicaOfs)
	}
}

// TestSetFenceRefusesAndAllowsWrites: on a real Valkey, the fence refuses writes while no
// replica is heard, as the clients are told (-NOREPLICAS), and lifting it lets them through.
func TestSetFenceRefusesAndAllowsWrites(t *testing.T) {
	primary := tu.StartRedis(t, "pw")
	ctx := context.Background()
	if err := (valkeyAdmin{}).SetFence(ctx, primary.Addr(), "pw", true); err != nil {
		t.Fatal(err)
	}
	if got, _ := primary.Do("SET", "k", "v"); got != "ERR:NOREPLICAS Not enough good replicas to write." {
		t.Fatalf("fenced without replicas, SET answered %q", got)
	}
	if err := (valkeyAdmin{}).SetFence(ctx, primary.Addr(), "pw", false); err != nil {
		t.Fatal(err)
	}
	if got, _ := primary.Do("SET", "k", "v"); got != "OK" {
		t.Fatalf("unfenced, SET answered %q", got)
	}
}

func TestGoodReplicasReadsThePrimarysReplicaLines(t *testing.T) {
	info := "# Replication\r\nrole:master\r\nconnected_slaves:3\r\nmin_slaves_good_slaves:1\r\n" +
		"slave0:ip=10.244.2.5,port=6379,state=online,offset=1234,lag=0\r\n" +
		"slave1:ip=10.244.3.5,port=6379,state=online,offset=1200,lag=7\r\n" +
		"slave2:ip=10.244.4.5,port=6379,state=wait_bgsave,offset=0,lag=0\r\n" +
		"master_failover_state:no-failover\r\nmaster_repl_offset:1234\r\n"
	r := parseReplication(info)
	if r.role != "master" || r.offset != 1234 || r.goodReplicas(2) != 1 || r.goodReplicas(10) != 2 {
		t.Fatalf("%+v: good within 2 s %d, within 10 s %d", r, r.goodReplicas(2), r.goodReplicas(10))
	}
}
