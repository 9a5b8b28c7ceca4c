package controller

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/resp"
)

// shardAdmin is how the controller talks to one Valkey pod (tests substitute nothing: they run
// real valkey-server processes; the interface keeps the reconciler's dependency explicit).
type shardAdmin interface {
	Replication(ctx context.Context, addr, password string) (replication, error)
	ReplicaOfNoOne(ctx context.Context, addr, password string) error
	ReplicaOf(ctx context.Context, addr, password, host string, port int) error
	// Switchover makes the primary at addr hand its role to its replica host:port and returns
	// once it is a replica (or the handover failed).
	Switchover(ctx context.Context, addr, password, host, port string, timeout time.Duration) error
	// SetFence makes the primary at addr refuse writes while no replica hears them (on), or take
	// them regardless (off): Valkey's min-replicas-to-write 1 or 0.
	SetFence(ctx context.Context, addr, password string, on bool) error
}

// replication is the part of INFO replication failover reads.
type replication struct {
	role          string
	offset        int64
	failoverState string // master_failover_state: no-failover, waiting-for-sync, failover-in-progress
	// lags are the seconds since each online replica was last heard (a primary's "slaveN:" lines).
	lags []int
}

// goodReplicas counts the replicas a primary would count for min-replicas-to-write with
// min-replicas-max-lag maxLag: online, and heard within maxLag seconds.
func (r replication) goodReplicas(maxLag int) int {
	n := 0
	for _, lag := range r.lags {
		if lag <= maxLag {
			n++
		}
	}
	return n
}

// valkeyAdmin opens a short-lived connection per call: failover is rare, and a pooled client
// per pod would outlive the pod.
type valkeyAdmin struct{}

const adminTimeout = 2 * time.Second

func (a valkeyAdmin) do(ctx context.Context, addr, password string, cmd func(context.Context, valkey.Client) error) error {
	return a.doFor(ctx, adminTimeout, addr, password, cmd)
}

// doFor is do with a budget for the whole conversation.
func (valkeyAdmin) doFor(ctx context.Context, budget time.Duration, addr, password string, cmd func(context.Context, valkey.Client) error) error {
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	dial := adminTimeout // a pod on a node cut off answers no SYN: the dial waits this long
	if deadline, ok := ctx.Deadline(); ok {
		dial = min(dial, max(time.Until(deadline), time.Millisecond))
	}
	c, err := valkey.NewClient(valkey.ClientOption{
		InitAddress: []string{addr}, Password: password, DisableCache: true, ForceSingleClient: true,
		Dialer: net.Dialer{Timeout: dial}, ConnWriteTimeout: adminTimeout, DisableRetry: true,
	})
	if err != nil {
		return err
	}
	defer c.Close()
	return cmd(ctx, c)
}

func (a valkeyAdmin) Replication(ctx context.Context, addr, password string) (replication, error) {
	var out replication
	err := a.do(ctx, addr, password, func(ctx context.Context, c valkey.Client) error {
		info, err := c.Do(ctx, c.B().Info().Section("replication").Build()).ToString()
		if err != nil {
			return err
		}
		out = parseReplication(info)
		return nil
	})
	return out, err
}

func parseReplication(info string) replication {
	var r replication
	for _, line := range strings.Split(info, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		switch k {
		case "role":
			r.role = v
		case "master_repl_offset":
			r.offset, _ = strconv.ParseInt(v, 10, 64)
		case "master_failover_state":
			r.failoverState = v
		default:
			if strings.HasPrefix(k, "slave") && strings.Contains(v, "state=online") {
				for field := range strings.SplitSeq(v, ",") {
					if lag, ok := strings.CutPrefix(field, "lag="); ok {
						n, _ := strconv.Atoi(lag)
						r.lags = append(r.lags, n)
					}
				}
			}
		}
	}
	return r
}

func (a valkeyAdmin) ReplicaOfNoOne(ctx context.Context, addr, password string) error {
	return a.do(ctx, addr, password, func(ctx context.Context, c valkey.Client) error {
		return c.Do(ctx, c.B().Arbitrary("REPLICAOF").Args("NO", "ONE").Build()).Error()
	})
}

