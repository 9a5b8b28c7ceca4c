package main_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
)

// TestConnectionFloodIsRefusedNotFatal: 1,100 idle connections under an open-files limit of
// 1,024 once made the agent exit ("accept4: too many open files"), taking the node's cache
// down. It now fits --max-clients to the limit, answers the connections over it as Valkey does,
// and serves again once they leave.
func TestConnectionFloodIsRefusedNotFatal(t *testing.T) {
	shard := tu.StartRedis(t, "")
	for _, loops := range []string{"1", "0"} {
		t.Run("event-loops="+loops, func(t *testing.T) {
			p := startAgentLimited(t, 512, "--shards=shard-0="+shard.Addr(), "--event-loops="+loops)
			if !strings.Contains(p.out.String(), "Lowered --max-clients") {
				t.Errorf("the agent did not say it lowered --max-clients under 512 open files:\n%s", p.out)
			}
			var conns []net.Conn
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			refused := 0
			for i := 0; i < 700; i++ {
				c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p.resp), time.Second)
				if err != nil {
					t.Fatalf("dial %d: %v", i, err)
				}
				conns = append(conns, c)
				// A PING shows whether the agent serves this connection or refused it.
				c.SetDeadline(time.Now().Add(5 * time.Second))
				fmt.Fprint(c, "PING\r\n")
				line, err := bufio.NewReader(c).ReadString('\n')
				switch line {
				case "+PONG\r\n":
				case "-ERR max number of clients reached\r\n":
					refused++
				default:
					t.Fatalf("connection %d: %q, %v", i, line, err)
				}
			}
			select {
			case <-p.exited:
				t.Fatalf("the agent exited under the flood:\n%s", p.out)
			default:
			}
			if refused < 300 || refused > 450 {
				t.Errorf("%d of 700 connections refused; want those over 384 (512 open files less 128 kept)", refused)
			}
			for _, c := range conns {
				c.Close()
			}
			conns = nil
			deadline := time.Now().Add(5 * time.Second)
			for {
				got := cli(t, p.resp, "SET", "after-flood", "ok")
				if got == "OK" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("after the flood left, SET = %q", got)
				}
				time.Sleep(50 * time.Millisecond)
			}
			code, body := httpDo(t, "GET", p.url("/metrics"), "")
			if code != 200 || !strings.Contains(body, "cachefleet_agent_rejected_clients_total") {
				t.Errorf("/metrics: %d, rejected counter missing", code)
			}
			t.Logf("open-files limit 512: %d of 700 connections refused with Valkey's error, the agent alive", refused)
		})
	}
}
