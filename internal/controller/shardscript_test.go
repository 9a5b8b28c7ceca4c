package controller

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
)

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// shardBinaries are the tests' shard server and its cli: valkey-cli built next to valkey-server,
// else redis-cli (FAILOVER and the rest of what the scripts use exist in both).
func shardBinaries(t *testing.T) (server, cli string) {
	t.Helper()
	server = tu.ServerBinary()
	path, err := exec.LookPath(server)
	if err != nil {
		t.Fatalf("%s is required (hack/valkey-bins.sh): %v", server, err)
	}
	cli = filepath.Join(filepath.Dir(path), "valkey-cli")
	if _, err := os.Stat(cli); err != nil {
		cli = "redis-cli"
	}
	return server, cli
}

// startedShard is a shard server started by the start script.
type startedShard struct {
	*tu.Redis
	cmd   *exec.Cmd
	out   *lockedBuffer
	ready func() bool // the pod's readiness probe, run against this server
}

// runStartScript runs the shard start script with sh, as the pod does, against the tests' shard
// server (valkey-server built from source under make test) in a temporary directory, as pod
// web-shard-0-0, the shard's designated primary. peer, when set, is the shard's other pod
// (web-shard-0-1), reached on loopback instead of through cluster DNS.
func runStartScript(t *testing.T, password string, peer *tu.Redis) *startedShard {
	t.Helper()
	return runStartScriptAs(t, "web-shard-0-0", password, peer)
}

