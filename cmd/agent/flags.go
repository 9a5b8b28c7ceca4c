package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/server"
	"github.com/cachefleet/cachefleet/internal/cacheagent/source"
)

// options are the agent's command line.
type options struct {
	listen, httpListen           string
	shards, ringFile             string
	fleet, namespace, kubeconfig string
	node                         string
	pprof                        bool
	procs                        int
	shutdownDelay                time.Duration
	busKey                       []byte // static and ring-file modes
	defaults                     source.Defaults
	server                       server.Config
}

func parseFlags(args []string) (*options, error) {
	o := &options{server: server.DefaultConfig()}
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	var passwordFile, busKeyFile string
	d := &o.defaults
	fs.StringVar(&o.listen, "listen", ":6380", "RESP address for applications.")
	fs.StringVar(&o.httpListen, "http-listen", ":8080", "HTTP address for health, metrics and the debug API.")
	fs.StringVar(&o.shards, "shards", "", "Static shards: shard-0=127.0.0.1:7001,shard-1=127.0.0.1:7002 (name=primary[+replica...]).")
	fs.StringVar(&o.ringFile, "ring-file", "", "Ring document (JSON) to follow; reloaded when it changes.")
	fs.StringVar(&passwordFile, "password-file", "", "File holding the shards' password, also required from clients.")
	fs.StringVar(&busKeyFile, "bus-key-file", "", "Static mode: file holding the invalidation bus signing key (enables the bus).")
	fs.StringVar(&o.fleet, "fleet", "", "Kubernetes mode: the CacheFleet whose ring ConfigMap to follow.")
	fs.StringVar(&o.namespace, "namespace", os.Getenv("POD_NAMESPACE"), "Kubernetes mode: the fleet's namespace.")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "Kubernetes mode: kubeconfig path when not running in a pod.")
	fs.BoolVar(&d.L1, "l1", true, "Static mode: enable the L1.")
	fs.BoolVar(&d.TTLModeForAll, "l1-ttl-mode", false, "Static mode: keep L1 copies for their TTL instead of server-assisted tracking.")
	fs.Int64Var(&d.L1MaxMemory, "l1-max-memory", 64<<20, "Static mode: L1 bound in bytes.")
	fs.DurationVar(&d.L1MaxTTL, "l1-max-ttl", time.Minute, "Static mode: longest L1 lifetime.")
	fs.DurationVar(&d.DefaultTTL, "default-ttl", time.Hour, "Static mode: TTL for writes without one.")
	fs.DurationVar(&d.MinUsableTTL, "min-usable-ttl", 5*time.Second, "Static mode: values with less life left are not kept in L1.")
	fs.Int64Var(&d.MaxValueBytes, "max-value-bytes", 1<<20, "Static mode: largest value accepted.")
	fs.BoolVar(&d.AllowFlush, "allow-flush", false, "Static mode: let clients run FLUSHALL/FLUSHDB (they empty every shard).")
	fs.DurationVar(&o.shutdownDelay, "shutdown-delay", 0, "After SIGTERM, how long to keep serving while /readyz reports not ready, "+
		"so the Service sends new connections to the node's next agent before this one closes its own.")
	fs.DurationVar(&o.server.ShardTimeout, "shard-timeout", o.server.ShardTimeout, "Per-request timeout to a shard.")
	fs.Func("breaker-failures", "Consecutive failures that open a shard's breaker (default 5).", func(s string) error {
		_, err := fmt.Sscan(s, &o.server.FailuresToOpen)
		return err
	})
	fs.DurationVar(&o.server.Cooldown, "breaker-cooldown", o.server.Cooldown, "Time an open breaker waits before a probe.")
	fs.BoolVar(&o.pprof, "pprof", false, "Serve Go profiles under /debug/pprof/ on the HTTP address.")
	fs.IntVar(&o.procs, "procs", 2, "Threads running Go code (GOMAXPROCS); 0 keeps Go's choice (GOMAXPROCS, or the CPU limit). "+
		"One costs the least CPU per request but a stall of that thread stalls every client; two ride one out.")
	fs.IntVar(&o.server.EventLoops, "event-loops", o.server.EventLoops, "Epoll loops that read client connections, answer L1 hits and forward GETs and SETs themselves (Linux, --procs of 2 or more); 0 leaves every connection to its goroutine. "+
		"One costs the least CPU per unpipelined hit; more share deep pipelines of hits over threads.")
	fs.IntVar(&o.server.MaxClients, "max-clients", o.server.MaxClients, "Client connections served at once (Valkey's maxclients); one more is answered \"-ERR max number of clients reached\" and closed. "+
		"Lowered at start to fit the open-files limit.")
	out := &o.server.Output
	fs.Int64Var(&out.HardBytes, "client-output-hard-bytes", out.HardBytes, "A client whose pending replies pass this is disconnected at once (Valkey's client-output-buffer-limit hard); 0 for none.")
	fs.Int64Var(&out.SoftBytes, "client-output-soft-bytes", out.SoftBytes, "A client whose pending replies pass this must take them within --client-output-soft-seconds; 0 for none.")
	fs.Func("client-output-soft-seconds", fmt.Sprintf("How long a client may stay over the soft output limit (default %d).", int(out.SoftFor.Seconds())), func(v string) error {
		var secs int
		if _, err := fmt.Sscan(v, &secs); err != nil || secs < 1 {
			return fmt.Errorf("want a number of seconds, 1 or more")
		}
		out.SoftFor = time.Duration(secs) * time.Second
		return nil
	})
	fs.Int64Var(&out.TotalBytes, "client-output-total-bytes", out.TotalBytes, "Replies held for all clients at once (Valkey's maxmemory-clients); the client whose replies would pass it is disconnected; 0 for none.")
	fs.IntVar(&o.server.MaxQueuedDeletes, "max-queued-deletes", o.server.MaxQueuedDeletes, "Deletes kept per down shard.")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if o.server.EventLoops < 0 {
		return nil, fmt.Errorf("--event-loops must be 0 or more, not %d", o.server.EventLoops)
	}
	if o.server.MaxClients < 1 {
		return nil, fmt.Errorf("--max-clients must be 1 or more, not %d", o.server.MaxClients)
	}
	if o.procs < 0 {
		return nil, fmt.Errorf("--procs must be 0 or more, not %d", o.procs)
	}
	sources := 0
	for _, s := range []string{o.shards, o.ringFile, o.fleet} {
		if s != "" {
			sources++
		}
	}
	if sources != 1 {
		return nil, errors.New("give exactly one of --shards, --ring-file or --fleet")
	}
	if passwordFile != "" {
		pw, err := readTrimmed(passwordFile)
		if err != nil {
			return nil, err
		}
		o.server.Password = string(pw)
		d.PasswordEnabled = true
	}
	if busKeyFile != "" {
		k, err := readTrimmed(busKeyFile)
		if err != nil {
			return nil, err
		}
		o.busKey = k
	}
	if o.node = os.Getenv("NODE_NAME"); o.node == "" {
		o.node, _ = os.Hostname()
	}
	return o, nil
}