func (a valkeyAdmin) SetFence(ctx context.Context, addr, password string, on bool) error {
	n := "0"
	if on {
		n = "1"
	}
	return a.do(ctx, addr, password, func(ctx context.Context, c valkey.Client) error {
		return c.Do(ctx, c.B().ConfigSet().ParameterValue().ParameterValue("min-replicas-to-write", n).Build()).Error()
	})
}

func (a valkeyAdmin) ReplicaOf(ctx context.Context, addr, password, host string, port int) error {
	return a.do(ctx, addr, password, func(ctx context.Context, c valkey.Client) error {
		return c.Do(ctx, c.B().Replicaof().Host(host).Port(int64(port)).Build()).Error()
	})
}

// Switchover runs FAILOVER TO on the primary and polls until it reports itself a replica. A
// FAILOVER already running (its own preStop's) is waited for the same way. Valkey pauses writes
// meanwhile and gives up after timeout, leaving the primary as it was (an error here).
func (a valkeyAdmin) Switchover(ctx context.Context, addr, password, host, port string, timeout time.Duration) error {
	return a.doFor(ctx, timeout+adminTimeout, addr, password, func(ctx context.Context, c valkey.Client) error {
		err := c.Do(ctx, c.B().Arbitrary("FAILOVER").Args("TO", host, port, "TIMEOUT", strconv.FormatInt(timeout.Milliseconds(), 10)).Build()).Error()
		if err != nil && !strings.Contains(err.Error(), "already in progress") {
			return fmt.Errorf("FAILOVER TO %s:%s: %w", host, port, err)
		}
		nudge := ackNudger(ctx, net.JoinHostPort(host, port), password)
		defer nudge.Close()
		for {
			nudge.poke()
			info, err := c.Do(ctx, c.B().Info().Section("replication").Build()).ToString()
			if err != nil {
				return err
			}
			// During the handover the primary already calls itself a replica (failover-in-progress)
			// and turns back into a primary if the target does not accept; only the end counts.
			if r := parseReplication(info); r.failoverState == "no-failover" {
				if r.role == "slave" {
					return nil
				}
				return fmt.Errorf("FAILOVER TO %s:%s did not complete within %s: the primary kept its role", host, port, timeout)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
}

// ackNudge makes the switchover's target replica report its replication offset now. FAILOVER
// waits until the target has acknowledged every write, but while writes are paused the primary
// does not ask for acknowledgements and the replica sends one only once a second: 0.5 s of write
// pause on average. REPLCONF GETACK sent to the replica makes it acknowledge at once (Valkey
// honours it from any client). It has no reply, so it goes over a plain connection followed by a
// PING, whose PONG says it was read; valkey-go cannot send a command without a reply.
type ackNudge struct {
	conn net.Conn
	buf  []byte
}

func ackNudger(ctx context.Context, addr, password string) *ackNudge {
	d := net.Dialer{Timeout: adminTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return &ackNudge{} // best effort: without it the handover only takes longer
	}
	n := &ackNudge{conn: conn, buf: make([]byte, 512)}
	if password != "" {
		n.send(resp.AppendCommand(nil, "AUTH", password))
	}
	return n
}

func (n *ackNudge) poke() {
	n.send(resp.AppendCommand(resp.AppendCommand(nil, "REPLCONF", "GETACK", "*"), "PING"))
}

// send writes a request and reads until its last reply has arrived (or gives up on the nudge).
func (n *ackNudge) send(req []byte) {
	if n.conn == nil {
		return
	}
	_ = n.conn.SetDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := n.conn.Write(req); err != nil {
		n.Close()
		return
	}
	if _, err := n.conn.Read(n.buf); err != nil {
		n.Close()
	}
}

func (n *ackNudge) Close() {
	if n.conn != nil {
		_ = n.conn.Close()
		n.conn = nil
	}
}
