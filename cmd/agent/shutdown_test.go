package main_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
)

// TestSIGTERMDrainsBeforeClosing: during --shutdown-delay the agent reports not ready (the
// Service moves new connections to the node's next agent) and still answers old and new
// connections; then it exits. Without the delay a rolling agent refused every connection that
// kube-proxy sent it between SIGTERM and the endpoint's removal.
func TestSIGTERMDrainsBeforeClosing(t *testing.T) {
	r0 := tu.StartRedis(t, "")
	p := startAgent(t, "--shards", "shard-0="+r0.Addr(), "--shutdown-delay=2s")
	old := dialRESP(t, p.resp)
	if got := old("PING"); got != "PONG" {
		t.Fatalf("PING = %q", got)
	}
	sent := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	resp, err := http.Get(p.url("/readyz"))
	if err != nil {
		t.Fatalf("/readyz while draining: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz while draining = %d, want 503", resp.StatusCode)
	}
	if got := old("SET", "k", "v"); got != "OK" {
		t.Errorf("an open connection while draining: SET = %q", got)
	}
	fresh, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p.resp))
	if err != nil {
		t.Fatalf("a new connection while draining: %v", err)
	}
	defer fresh.Close()
	fmt.Fprint(fresh, "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
	_ = fresh.SetReadDeadline(time.Now().Add(time.Second))
	rd := bufio.NewReader(fresh)
	if l1, _ := rd.ReadString('\n'); l1 != "$1\r\n" {
		t.Errorf("a new connection while draining: GET = %q", l1)
	}
	select {
	case <-p.exited:
		if d := time.Since(sent); d < 2*time.Second {
			t.Errorf("exited %v after SIGTERM, before the 2s delay", d)
		}
		if p.waitErr != nil {
			t.Errorf("agent exited with %v:\n%s", p.waitErr, p.out)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not exit after its shutdown delay")
	}
}
