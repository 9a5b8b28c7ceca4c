//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The manager's own life on real nodes: its leader lost in the middle of work, the manager
// down, the operator upgraded. hack/e2e.sh installs the manager as pods (hack/operator.sh) and
// names the install in E2E_MANAGER (chart or kustomize), E2E_MANAGER_NAMESPACE and
// E2E_MANAGER_DEPLOYMENT.

var (
	managerInstall    = envOr("E2E_MANAGER", "process")
	managerNamespace  = os.Getenv("E2E_MANAGER_NAMESPACE")
	managerDeployment = os.Getenv("E2E_MANAGER_DEPLOYMENT")
)

// managerLease is the leader election Lease (cmd/manager's LeaderElectionID).
const managerLease = "lease/cachefleet-manager.cache.cachefleet.io"

// needsManagerPods skips unless the manager runs as pods, from install when one is named.
func needsManagerPods(t *testing.T, install string) {
	t.Helper()
	needsRealPods(t)
	if managerInstall == "process" || managerNamespace == "" || (install != "" && managerInstall != install) {
		t.Skipf("needs the manager as pods installed from %q (hack/e2e.sh installs it); this run: %s", install, managerInstall)
	}
}

// leader is the manager pod holding the lease, "" while nobody does (holder "<pod>_<uuid>").
func leader() string {
	pod, _, _ := strings.Cut(leaderIdentity(), "_")
	return pod
}

// leaderIdentity is the lease's holder: a process, "<pod>_<uuid>" (a container restarted in the
// same pod is another process, with another uuid).
func leaderIdentity() string {
	return jsonpath(managerNamespace, managerLease, "{.spec.holderIdentity}")
}

// deleteLeader deletes the leader pod as a rollout or a drain would and returns it with the
// time until another pod held the lease.
func deleteLeader(t *testing.T) (old string, takeover time.Duration) {
	t.Helper()
	old = leader()
	if old == "" {
		t.Fatal("no manager pod holds the lease")
	}
	t0 := time.Now()
	mustKubectl(t, "", "-n", managerNamespace, "delete", "pod", old, "--wait=false")
	eventually(t, time.Minute, "another manager pod holds the lease", func() error {
		if l := leader(); l == "" || l == old {
			return fmt.Errorf("holder %q", l)
		}
		return nil
	})
	return old, time.Since(t0)
}

// scaleManager sets the manager Deployment's replicas and waits until that many are available.
func scaleManager(t *testing.T, replicas int) {
	t.Helper()
	mustKubectl(t, "", "-n", managerNamespace, "scale", "deployment/"+managerDeployment, fmt.Sprintf("--replicas=%d", replicas))
	eventually(t, 2*time.Minute, fmt.Sprintf("%d manager pods", replicas), func() error {
		pods := mustKubectl(t, "", "-n", managerNamespace, "get", "pods", "-l", managerSelector(t), "-o", "name")
		avail := jsonpath(managerNamespace, "deployment/"+managerDeployment, "{.status.availableReplicas}")
		if n := len(strings.Fields(pods)); n != replicas || (replicas > 0 && avail != fmt.Sprint(replicas)) {
			return fmt.Errorf("%d pods, %q available", n, avail)
		}
		return nil
	})
}

// managerSelector is the manager Deployment's pod selector as a kubectl -l argument.
func managerSelector(t *testing.T) string {
	t.Helper()
	var labels map[string]string
	if err := json.Unmarshal([]byte(jsonpath(managerNamespace, "deployment/"+managerDeployment, "{.spec.selector.matchLabels}")), &labels); err != nil {
		t.Fatalf("manager selector: %v", err)
	}
	var sel []string
	for k, v := range labels {
		sel = append(sel, k+"="+v)
	}
	return strings.Join(sel, ",")
}

