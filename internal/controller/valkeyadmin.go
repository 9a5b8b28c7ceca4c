package controller

import (
	"context"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/valkey-io/valkey-go"
)

// shardAdmin is how the controller talks to one Valkey pod (tests substitute nothing: they run
// real valkey-server processes; the interface keeps the reconciler's dependency explicit).
type shardAdmin interface {
	Replication(ctx context.Context, addr, password string) (replication, error)
	ReplicaOfNoOne(ctx context.Context, addr, password string) error
	ReplicaOf(ctx context.Context, addr, password, host string, port int) error
}

// replication is the part of INFO replication failover reads.
type replication struct {
	role   string
	offset int64
}

// valkeyAdmin opens a short-lived connection per call: failover is rare, and a pooled client
// per pod would outlive the pod.
type valkeyAdmin struct{}

const adminTimeout = 2 * time.Second

func (valkeyAdmin) do(ctx context.Context, addr, password string, cmd func(context.Context, valkey.Client) error) error {
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	c, err := valkey.NewClient(valkey.ClientOption{
		InitAddress: []string{addr}, Password: password, DisableCache: true, ForceSingleClient: true,
		Dialer: net.Dialer{Timeout: adminTimeout}, ConnWriteTimeout: adminTimeout, DisableRetry: true,
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
		}
	}
	return r
}

func (a valkeyAdmin) ReplicaOfNoOne(ctx context.Context, addr, password string) error {
	return a.do(ctx, addr, password, func(ctx context.Context, c valkey.Client) error {
		return c.Do(ctx, c.B().Arbitrary("REPLICAOF").Args("NO", "ONE").Build()).Error()
	})
}

func (a valkeyAdmin) ReplicaOf(ctx context.Context, addr, password, host string, port int) error {
	return a.do(ctx, addr, password, func(ctx context.Context, c valkey.Client) error {
		return c.Do(ctx, c.B().Replicaof().Host(host).Port(int64(port)).Build()).Error()
	})
}
