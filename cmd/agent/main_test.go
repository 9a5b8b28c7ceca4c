package main_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
	"github.com/cachefleet/cachefleet/internal/contract"
)

// These tests run the agent binary as users do, with redis-cli and redis-benchmark against it.

var agentBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "agent-bin")
	if err != nil {
		panic(err)
	}
	agentBin = filepath.Join(dir, "agent")
	if out, err := exec.Command("go", "build", "-o", agentBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the agent: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type proc struct {
	cmd        *exec.Cmd
	resp, http int
	out        *syncBuffer
	exited     chan struct{}
	waitErr    error // set before exited closes
}

func startAgent(t *testing.T, args ...string) *proc {
	t.Helper()
	return startAgentLimited(t, 0, args...)
}

// startAgentLimited starts the agent with an open-files limit (soft and hard) of nofile; 0
// keeps the test's own.
func startAgentLimited(t *testing.T, nofile int, args ...string) *proc {
	t.Helper()
	for range 5 { // another process may take a port first: pick others
		p := &proc{resp: tu.FreePort(t), http: tu.FreePort(t), out: &syncBuffer{}, exited: make(chan struct{})}
		all := append(args, fmt.Sprintf("--listen=127.0.0.1:%d", p.resp), fmt.Sprintf("--http-listen=127.0.0.1:%d", p.http))
		p.cmd = exec.Command(agentBin, all...)
		if nofile > 0 {
			p.cmd = exec.Command("sh", append([]string{"-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, nofile), agentBin}, all...)...)
		}
		p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { p.waitErr = p.cmd.Wait(); close(p.exited) }()
		t.Cleanup(func() { p.cmd.Process.Kill(); <-p.exited })
		if p.ready() {
			return p
		}
		if !strings.Contains(p.out.String(), "address already in use") {
			t.Fatalf("agent not ready:\n%s", p.out)
		}
	}
	t.Fatal("agent could not bind its ports in 5 attempts")
	return nil
}

// ready waits for /readyz, and gives up at once if the process exits.
func (p *proc) ready() bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return false
		default:
		}
		if resp, err := http.Get(p.url("/readyz")); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// syncBuffer is the process output, written by exec's copier while tests read it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func (p *proc) url(path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", p.http, path) }

func cli(t *testing.T, port int, args ...string) string {
	t.Helper()
	out, err := exec.Command("redis-cli", append([]string{"-p", strconv.Itoa(port)}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func httpDo(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAgentBinaryWithRedisToolsHTTPAndSIGTERM(t *testing.T) {
	r0, r1 := tu.StartRedis(t, ""), tu.StartRedis(t, "")
	p := startAgent(t, "--shards", fmt.Sprintf("shard-0=%s,shard-1=%s", r0.Addr(), r1.Addr()))

	if got := cli(t, p.resp, "PING"); got != "PONG" {
		t.Errorf("redis-cli PING = %q", got)
	}
	cli(t, p.resp, "SET", "greeting", "hello")
	if got := cli(t, p.resp, "GET", "greeting"); got != "hello" {
		t.Errorf("redis-cli GET = %q", got)
	}
	out, err := exec.Command("redis-benchmark", "-p", strconv.Itoa(p.resp), "-t", "set,get", "-n", "2000", "-r", "1000", "-c", "10", "-q").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "GET:") || !strings.Contains(string(out), "SET:") {
		t.Errorf("redis-benchmark against the agent: %v\n%s", err, out)
	}

	code, body := httpDo(t, "GET", p.url("/v1/ring?key=greeting"), "")
	var owner struct{ Shard string }
	if code != 200 || json.Unmarshal([]byte(body), &owner) != nil || !strings.HasPrefix(owner.Shard, "shard-") {
		t.Errorf("/v1/ring?key = %d %s", code, body)
	}
	if code, _ := httpDo(t, "PUT", p.url("/v1/keys/dbg?ttl=60"), "from-http"); code != 204 {
		t.Errorf("PUT /v1/keys = %d", code)
	}
	if code, body := httpDo(t, "GET", p.url("/v1/keys/dbg"), ""); code != 200 || !strings.Contains(body, `"value":"from-http"`) {
		t.Errorf("GET /v1/keys = %d %s", code, body)
	}
	if code, _ := httpDo(t, "PUT", p.url("/v1/keys/huge"), strings.Repeat("x", 2<<20)); code != http.StatusRequestEntityTooLarge {
		t.Errorf("PUT of an oversized value = %d", code)
	}
	if code, _ := httpDo(t, "DELETE", p.url("/v1/keys/dbg"), ""); code != 204 {
		t.Errorf("DELETE /v1/keys = %d", code)
	}
	if code, _ := httpDo(t, "GET", p.url("/v1/keys/dbg"), ""); code != 404 {
		t.Errorf("GET after DELETE = %d", code)
	}
	_, metrics := httpDo(t, "GET", p.url("/metrics"), "")
	for _, m := range []string{`cachefleet_agent_requests_total{command="get",result="ok"}`, `cachefleet_agent_shard_breaker_state{shard="shard-1"} 0`,
		"cachefleet_agent_ring_epoch 1", "cachefleet_agent_request_duration_seconds_bucket", `cachefleet_agent_cache_hits_total{tier="l2"}`,
		"go_sched_gomaxprocs_threads 2"} { // --procs defaults to two threads
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}

	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		if p.waitErr != nil {
			t.Errorf("agent exited with %v after SIGTERM:\n%s", p.waitErr, p.out)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("agent did not exit after SIGTERM")
	}
}

func TestRingFileIsReloadedWithoutDroppingClients(t *testing.T) {
	r0, r1 := tu.StartRedis(t, ""), tu.StartRedis(t, "")
	write := func(shards ...contract.Shard) {
		doc := &contract.Document{SchemaVersion: contract.SchemaVersion, Fleet: "f", Namespace: "ns", Algorithm: "rendezvous", Shards: shards,
			Tiers: contract.Tiers{L1Enabled: true, L1MaxMemoryBytes: 8 << 20, L1MaxTTLMillis: 60000, DefaultTTLMillis: 60000, MinUsableMillis: 1000, MaxValueBytes: 1 << 20}}
		doc.Seal(nil)
		data, _ := doc.Encode()
		path := filepath.Join(t.TempDir(), "ring.json")
		os.WriteFile(path, data, 0o644)
		os.Rename(path, ringPath)
	}
	ringPath = filepath.Join(t.TempDir(), "ring.json")
	write(contract.Shard{Name: "shard-0", Primary: r0.Addr()})
	p := startAgent(t, "--ring-file", ringPath)

	conn := dialRESP(t, p.resp)
	if got := conn("SET", "k", "v"); got != "OK" {
		t.Fatalf("SET = %q", got)
	}
	write(contract.Shard{Name: "shard-0", Primary: r0.Addr()}, contract.Shard{Name: "shard-1", Primary: r1.Addr()})
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, body := httpDo(t, "GET", p.url("/v1/ring"), "")
		if strings.Contains(body, "shard-1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new ring not loaded:\n%s", p.out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := conn("PING"); got != "PONG" {
		t.Errorf("the client connection did not survive the reload: %q", got)
	}
	os.WriteFile(ringPath, []byte("{broken"), 0o644)
	time.Sleep(1500 * time.Millisecond)
	if got := conn("PING"); got != "PONG" {
		t.Errorf("a broken ring file stopped the agent: %q", got)
	}
}

var ringPath string

// dialRESP opens one connection and returns a function sending commands over it.
func dialRESP(t *testing.T, port int) func(args ...string) string {
	nc, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	rd := bufio.NewReader(nc)
	return func(args ...string) string {
		nc.SetDeadline(time.Now().Add(5 * time.Second))
		out, err := tu.RoundTrip(nc, rd, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
}

// TestTwoAgentProcessesShareTheBus: a write through one agent process drops the other's
// ttl-mode L1 copy at once (without the bus it would live for the L1 TTL).
func TestTwoAgentProcessesShareTheBus(t *testing.T) {
	r0, r1 := tu.StartRedis(t, ""), tu.StartRedis(t, "")
	keyFile := filepath.Join(t.TempDir(), "bus.key")
	os.WriteFile(keyFile, []byte("shared-signing-key-for-the-test\n"), 0o600)
	shards := fmt.Sprintf("shard-0=%s,shard-1=%s", r0.Addr(), r1.Addr())
	a := startAgent(t, "--shards", shards, "--l1-ttl-mode", "--bus-key-file", keyFile)
	b := startAgent(t, "--shards", shards, "--l1-ttl-mode", "--bus-key-file", keyFile)
	ca, cb := dialRESP(t, a.resp), dialRESP(t, b.resp)
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		k := "bus:" + strconv.Itoa(i)
		r0.Do("SET", k, "old", "PX", "600000")
		r1.Do("SET", k, "old", "PX", "600000")
		cb("GET", k) // B keeps "old" in L1 for up to a minute
		ca("SET", k, "new")
		time.Sleep(50 * time.Millisecond)
		if got := cb("GET", k); got == "new" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B kept serving its L1 copy after A's write:\nA:\n%s\nB:\n%s", a.out, b.out)
		}
	}
	_, metrics := httpDo(t, "GET", b.url("/metrics"), "")
	if !strings.Contains(metrics, `cachefleet_agent_bus_messages_total{event="applied"}`) {
		t.Error("bus metrics missing")
	}
}