// TestLeaderLossDuringScaleUp: the leader is deleted while a fleet grows from 2 to 4 shards
// under readers and a writer. The other replica takes the lease, finishes the scale-up, and no
// read fails and no acknowledged write is lost.
func TestLeaderLossDuringScaleUp(t *testing.T) {
	needsManagerPods(t, "")
	ns := namespace(t, "e2e-leader-scale")
	const keys = 1000
	_, c, l, _ := loadedFleet(t, ns, "ls", 2, 0, keys, true)
	t0 := time.Now()
	mustKubectl(t, "", "-n", ns, "patch", "cachefleet/ls", "--type=merge", "-p", `{"spec":{"shards":{"count":4}}}`)
	eventually(t, time.Minute, "the scale-up under way", func() error {
		if !exists(ns, "statefulset/ls-shard-3") {
			return fmt.Errorf("no statefulset ls-shard-3 yet")
		}
		return nil
	})
	old, takeover := deleteLeader(t)
	waitReady(t, ns, "ls", 3*time.Minute)
	eventually(t, 2*time.Minute, "4 shards in the ring", func() error {
		if d := readRing(t, ns, "ls"); len(d.Shards) != 4 {
			return fmt.Errorf("ring has %d shards", len(d.Shards))
		}
		return nil
	})
	t.Logf("timing: leader %s deleted mid scale-up: %s took the lease after %s; 4 shards Ready %s after the patch",
		old, leader(), takeover.Round(100*time.Millisecond), since(t0))
	time.Sleep(time.Second)
	l.finish(t, "leader loss during scale-up")
	lost, acked := l.lostAcked(c)
	missing := 0
	for i := range keys {
		if err := c.Get(context.Background(), fmt.Sprintf("load:%d", i)).Err(); err != nil {
			missing++
		}
	}
	t.Logf("leader loss during scale-up: %d of %d acknowledged writes lost, %d of %d keys written before missing", lost, acked, missing, keys)
	if lost > 0 || missing > 0 {
		t.Errorf("lost %d acknowledged writes and %d keys written before", lost, missing)
	}
	// Shards that join one at a time move keys twice, and the warm-up knows only the last move.
	scaled := mustKubectl(t, "", "-n", ns, "get", "events", "--field-selector", "reason=Scaled", "-o", "jsonpath={.items[*].message}")
	if scaled != "Scaled from 2 to 4 shards" {
		t.Errorf("Scaled events %q, want the two new shards to join in one step", scaled)
	}
	if takeover > 20*time.Second {
		t.Errorf("takeover took %v; a released lease is taken within the retry period (2 s)", takeover)
	}
}

// TestLeaderLossDuringFailover: a shard's primary Valkey dies (restarting empty in its pod, so
// only the controller's promotion brings the data back) and the leader is deleted at once. The
// next leader promotes the replica: writes come back and nothing written before is lost.
func TestLeaderLossDuringFailover(t *testing.T) {
	needsManagerPods(t, "")
	ns := namespace(t, "e2e-leader-failover")
	const keys = 500
	readyRealFleet(t, ns, "lf", 2, 1)
	c := agentClient(t, ns, "lf", oneAgent(t, ns, "lf"))
	fill(t, c, keys)
	if err := fillErr(c, "gap", 100); err != nil {
		t.Fatal(err)
	}
	primaryOf := func() string { return jsonpath(ns, "cachefleet/lf", `{.status.primaries[?(@.shard=="shard-0")].pod}`) }
	from := primaryOf()
	to := map[string]string{"lf-shard-0-0": "lf-shard-0-1", "lf-shard-0-1": "lf-shard-0-0"}[from]
	if to == "" {
		t.Fatalf("shard-0's primary is %q", from)
	}
	l := startLoad(c, keys, true)
	gaps := startGapWriter(c, keysOn(t, ns, "lf", from, "gap", 100))
	time.Sleep(time.Second)
	t0 := time.Now()
	mustKubectl(t, "", "-n", ns, "exec", from, "--", "kill", "1") // Valkey restarts empty
	old, takeover := deleteLeader(t)
	eventually(t, 2*time.Minute, to+" promoted", func() error {
		if p := primaryOf(); p != to {
			return fmt.Errorf("shard-0's primary is %q", p)
		}
		return nil
	})
	promoted := time.Since(t0)
	waitReady(t, ns, "lf", 2*time.Minute)
	l.finish(t, "leader loss during failover")
	gap, refused, ok := gaps.finish()
	lost, acked := l.lostAcked(c)
	missing := 0
	for i := range keys {
		if v, err := c.Get(context.Background(), fmt.Sprintf("load:%d", i)).Result(); err != nil || v != fmt.Sprint(i) {
			missing++
		}
	}
	t.Logf("timing: leader %s deleted as shard-0's primary died: %s took the lease after %s, promoted %s after %s; write gap on shard-0 %s (%s, %d acknowledged)",
		old, leader(), takeover.Round(100*time.Millisecond), to, promoted.Round(100*time.Millisecond), gap.Round(10*time.Millisecond), refused, ok)
	t.Logf("leader loss during failover: %d of %d keys written before missing; %d of %d acknowledged writes during it lost (Valkey replicates asynchronously)",
		missing, keys, lost, acked)
	if missing > 0 {
		t.Errorf("%d of %d keys written before the failover are gone", missing, keys)
	}
}

