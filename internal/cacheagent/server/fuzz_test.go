package server_test

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
	"github.com/cachefleet/cachefleet/internal/contract"
)

// FuzzDispatch sends whatever the fuzzer makes to the whole agent (parser, dispatcher,
// handlers, shards), with policies in the ring, once through an agent whose event loop reads
// the connection and once through one without. Whatever a client sends, the agent must not
// crash or hang, must answer the next client, and must not lose a key it was not asked to
// touch. `go test` replays the corpus in testdata/fuzz/FuzzDispatch and the seeds below;
// `go test -fuzz=FuzzDispatch ./internal/cacheagent/server/` looks for more.
func FuzzDispatch(f *testing.F) {
	for _, seed := range []string{
		"*2\r\n$3\r\nGET\r\n$3\r\nt:k\r\n",
		"*3\r\n$3\r\nSET\r\n$3\r\nc:k\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$3\r\nc:k\r\n",
		"*4\r\n$4\r\nMGET\r\n$3\r\nt:a\r\n$3\r\nc:b\r\n$1\r\nz\r\n",
		"*5\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n",
		"*1\r\n$5\r\nMULTI\r\n*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n*1\r\n$4\r\nEXEC\r\n",
		"*2\r\n$5\r\nWATCH\r\n$1\r\na\r\n*1\r\n$5\r\nMULTI\r\n*1\r\n$7\r\nDISCARD\r\n",
		"*4\r\n$4\r\nEVAL\r\n$27\r\nreturn redis.call('GET','a')\r\n$1\r\n1\r\n$1\r\na\r\n",
		"*4\r\n$4\r\nEVAL\r\n$33\r\nreturn redis.call('FLUSHALL')    \r\n$1\r\n1\r\n$1\r\na\r\n",
		"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n*4\r\n$6\r\nCLIENT\r\n$8\r\nTRACKING\r\n$2\r\nON\r\n$5\r\nBCAST\r\n*2\r\n$3\r\nGET\r\n$3\r\nt:k\r\n",
		"*3\r\n$13\r\nCF.INVALIDATE\r\n$6\r\nPREFIX\r\n$0\r\n\r\n",
		"*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\nx\r\n*1\r\n$4\r\nPING\r\n",
		"*2\r\n$6\r\nSCRIPT\r\n$4\r\nKILL\r\n*1\r\n$8\r\nFLUSHALL\r\n",
		"PING\r\nGET t:k\r\n\r\n*0\r\n*-1\r\n",
		"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$9999999999\r\n",
		"*1\r\n$4\r\nQUIT\r\n*1\r\n$4\r\nPING\r\n",
	} {
		f.Add([]byte(seed))
	}
	shards := []*tu.Redis{tu.StartRedis(f, ""), tu.StartRedis(f, "")}
	var agents []*agent
	for _, loops := range []int{1, 0} {
		o := defaults()
		o.config.EventLoops = loops
		a := startAgent(f, shards, o)
		withPolicy(f, a, contract.Policy{Name: "tracked", Prefix: "t:", TTLMillis: 60000, L1Enabled: true, L1Mode: "tracking", InvalidateOnWrite: true})
		withPolicy(f, a, contract.Policy{Name: "copies", Prefix: "c:", TTLMillis: 60000, L1Enabled: true, L1Mode: "ttl", InvalidateOnWrite: true, Compression: "zstd", LeaseTTLMillis: 200, MaxValueBytes: 4096})
		agents = append(agents, a)
	}
	const canary, canaryValue = "canary-7c1e9b0d2f5a4e3c8b6a", "still here"
	if _, err := shards[agents[0].srv.Router().Index([]byte(canary))].Do("SET", canary, canaryValue); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		for _, a := range agents {
			nc, err := net.DialTimeout("tcp", a.addr, 2*time.Second)
			if err != nil {
				t.Fatalf("the agent takes no connection: %v", err)
			}
			nc.SetDeadline(time.Now().Add(3 * time.Second))
			nc.Write(input)
			nc.(*net.TCPConn).CloseWrite()
			io.Copy(io.Discard, nc) // to the agent's close, or the deadline
			nc.Close()
			check, err := net.DialTimeout("tcp", a.addr, 2*time.Second)
			if err != nil {
				t.Fatalf("after %q the agent takes no connection: %v", input, err)
			}
			check.SetDeadline(time.Now().Add(5 * time.Second))
			rd := bufio.NewReader(check)
			if got, err := tu.RoundTrip(check, rd, "PING"); err != nil || got != "PONG" {
				t.Fatalf("after %q a new client's PING = %q, %v", input, got, err)
			}
			if got, err := tu.RoundTrip(check, rd, "GET", canary); err != nil || got != canaryValue {
				t.Fatalf("after %q the untouched key reads %q, %v", input, got, err)
			}
			check.Close()
		}
	})
}