// runStartScriptAs is runStartScript as pod (web-shard-0-1 starts as a replica of peer).
func runStartScriptAs(t *testing.T, pod, password string, peer *tu.Redis) *startedShard {
	t.Helper()
	server, cli := shardBinaries(t)
	dir := t.TempDir()
	conf := strings.Replace(valkeyConfig(defaultedFleet()), "dir /data", "dir "+dir, 1)
	if err := os.WriteFile(filepath.Join(dir, "valkey.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &tu.Redis{Port: tu.FreePort(t), Password: password}
	peers, peerPort := "web-shard-0-0", "0"
	if peer != nil {
		peers, peerPort = "web-shard-0-0 web-shard-0-1", strconv.Itoa(peer.Port)
	}
	script := strings.NewReplacer(
		"/etc/valkey/valkey.conf", filepath.Join(dir, "valkey.conf"),
		"/run/valkey/valkey.conf", filepath.Join(dir, "runtime.conf"),
		"/run/valkey/deferred", filepath.Join(dir, "deferred"),
		"/run/valkey/synced", filepath.Join(dir, "synced"),
		"exec valkey-server", "exec "+server,
		"valkey-cli", cli,
		`-h "$peer.$SHARD_DOMAIN" -p 6379`, "-h 127.0.0.1 -p "+peerPort,
		"$primary.$SHARD_DOMAIN 6379", "127.0.0.1 "+peerPort,
	).Replace(shardStartScript)
	script = strings.TrimSpace(script) + " --port " + strconv.Itoa(r.Port) + "\n"
	ready := strings.NewReplacer("/run/valkey/deferred", filepath.Join(dir, "deferred"),
		"/run/valkey/synced", filepath.Join(dir, "synced"), "valkey-cli", cli,
		"-p 6379", "-p "+strconv.Itoa(r.Port)).Replace(shardReadinessScript)
	cmd := exec.Command("sh", "-c", script)
	cmd.Env = append(os.Environ(), "VALKEY_PASSWORD="+password, "REDISCLI_AUTH="+password, "POD_NAME="+pod,
		"PRIMARY_POD=web-shard-0-0", "SHARD_PEERS="+peers, "SHARD_DOMAIN=web-shards.default.svc")
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return &startedShard{Redis: r, cmd: cmd, out: out, ready: func() bool {
		c := exec.Command("sh", "-c", ready)
		c.Env = append(os.Environ(), "REDISCLI_AUTH="+password)
		return c.Run() == nil
	}}
}

// TestRestartedPrimaryNeverWipesAWarmReplica: the designated primary starts empty (nothing is
// persisted) while its replica still holds the shard. It must replicate from the replica instead
// of serving as an empty primary the replica would full-sync from; once the controller promotes
// the replica, the restarted pod gets the data back.
func TestRestartedPrimaryNeverWipesAWarmReplica(t *testing.T) {
	const pw = "secret"
	old := tu.StartRedis(t, pw)
	replica := tu.StartReplica(t, old)
	for i := range 100 {
		if _, err := old.Do("SET", "k"+strconv.Itoa(i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the replica holds the shard", func() bool { n, _ := replica.Do("DBSIZE"); return n == "100" })
	old.Stop() // the primary's process is gone; its replica keeps the data

	restarted := runStartScript(t, pw, replica)
	out := restarted.out
	waitFor(t, "the restarted primary answers", func() bool { p, _ := restarted.Do("PING"); return p == "PONG" })
	if info, _ := restarted.Do("INFO", "replication"); !strings.Contains(info, "role:slave") ||
		!strings.Contains(info, "master_port:"+strconv.Itoa(replica.Port)) {
		t.Fatalf("the restarted primary serves as a primary while its replica holds the data:\n%s\n%s", info, out)
	}
	if !strings.Contains(out.String(), "replicating from it") {
		t.Errorf("the script does not say why it replicates: %q", out)
	}
	time.Sleep(time.Second) // both sides retry their links meanwhile
	if n, _ := replica.Do("DBSIZE"); n != "100" {
		t.Fatalf("the replica lost its data: DBSIZE %s", n)
	}
	if restarted.ready() {
		t.Error("the deferring primary is ready: the controller would not replace it")
	}

	// What the controller does next: promote the replica; the restarted pod then syncs from it.
	admin := valkeyAdmin{}
	if err := admin.ReplicaOfNoOne(context.Background(), replica.Addr(), pw); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the restarted pod gets the shard back", func() bool { n, _ := restarted.Do("DBSIZE"); return n == "100" })
	waitFor(t, "the restarted pod, now a synced replica, is ready", restarted.ready)
	info, err := admin.Replication(context.Background(), replica.Addr(), pw)
	if err != nil || info.role != "master" || info.offset == 0 {
		t.Errorf("promoted replica: %+v %v", info, err)
	}
}

// TestReplicaIsReadyOnlyOnceSynced: a replica that started empty is not ready until it has the
// shard's data (a rollout would otherwise go on to stop the primary it cannot replace), and stays
// ready when its primary goes away afterwards (it is what the controller promotes).
func TestReplicaIsReadyOnlyOnceSynced(t *testing.T) {
	const pw = "pw"
	primary := tu.StartRedis(t, pw)
	for i := range 100 {
		if _, err := primary.Do("SET", "k"+strconv.Itoa(i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	primary.Stop()
	replica := runStartScriptAs(t, "web-shard-0-1", pw, primary)
	waitFor(t, "the replica answers", func() bool { p, _ := replica.Do("PING"); return p == "PONG" })
	time.Sleep(500 * time.Millisecond)
	if replica.ready() {
		t.Fatal("an empty replica whose primary is away is ready")
	}
	primary.Start()
	for i := range 100 {
		if _, err := primary.Do("SET", "k"+strconv.Itoa(i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the replica syncs and is ready", replica.ready)
	if n, _ := replica.Do("DBSIZE"); n != "100" {
		t.Fatalf("ready replica holds %s keys, want 100", n)
	}
	primary.Stop()
	time.Sleep(500 * time.Millisecond)
	if !replica.ready() {
		t.Fatal("a synced replica turned unready when its primary went away: the controller could not promote it")
	}
}

// TestFreshPrimaryStartsAsPrimary: with no peer holding data, the designated primary is one.
func TestFreshPrimaryStartsAsPrimary(t *testing.T) {
	empty := tu.StartRedis(t, "pw")
	r := runStartScript(t, "pw", empty)
	out := r.out
	waitFor(t, "the primary answers", func() bool { p, _ := r.Do("PING"); return p == "PONG" })
	if info, _ := r.Do("INFO", "replication"); !strings.Contains(info, "role:master") {
		t.Errorf("a fresh shard's designated primary is not a primary:\n%s\n%s", info, out)
	}
	if !r.ready() {
		t.Error("a fresh primary is not ready")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 15s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestShardStartScriptAcceptsPasswordsWithQuotesAndBackslashes(t *testing.T) {
	for _, pw := range []string{`plain`, `with "quotes"`, `back\slash\`, `\x41 \n $HOME 'single' #hash`} {
		r := runStartScript(t, pw, nil)
		out := r.out
		deadline := time.Now().Add(10 * time.Second)
		for {
			got, err := r.Do("PING")
			if err == nil && got == "PONG" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("password %q: no authenticated PONG (last: %q, %v)\n%s", pw, got, err, out)
			}
			time.Sleep(20 * time.Millisecond)
		}
		wrong := &tu.Redis{Port: r.Port, Password: pw + "x"}
		if got, _ := wrong.Do("PING"); got == "PONG" {
			t.Errorf("password %q: a wrong password was accepted", pw)
		}
	}
}

func TestShardStartScriptRefusesAMultiLinePassword(t *testing.T) {
	started := runStartScript(t, "line one\nline two", nil)
	cmd, out := started.cmd, started.out
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(out.String(), "must be a single line") {
			t.Errorf("exit %v, output %q: want a failure that names the problem", err, out)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the script started a server with a multi-line password")
	}
}

// TestPreStopHandsThePrimaryRoleOverWithoutLosingAWrite: the preStop hook of a primary being
// stopped runs FAILOVER: its replica becomes the primary holding every acknowledged write, and
// the old one a replica of it.
func TestPreStopHandsThePrimaryRoleOverWithoutLosingAWrite(t *testing.T) {
	_, cli := shardBinaries(t)
	const pw = "pw"
	primary := tu.StartRedis(t, pw)
	replica := tu.StartReplica(t, primary)
	waitFor(t, "the replica is linked", func() bool {
		info, _ := replica.Do("INFO", "replication")
		return strings.Contains(info, "master_link_status:up")
	})

	w := startAckedWriter(primary)
	time.Sleep(300 * time.Millisecond)
	script := strings.NewReplacer("valkey-cli", cli, "-p 6379", "-p "+strconv.Itoa(primary.Port)).Replace(shardPreStopScript)
	cmd := exec.Command("sh", "-c", script)
	cmd.Env = append(os.Environ(), "REDISCLI_AUTH="+pw)
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("preStop: %v\n%s", err, out)
	}
	took := time.Since(start)
	w.stopAndCheck(t, primary, replica, took)
}

// ackedWriter SETs keys on a primary without pause and records which were acknowledged.
type ackedWriter struct {
	mu    sync.Mutex
	acked []string
	stop  chan struct{}
	done  chan struct{}
}

func startAckedWriter(primary *tu.Redis) *ackedWriter {
	w := &ackedWriter{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			k := "w" + strconv.Itoa(i)
			if got, err := primary.Do("SET", k, "v"); err == nil && got == "OK" {
				w.mu.Lock()
				w.acked = append(w.acked, k)
				w.mu.Unlock()
			}
		}
	}()
	return w
}

// stopAndCheck stops the writer after a switchover from primary to replica and checks the roles
// and that the new primary holds every acknowledged write.
func (w *ackedWriter) stopAndCheck(t *testing.T, primary, replica *tu.Redis, took time.Duration) {
	t.Helper()
	close(w.stop)
	<-w.done
	if info, _ := primary.Do("INFO", "replication"); !strings.Contains(info, "role:slave") {
		t.Fatalf("the old primary is still a primary:\n%s", info)
	}
	if info, _ := replica.Do("INFO", "replication"); !strings.Contains(info, "role:master") {
		t.Fatalf("the replica was not promoted:\n%s", info)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	lost := 0
	for _, k := range w.acked {
		if v, _ := replica.Do("GET", k); v != "v" {
			lost++
		}
	}
	t.Logf("switchover in %s; %d acknowledged writes, %d lost", took.Round(time.Millisecond), len(w.acked), lost)
	if lost > 0 || len(w.acked) == 0 {
		t.Errorf("%d of %d acknowledged writes lost in the switchover", lost, len(w.acked))
	}
}

// TestPreStopOfAReplicaWaitsForItsPrimarysFenceToLift: the preStop hook of the last replica of a
// fenced primary waits until the fence is lifted (the controller does it on the pod's delete),
// so the primary does not refuse writes in between; and not longer than 3 s when nobody lifts it.
func TestPreStopOfAReplicaWaitsForItsPrimarysFenceToLift(t *testing.T) {
	_, cli := shardBinaries(t)
	const pw = "pw"
	primary := tu.StartRedis(t, pw)
	if got, _ := primary.Do("CONFIG", "SET", "min-replicas-to-write", "1", "min-replicas-max-lag", "2"); got != "OK" {
		t.Fatal(got)
	}
	replica := tu.StartReplica(t, primary)
	waitFor(t, "the replica is counted", func() bool {
		info, _ := primary.Do("INFO", "replication")
		return strings.Contains(info, "min_slaves_good_slaves:1")
	})
	preStop := func() time.Duration {
		t.Helper()
		script := strings.NewReplacer("valkey-cli", cli, "-p 6379", "-p "+strconv.Itoa(replica.Port)).Replace(shardPreStopScript)
		cmd := exec.Command("sh", "-c", script)
		cmd.Env = append(os.Environ(), "REDISCLI_AUTH="+pw)
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("preStop: %v\n%s", err, out)
		}
		return time.Since(start)
	}
	if took := preStop(); took < 2500*time.Millisecond || took > 5*time.Second {
		t.Errorf("with the fence never lifted, the hook took %s, want about 3 s", took)
	}
	lift := time.AfterFunc(500*time.Millisecond, func() { _, _ = primary.Do("CONFIG", "SET", "min-replicas-to-write", "0") })
	defer lift.Stop()
	if took := preStop(); took < 400*time.Millisecond || took > 2*time.Second {
		t.Errorf("with the fence lifted after 0.5 s, the hook took %s", took)
	}
	if took := preStop(); took > time.Second {
		t.Errorf("with no fence, the hook took %s", took)
	}
}