// TestManagerDownForAMinute: with no manager pod for a minute, agents and shards go on serving
// reads and writes with no error; a change made meanwhile is acted on once the manager is back.
func TestManagerDownForAMinute(t *testing.T) {
	needsManagerPods(t, "")
	ns := namespace(t, "e2e-manager-down")
	const keys = 1000
	_, c, l, _ := loadedFleet(t, ns, "md", 2, 1, keys, true)
	replicas := jsonpath(managerNamespace, "deployment/"+managerDeployment, "{.spec.replicas}")
	t.Cleanup(func() {
		kubectl("", "-n", managerNamespace, "scale", "deployment/"+managerDeployment, "--replicas="+replicas)
	})
	scaleManager(t, 0)
	down := envOr("E2E_MANAGER_DOWN", "60s")
	d, err := time.ParseDuration(down)
	if err != nil {
		t.Fatal(err)
	}
	mustKubectl(t, "", "-n", ns, "patch", "cachefleet/md", "--type=merge", "-p", `{"spec":{"shards":{"count":3}}}`)
	time.Sleep(d)
	if exists(ns, "statefulset/md-shard-2") {
		t.Fatal("the fleet was scaled with no manager running: another manager is reconciling")
	}
	reads, readErrs, writes, writeErrs := l.reads.Load(), l.readErrs.Load(), l.writes.Load(), l.writeErrs.Load()
	t.Logf("manager down %s: %d reads, %d read errors; %d writes, %d write errors", down, reads, readErrs, writes, writeErrs)
	if readErrs > 0 || writeErrs > 0 {
		t.Errorf("with the manager down, %d reads and %d writes failed; agents and shards must not need it", readErrs, writeErrs)
	}
	want, err := strconv.Atoi(replicas)
	if err != nil {
		t.Fatalf("manager replicas %q: %v", replicas, err)
	}
	t0 := time.Now()
	scaleManager(t, want)
	waitReady(t, ns, "md", 3*time.Minute)
	eventually(t, 2*time.Minute, "3 shards in the ring", func() error {
		if d := readRing(t, ns, "md"); len(d.Shards) != 3 {
			return fmt.Errorf("ring has %d shards", len(d.Shards))
		}
		return nil
	})
	t.Logf("timing: manager back after %s down: the change made meanwhile (2 -> 3 shards) Ready %s after its pods started", down, since(t0))
	l.finish(t, "manager down, then back")
	if lost, acked := l.lostAcked(c); lost > 0 {
		t.Errorf("%d of %d acknowledged writes lost", lost, acked)
	}
}

