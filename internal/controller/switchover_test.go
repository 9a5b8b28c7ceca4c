package controller

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
)

// linkedShard is a real primary with one replica that has synced from it.
func linkedShard(t *testing.T, password string) (primary, replica *tu.Redis) {
	t.Helper()
	primary = tu.StartRedis(t, password)
	replica = tu.StartReplica(t, primary)
	waitFor(t, "the replica is linked, and online for its primary", func() bool {
		info, _ := replica.Do("INFO", "replication")
		pinfo, _ := primary.Do("INFO", "replication")
		return strings.Contains(info, "master_link_status:up") && strings.Contains(pinfo, "state=online")
	})
	return primary, replica
}

// preStop is the shard pods' preStop hook, run against primary.
func preStop(t *testing.T, password string, primary *tu.Redis) *exec.Cmd {
	t.Helper()
	_, cli := shardBinaries(t)
	script := strings.NewReplacer("valkey-cli", cli, "-p 6379", "-p "+strconv.Itoa(primary.Port)).Replace(shardPreStopScript)
	cmd := exec.Command("sh", "-c", script)
	cmd.Env = append(os.Environ(), "REDISCLI_AUTH="+password)
	return cmd
}

func switchTo(primary, replica *tu.Redis, password string, timeout time.Duration) error {
	return valkeyAdmin{}.Switchover(context.Background(), primary.Addr(), password, "127.0.0.1", strconv.Itoa(replica.Port), timeout)
}

// TestControllerSwitchoverLosesNoWrite: the controller's own switchover of a terminating
// primary (FAILOVER TO its replica) returns once the primary is a replica, and the new primary
// holds every write the old one acknowledged, under a writer that never pauses.
func TestControllerSwitchoverLosesNoWrite(t *testing.T) {
	const pw = "pw"
	primary, replica := linkedShard(t, pw)
	w := startAckedWriter(primary)
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	if err := switchTo(primary, replica, pw, switchoverTimeout); err != nil {
		t.Fatal(err)
	}
	w.stopAndCheck(t, primary, replica, time.Since(start))
}

// TestPreStopWaitsForTheControllersSwitchover: when the kubelet runs the preStop while the
// controller's FAILOVER is still waiting for the replica, the hook's own FAILOVER is refused
// ("already in progress"); it must still wait for the handover, or the container is stopped
// mid-switchover.
func TestPreStopWaitsForTheControllersSwitchover(t *testing.T) {
	const pw = "pw"
	primary, replica := linkedShard(t, pw)
	replica.Freeze() // the handover cannot complete until the replica runs again
	switched := make(chan error, 1)
	go func() { switched <- switchTo(primary, replica, pw, 10*time.Second) }()
	waitFor(t, "the controller's FAILOVER is under way", func() bool {
		info, _ := primary.Do("INFO", "replication")
		return strings.Contains(info, "master_failover_state:") && !strings.Contains(info, "master_failover_state:no-failover")
	})

	hook := preStop(t, pw, primary)
	out := &lockedBuffer{}
	hook.Stdout, hook.Stderr = out, out
	if err := hook.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- hook.Wait() }()
	select {
	case err := <-exited:
		t.Fatalf("preStop returned (%v) while the switchover was still running:\n%s", err, out)
	case <-time.After(700 * time.Millisecond):
	}

	replica.Thaw()
	if err := <-switched; err != nil {
		t.Fatalf("switchover: %v", err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("preStop: %v\n%s", err, out)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("preStop still running 5 s after the handover")
	}
	if info, _ := primary.Do("INFO", "replication"); !strings.Contains(info, "role:slave") {
		t.Fatalf("the old primary is still a primary:\n%s", info)
	}
}

// TestSwitchoverThatCannotCompleteLeavesThePrimary: a replica that cannot catch up within the
// timeout makes the switchover fail with an error, and the primary keeps taking writes.
func TestSwitchoverThatCannotCompleteLeavesThePrimary(t *testing.T) {
	const pw = "pw"
	primary, replica := linkedShard(t, pw)
	replica.Freeze()
	defer replica.Thaw()
	// A write the stalled replica cannot acknowledge: the handover waits for it, then gives up.
	if _, err := primary.Do("SET", "before", "v"); err != nil {
		t.Fatal(err)
	}
	err := switchTo(primary, replica, pw, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "kept its role") {
		t.Fatalf("switchover to a stalled replica: %v, want an error saying the primary kept its role", err)
	}
	if got, err := primary.Do("SET", "after", "v"); err != nil || got != "OK" {
		t.Fatalf("the primary refuses writes after an abandoned switchover: %q %v", got, err)
	}
}

// TestRestartedSeesAContainerRestartOnlyInTheSamePod: a new restart count in the same pod is a
// restart (the process came back empty); a new pod, or the first look, is not.
func TestRestartedSeesAContainerRestartOnlyInTheSamePod(t *testing.T) {
	r := &CacheFleetReconciler{}
	pods := func(uid string, restarts int32) []shardPod {
		return []shardPod{{name: "s-0", uid: uid, restarts: restarts}, {name: "s-1", uid: "b", restarts: 7}}
	}
	for i, step := range []struct {
		pods []shardPod
		want bool
	}{
		{pods("a", 0), false}, // first look
		{pods("a", 0), false},
		{pods("a", 1), true},
		{pods("a", 1), false},
		{pods("c", 0), false}, // the pod was replaced: it is not ready yet, decided on readiness
		{pods("c", 2), true},
	} {
		if got := r.restarted("ns/f/shard-0", step.pods, "s-0"); got != step.want {
			t.Errorf("step %d: restarted %v, want %v", i, got, step.want)
		}
	}
}

// TestProbeAsksEveryPodAtOnce: roles and offsets come from each pod's own INFO; a pod that does
// not answer is unreachable, and one without an address is not asked.
func TestProbeAsksEveryPodAtOnce(t *testing.T) {
	const pw = "pw"
	primary, replica := linkedShard(t, pw)
	if _, err := primary.Do("SET", "k", "v"); err != nil {
		t.Fatal(err)
	}
	dead := tu.FreePort(t)
	pods := []shardPod{
		{name: "s-0", addr: primary.Addr()},
		{name: "s-1", addr: replica.Addr()},
		{name: "s-2", addr: "127.0.0.1:" + strconv.Itoa(dead)},
		{name: "s-3"},
	}
	(&CacheFleetReconciler{}).probe(context.Background(), pods, pw)
	if p := pods[0]; !p.reachable || p.role != "master" || p.offset == 0 {
		t.Errorf("primary probed as %+v", p)
	}
	if p := pods[1]; !p.reachable || p.role != "slave" {
		t.Errorf("replica probed as %+v", p)
	}
	if pods[2].reachable || pods[3].reachable {
		t.Errorf("a pod that cannot answer is reachable: %+v %+v", pods[2], pods[3])
	}
}
