// Command agent is the per-node cache agent: applications talk to it with any Redis client.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cachefleet/cachefleet/internal/cacheagent/bus"
	"github.com/cachefleet/cachefleet/internal/cacheagent/httpapi"
	"github.com/cachefleet/cachefleet/internal/cacheagent/reach"
	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
	"github.com/cachefleet/cachefleet/internal/cacheagent/server"
	"github.com/cachefleet/cachefleet/internal/cacheagent/source"
	"github.com/cachefleet/cachefleet/internal/contract"
	"github.com/cachefleet/cachefleet/internal/kubehealth"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
}

func run() error {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		return err
	}
	kubehealth.CheckConnectionsOften() // a node healed after a cut gets its ring again at once
	if o.procs > 0 {
		runtime.GOMAXPROCS(o.procs)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	fitClientsToFileLimit(&o.server, log)
	fitGCToMemoryLimit(log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	o.server.Log = log
	a := &agent{o: o, log: log, srv: server.New(o.server)}
	if err := a.startRing(ctx); err != nil {
		return err
	}
	return a.serve(ctx)
}

// agent ties the server to its ring source and its invalidation bus.
type agent struct {
	o      *options
	log    *slog.Logger
	srv    *server.Server
	bus    *bus.Bus
	busKey atomic.Pointer[[]byte] // also the token of the HTTP write API
}

func (a *agent) applied(doc *contract.Document) {
	a.log.Info("Serving ring", "epoch", doc.Epoch, "shards", len(doc.Shards), "policies", len(doc.Policies))
}

func (a *agent) report(err error) { a.log.Error("Ring update failed", "error", err) }

// startRing loads the first ring from the configured source and keeps following it.
func (a *agent) startRing(ctx context.Context) error {
	o := a.o
	switch {
	case o.shards != "":
		doc, err := source.StaticDocument(o.shards, o.defaults)
		if err != nil {
			return err
		}
		if err := a.srv.SetRing(doc); err != nil {
			return err
		}
		a.applied(doc)
		a.configureBus(ctx, doc, o.busKey)
		return nil
	case o.ringFile != "":
		return source.WatchFile(ctx, o.ringFile, time.Second, func(doc *contract.Document) error {
			if err := a.srv.SetRing(doc); err != nil {
				return err
			}
			a.applied(doc)
			a.configureBus(ctx, doc, o.busKey)
			return nil
		}, a.report)
	default:
		return a.followKubernetes(ctx)
	}
}

// followKubernetes follows the fleet's ring ConfigMap and Secrets (password, bus key).
func (a *agent) followKubernetes(ctx context.Context) error {
	rc, err := restConfig(a.o.kubeconfig)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	k := &source.Kube{Client: cs, Fleet: a.o.fleet, Namespace: a.o.namespace, Node: a.o.node, Pod: os.Getenv("POD_NAME"),
		LeaseDuration: 30 * time.Second, Report: a.report,
		Apply: func(doc *contract.Document, sec source.Secrets) error {
			a.srv.SetPassword(sec.Password)
			a.srv.SetOriginHeaders(sec.OriginHeaders)
			if err := a.srv.SetRing(doc); err != nil {
				return err
			}
			a.applied(doc)
			a.configureBus(ctx, doc, sec.BusKey)
			return nil
		}}
	// What this agent cannot reach goes in its Lease at once: the controller tells a lost
	// primary from a lost node by the agents on other nodes (package reach).
	prober := &reach.Prober{Targets: a.probeTargets, Changed: k.Nudge}
	k.Unreachable = prober.Lost
	k.RefusingWrites = prober.Refusing
	go prober.Run(ctx)
	return k.Run(ctx)
}

// probeTargets are the shards of the ring the agent serves.
func (a *agent) probeTargets() ([]contract.Shard, string) {
	r := a.srv.Router()
	if r == nil {
		return nil, ""
	}
	return r.Doc.Shards, a.srv.Password()
}

// configureBus starts the bus with the first key it gets and follows later changes of the key
// (rotation) and the channel. Without a key the bus stays off and other agents' ttl-mode copies
// expire with their L1 TTL.
func (a *agent) configureBus(ctx context.Context, doc *contract.Document, key []byte) {
	if len(key) == 0 {
		if a.bus == nil {
			a.log.Info("No bus key yet: other agents' ttl-mode copies expire with their L1 TTL")
		}
		return
	}
	a.busKey.Store(&key)
	if a.bus == nil {
		a.bus = bus.New(bus.Config{Fleet: doc.Namespace + "/" + doc.Fleet, Node: a.o.node,
			Shards: func() []*router.Shard { return a.srv.Router().Shards },
			Apply:  a.srv.ApplyInvalidation, Flush: a.srv.FlushL1})
		a.bus.Configure(doc.Invalidation.Channel, key)
		a.srv.SetBus(a.bus)
		go a.bus.Run(ctx)
		a.log.Info("Invalidation bus on", "channel", doc.Invalidation.Channel, "sender", a.bus.Sender())
		return
	}
	a.bus.Configure(doc.Invalidation.Channel, key)
}

// serve answers RESP and HTTP until a signal, then finishes in-flight commands.
func (a *agent) serve(ctx context.Context) error {
	token := func() string {
		if k := a.busKey.Load(); k != nil {
			return string(*k)
		}
		return ""
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(a.srv.Collector(), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	handler := httpapi.New(a.srv, reg, token)
	if a.o.pprof {
		mux := http.NewServeMux()
		mux.Handle("/", handler)
		mux.Handle("/debug/pprof/", httpapi.Guard(a.srv.Password, http.HandlerFunc(pprof.Index)))
		mux.Handle("/debug/pprof/profile", httpapi.Guard(a.srv.Password, http.HandlerFunc(pprof.Profile)))
		handler = mux
	}
	httpSrv := httpapi.NewServer(a.o.httpListen, handler)
	ln, err := net.Listen("tcp", a.o.listen)
	if err != nil {
		return err
	}
	hln, err := net.Listen("tcp", a.o.httpListen)
	if err != nil {
		return err
	}
	errc := make(chan error, 2)
	if err := a.srv.StartLoops(); err != nil {
		a.log.Warn("No event loop: client connections are read by their goroutines alone", "err", err)
	}
	go func() { errc <- a.srv.Serve(ln) }()
	go func() {
		if err := httpSrv.Serve(hln); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	a.log.Info("Agent listening", "resp", ln.Addr().String(), "http", hln.Addr().String())
	select {
	case <-ctx.Done():
	case err := <-errc:
		if err != nil {
			return err
		}
	}
	if d := a.o.shutdownDelay; d > 0 && ctx.Err() != nil {
		a.srv.Drain()
		a.log.Info("Draining: not ready, still serving", "for", d)
		time.Sleep(d)
	}
	a.log.Info("Shutting down: finishing in-flight requests")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_ = httpSrv.Shutdown(shutdownCtx)
	return a.srv.Shutdown(shutdownCtx)
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	if c, err := rest.InClusterConfig(); err == nil {
		return c, nil
	}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(clientcmd.NewDefaultClientConfigLoadingRules(), nil).ClientConfig()
}

// readTrimmed reads a one-line secret file.
func readTrimmed(path string) ([]byte, error) {
	b, err := os.ReadFile(path) //nolint:gosec // the operator names the file on the command line
	if err != nil {
		return nil, err
	}
	return []byte(strings.TrimSpace(string(b))), nil
}