// podUIDs maps each pod of ns matching selector to its UID and restart count.
func podUIDs(t *testing.T, ns, selector string) map[string]string {
	t.Helper()
	out := mustKubectl(t, "", "-n", ns, "get", "pods", "-l", selector, "-o",
		`jsonpath={range .items[*]}{.metadata.name}={.metadata.uid}/{.status.containerStatuses[*].restartCount}{"\n"}{end}`)
	pods := map[string]string{}
	for _, l := range strings.Fields(out) {
		name, uid, _ := strings.Cut(l, "=")
		pods[name] = uid
	}
	return pods
}

// helmUpgrade upgrades the suite's chart release, keeping its values but those flags set
// ("--set", "k=v", ...).
func helmUpgrade(t *testing.T, flags ...string) {
	t.Helper()
	helm(t, append([]string{"upgrade", "cachefleet", "charts/cachefleet", "--namespace", managerNamespace, "--reuse-values", "--wait"}, flags...)...)
}

// TestManagerUpgradeLeavesShardsRunning: `helm upgrade` to a new manager image replaces the
// manager pods and nothing else: no shard or agent pod restarts, no client error.
func TestManagerUpgradeLeavesShardsRunning(t *testing.T) {
	needsManagerPods(t, "chart")
	ns := namespace(t, "e2e-manager-upgrade")
	const keys = 1000
	_, c, l, _ := loadedFleet(t, ns, "mu", 2, 1, keys, true)
	fleetPods := "cachefleet.io/fleet=mu"
	before := podUIDs(t, ns, fleetPods)
	image := func() string {
		return jsonpath(managerNamespace, "deployment/"+managerDeployment, "{.spec.template.spec.containers[0].image}")
	}
	from := image()
	t0 := time.Now()
	helmUpgrade(t, "--set", "image.tag=next")
	to := image()
	if !strings.HasSuffix(to, ":next") {
		t.Fatalf("the manager's image after the upgrade is %q", to)
	}
	mustKubectl(t, "", "-n", managerNamespace, "rollout", "status", "deployment/"+managerDeployment, "--timeout=3m")
	eventually(t, time.Minute, "a pod of the new manager holds the lease", func() error {
		l := leader()
		if l == "" {
			return fmt.Errorf("nobody holds the lease")
		}
		if img := jsonpath(managerNamespace, "pod/"+l, "{.spec.containers[0].image}"); img != to {
			return fmt.Errorf("leader %s runs %s", l, img)
		}
		return nil
	})
	upgraded := time.Since(t0)
	// The new leader reconciles every fleet at start: let it, then look for anything it replaced.
	time.Sleep(15 * time.Second)
	waitReady(t, ns, "mu", time.Minute)
	after := podUIDs(t, ns, fleetPods)
	restarted := 0
	for pod, uid := range before {
		if after[pod] != uid {
			restarted++
			t.Errorf("%s was replaced or restarted by the manager upgrade: %s -> %s", pod, uid, after[pod])
		}
	}
	l.finish(t, "manager upgrade")
	t.Logf("timing: helm upgrade of the manager %s -> %s: new leader after %s; %d of %d shard and agent pods restarted; %d write errors",
		from, to, upgraded.Round(100*time.Millisecond), restarted, len(before), l.writeErrs.Load())
	if n := l.writeErrs.Load(); n > 0 {
		t.Errorf("%d writes failed during a manager upgrade", n)
	}
	if lost, acked := l.lostAcked(c); lost > 0 {
		t.Errorf("%d of %d acknowledged writes lost", lost, acked)
	}
}

// appReport is test/appclient's JSON line.
type appReport struct {
	Reads, Misses, ReadErrors, Writes, WriteErrors, Dials int64
	FirstError                                            string
}

// TestAgentImageRollsOneNodeAtATime: `helm upgrade` to a new agent image rolls every fleet's
// agents one node at a time, each node's next agent ready before the old one stops. An
// application pod on every node (go-redis through the agent Service, defaults) reads and writes
// throughout: its errors are counted, keys and hits survive, shards are not restarted.
func TestAgentImageRollsOneNodeAtATime(t *testing.T) {
	needsManagerPods(t, "chart")
	ns := namespace(t, "e2e-agent-roll")
	const keys = 500
	readyRealFleet(t, ns, "ar", 2, 1)
	agents := agentPods(t, ns, "ar")
	fill(t, agentClient(t, ns, "ar", oneAgent(t, ns, "ar")), keys)
	shardsBefore := podUIDs(t, ns, "cachefleet.io/fleet=ar,app.kubernetes.io/component=shard")
	svc := jsonpath(ns, "service/ar-agent", "{.spec.clusterIP}") + ":6380"
	const run = 60 * time.Second
	var apps []string
	for node := range agents {
		name := "app-" + node
		startPod(t, ns, name, node, "cachefleet.local/appclient:1", []string{"PW=" + fleetPassword(t, ns, "ar")},
			"/appclient", "-addr", svc, "-duration", run.String(), "-keys", fmt.Sprint(keys), "-prefix", "load")
		apps = append(apps, name)
	}
	for _, app := range apps {
		eventually(t, time.Minute, app+" running", func() error {
			if p := jsonpath(ns, "pod/"+app, "{.status.phase}"); p != "Running" {
				return fmt.Errorf("phase %q", p)
			}
			return nil
		})
	}
	time.Sleep(5 * time.Second)
	t0 := time.Now()
	// The other of the two tags hack/node-cluster.sh imports, so the test can run again.
	from := jsonpath(ns, "daemonset/ar-agent", "{.spec.template.spec.containers[0].image}")
	to := strings.TrimSuffix(from, ":dev") + ":next"
	if strings.HasSuffix(from, ":next") {
		to = strings.TrimSuffix(from, ":next") + ":dev"
	}
	w := watchAgentRoll(t, ns, "ar", len(agents), to)
	helmUpgrade(t, "--set", "agentImage="+to)
	eventually(t, 3*time.Minute, "every agent on the new image", func() error {
		if n := w.onNext.Load(); n != int64(len(agents)) {
			return fmt.Errorf("%d of %d nodes with only a ready agent on the new image", n, len(agents))
		}
		return nil
	})
	rolled := time.Since(t0)
	w.stop()
	t.Logf("timing: agent image roll %s -> %s over %d nodes done %s after helm upgrade began; each node's new agent ready at %v; %d samples: fewest nodes with a ready agent %d, most nodes rolling at once %d, samples with a node rolling %d",
		from, to, len(agents), rolled.Round(100*time.Millisecond), w.replaced, w.samples, w.fewestReady, w.mostRolling, w.rollingSamples)
	if w.fewestReady < len(agents) {
		t.Errorf("a node was left without a ready agent during the roll (%d of %d)", w.fewestReady, len(agents))
	}
	if w.mostRolling > 1 {
		t.Errorf("%d nodes rolled at once; one node at a time", w.mostRolling)
	}
	if w.rollingSamples == 0 {
		t.Errorf("no sample saw a node rolling: the roll was not observed")
	}
	var total appReport
	for _, app := range apps {
		out, err := podResult(t, ns, app, run+time.Minute)
		var r appReport
		if err != nil || json.Unmarshal([]byte(strings.TrimSpace(out)), &r) != nil {
			t.Fatalf("%s: %v\n%s", app, err, out)
		}
		t.Logf("%s: %d reads (%d misses, %d errors), %d writes (%d errors), %d connections opened; first error %q",
			app, r.Reads, r.Misses, r.ReadErrors, r.Writes, r.WriteErrors, r.Dials, r.FirstError)
		total.Reads += r.Reads
		total.Misses += r.Misses
		total.ReadErrors += r.ReadErrors
		total.Writes += r.Writes
		total.WriteErrors += r.WriteErrors
		if r.Reads < 1000 {
			t.Errorf("%s made only %d reads: it did not run through the roll", app, r.Reads)
		}
	}
	t.Logf("agent roll: application pods saw %d errors in %d requests; hit rate %.2f%%", total.ReadErrors+total.WriteErrors,
		total.Reads+total.Writes, 100*float64(total.Reads-total.Misses)/float64(max(1, total.Reads)))
	if total.ReadErrors+total.WriteErrors > 0 {
		t.Errorf("application pods saw %d read and %d write errors during the agent roll", total.ReadErrors, total.WriteErrors)
	}
	if total.Misses > 0 {
		t.Errorf("%d reads of keys written before the roll missed: the keys did not survive", total.Misses)
	}
	for pod, uid := range shardsBefore {
		if after := podUIDs(t, ns, "cachefleet.io/fleet=ar,app.kubernetes.io/component=shard")[pod]; after != uid {
			t.Errorf("shard pod %s restarted during the agent roll: %s -> %s", pod, uid, after)
		}
	}
}

// agentRoll samples a fleet's agent pods every 100 ms during a roll: on each node, a ready agent
// that is not stopping, and whether the next one is starting beside the old (the node rolling).
type agentRoll struct {
	nodes                                             int
	onNext                                            atomic.Int64 // nodes whose only live agent is on the :next image, ready
	fewestReady, mostRolling, rollingSamples, samples int
	replaced                                          map[string]time.Duration // when each node's new agent was first ready
	done, stopped                                     chan struct{}
}

func watchAgentRoll(t *testing.T, ns, fleet string, nodes int, image string) *agentRoll {
	t.Helper()
	w := &agentRoll{nodes: nodes, fewestReady: nodes, replaced: map[string]time.Duration{}, done: make(chan struct{}), stopped: make(chan struct{})}
	t0 := time.Now()
	go func() {
		defer close(w.stopped)
		for {
			select {
			case <-w.done:
				return
			case <-time.After(100 * time.Millisecond):
			}
			out, err := kubectl("", "-n", ns, "get", "pods", "-l", "cachefleet.io/fleet="+fleet+",app.kubernetes.io/component=agent", "-o",
				`jsonpath={range .items[*]}{.spec.nodeName}|{.spec.containers[0].image}|{.metadata.deletionTimestamp}|{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}`)
			if err != nil {
				continue
			}
			ready, live, next := map[string]bool{}, map[string]int{}, map[string]bool{}
			for _, line := range strings.Fields(out) {
				f := strings.Split(line, "|")
				if len(f) != 4 || f[2] != "" { // a stopping agent drains its connections: gone
					continue
				}
				node := f[0]
				live[node]++
				if f[3] == "True" {
					ready[node] = true
					if f[1] == image {
						next[node] = true
						if _, seen := w.replaced[node]; !seen {
							w.replaced[node] = time.Since(t0).Round(100 * time.Millisecond)
						}
					}
				}
			}
			rolling, onNext := 0, 0
			for node, n := range live {
				if n > 1 {
					rolling++
				} else if next[node] {
					onNext++
				}
			}
			w.samples++
			w.fewestReady = min(w.fewestReady, len(ready))
			w.mostRolling = max(w.mostRolling, rolling)
			if rolling > 0 {
				w.rollingSamples++
			}
			w.onNext.Store(int64(onNext))
		}
	}()
	return w
}

func (w *agentRoll) stop() {
	close(w.done)
	<-w.stopped
}

// TestChartWatchingOneNamespace: the chart with watchNamespaces grants the namespaced rules
// (Secrets among them) in those namespaces only; the manager, restarted with them, reconciles a
// fleet there and leaves one elsewhere alone, and may not read another namespace's Secrets.
func TestChartWatchingOneNamespace(t *testing.T) {
	needsManagerPods(t, "chart")
	watched, other := namespace(t, "e2e-watched"), namespace(t, "e2e-unwatched")
	helmUpgrade(t, "--set", "watchNamespaces={"+watched+"}")
	t.Cleanup(func() {
		// (--set watchNamespaces=null is kept by --reuse-values: an empty list is not.)
		helmUpgrade(t, "--set-json", "watchNamespaces=[]")
		mustKubectl(t, "", "-n", managerNamespace, "rollout", "status", "deployment/"+managerDeployment, "--timeout=3m")
		if args := jsonpath(managerNamespace, "deployment/"+managerDeployment, "{.spec.template.spec.containers[0].args}"); strings.Contains(args, "--namespaces") {
			t.Errorf("the manager still watches some namespaces only: %s", args)
		}
	})
	mustKubectl(t, "", "-n", managerNamespace, "rollout", "status", "deployment/"+managerDeployment, "--timeout=3m")
	as := fmt.Sprintf("system:serviceaccount:%s:%s", managerNamespace, jsonpath(managerNamespace, "deployment/"+managerDeployment, "{.spec.template.spec.serviceAccountName}"))
	for ns, want := range map[string]string{watched: "yes", other: "no", "kube-system": "no"} {
		if out, _ := kubectl("", "auth", "can-i", "get", "secrets", "-n", ns, "--as", as); strings.TrimSpace(out) != want {
			t.Errorf("%s may get Secrets in %s: %q, want %q", as, ns, strings.TrimSpace(out), want)
		}
	}
	t0 := time.Now()
	mustKubectl(t, realFleetYAML("w", 1, 0, ""), "-n", watched, "apply", "-f", "-")
	mustKubectl(t, realFleetYAML("u", 1, 0, ""), "-n", other, "apply", "-f", "-")
	waitReady(t, watched, "w", 3*time.Minute)
	t.Logf("timing: a fleet in the watched namespace Ready in %s with namespaced RBAC", since(t0))
	c := agentClient(t, watched, "w", oneAgent(t, watched, "w"))
	if err := c.Set(context.Background(), "k", "v", 0).Err(); err != nil {
		t.Errorf("SET through the watched fleet's agent: %v", err)
	}
	if phase := jsonpath(other, "cachefleet/u", "{.status.phase}"); phase != "" || exists(other, "statefulset/u-shard-0") {
		t.Errorf("the fleet in an unwatched namespace was reconciled (phase %q)", phase)
	}
}

// TestLeaderCrashIsReplacedAfterItsLease: a leader killed outright (SIGKILL: no release) is
// replaced once its lease runs out, 15 s plus a retry (controller-runtime's defaults). The node
// cluster runs pods as processes of this machine, so the test finds the leader's process here.
func TestLeaderCrashIsReplacedAfterItsLease(t *testing.T) {
	needsManagerPods(t, "")
	if cluster != "nodes" {
		t.Skip("needs the manager's processes on this machine (E2E_CLUSTER=nodes)")
	}
	old, oldPod := leaderIdentity(), leader()
	pid := processOfPod(t, oldPod, "/manager")
	t0 := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("killing the leader %s (pid %d): %v", oldPod, pid, err)
	}
	// The other pod, or the killed container restarted in its pod, whichever tries first once
	// the lease has run out: either is a new process.
	eventually(t, time.Minute, "another manager process holds the lease", func() error {
		if l := leaderIdentity(); l == "" || l == old {
			return fmt.Errorf("holder %q", l)
		}
		return nil
	})
	took := time.Since(t0)
	t.Logf("timing: leader %s killed (SIGKILL): %s took the lease after %s (lease 15 s, retry 2 s)", old, leaderIdentity(), took.Round(100*time.Millisecond))
	if took > 25*time.Second {
		t.Errorf("takeover after a crash took %v; the lease is 15 s", took)
	}
	scaleManager(t, 2) // the killed container restarts in its pod: both available again
}

// processOfPod is the pid of the process running exe in pod (its HOSTNAME), on this machine.
func processOfPod(t *testing.T, pod, exe string) int {
	t.Helper()
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if !strings.HasPrefix(string(cmdline), exe+"\x00") {
			continue
		}
		env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		for _, kv := range strings.Split(string(env), "\x00") {
			if kv == "HOSTNAME="+pod {
				return pid
			}
		}
	}
	t.Fatalf("no process %s of pod %s on this machine", exe, pod)
	return 0
}
