// Command agent is the per-node cache agent: applications talk to it with any Redis client.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cachefleet/cachefleet/internal/cacheagent/bus"
	"github.com/cachefleet/cachefleet/internal/cacheagent/ring"
	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
	"github.com/cachefleet/cachefleet/internal/cacheagent/server"
	"github.com/cachefleet/cachefleet/internal/cacheagent/source"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg := server.DefaultConfig()
	var (
		listen, httpListen, shards, ringFile, passwordFile string
		fleet, namespace, kubeconfig                       string
		d                                                  source.Defaults
		l1MaxMemory                                        int64
		pprofOn                                            bool
		busKeyFile                                         string
	)
	flag.StringVar(&listen, "listen", ":6380", "RESP address for applications.")
	flag.StringVar(&httpListen, "http-listen", ":8080", "HTTP address for health, metrics and the debug API.")
	flag.StringVar(&shards, "shards", "", "Static shards: shard-0=127.0.0.1:7001,shard-1=127.0.0.1:7002 (name=primary[+replica...]).")
	flag.StringVar(&ringFile, "ring-file", "", "Ring document (JSON) to follow; reloaded when it changes.")
	flag.StringVar(&passwordFile, "password-file", "", "File holding the shards' password, also required from clients.")
	flag.StringVar(&busKeyFile, "bus-key-file", "", "Static mode: file holding the invalidation bus signing key (enables the bus).")
	flag.StringVar(&fleet, "fleet", "", "Kubernetes mode: the CacheFleet whose ring ConfigMap to follow.")
	flag.StringVar(&namespace, "namespace", os.Getenv("POD_NAMESPACE"), "Kubernetes mode: the fleet's namespace.")
	flag.StringVar(&kubeconfig, "kubeconfig", "", "Kubernetes mode: kubeconfig path when not running in a pod.")
	flag.BoolVar(&d.L1, "l1", true, "Static mode: enable the L1.")
	flag.BoolVar(&d.TTLModeForAll, "l1-ttl-mode", false, "Static mode: keep L1 copies for their TTL instead of server-assisted tracking.")
	flag.Int64Var(&l1MaxMemory, "l1-max-memory", 64<<20, "Static mode: L1 bound in bytes.")
	flag.DurationVar(&d.L1MaxTTL, "l1-max-ttl", time.Minute, "Static mode: longest L1 lifetime.")
	flag.DurationVar(&d.DefaultTTL, "default-ttl", time.Hour, "Static mode: TTL for writes without one.")
	flag.DurationVar(&d.MinUsableTTL, "min-usable-ttl", 5*time.Second, "Static mode: values with less life left are not kept in L1.")
	flag.Int64Var(&d.MaxValueBytes, "max-value-bytes", 1<<20, "Static mode: largest value accepted.")
	flag.DurationVar(&cfg.ShardTimeout, "shard-timeout", cfg.ShardTimeout, "Per-request timeout to a shard.")
	flag.Func("breaker-failures", "Consecutive failures that open a shard's breaker (default 5).", func(s string) error {
		_, err := fmt.Sscan(s, &cfg.FailuresToOpen)
		return err
	})
	flag.DurationVar(&cfg.Cooldown, "breaker-cooldown", cfg.Cooldown, "Time an open breaker waits before a probe.")
	flag.BoolVar(&pprofOn, "pprof", false, "Serve Go profiles under /debug/pprof/ on the HTTP address.")
	flag.IntVar(&cfg.MaxQueuedDeletes, "max-queued-deletes", cfg.MaxQueuedDeletes, "Deletes kept per down shard.")
	flag.Parse()
	d.L1MaxMemory = l1MaxMemory
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	if passwordFile != "" {
		pw, err := os.ReadFile(passwordFile)
		if err != nil {
			return err
		}
		cfg.Password = strings.TrimSpace(string(pw))
		d.PasswordEnabled = true
	}
	var busKey atomic.Pointer[[]byte]
	if busKeyFile != "" {
		k, err := os.ReadFile(busKeyFile)
		if err != nil {
			return err
		}
		k = []byte(strings.TrimSpace(string(k)))
		busKey.Store(&k)
	}
	sources := 0
	for _, s := range []string{shards, ringFile, fleet} {
		if s != "" {
			sources++
		}
	}
	if sources != 1 {
		return errors.New("give exactly one of --shards, --ring-file or --fleet")
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv := server.New(cfg)
	report := func(err error) { log.Error("Ring update failed", "error", err) }
	applied := func(doc *ring.Document) {
		log.Info("Serving ring", "epoch", doc.Epoch, "shards", len(doc.Shards), "policies", len(doc.Policies))
	}

	switch {
	case shards != "":
		doc, err := source.StaticDocument(shards, d)
		if err != nil {
			return err
		}
		if err := srv.SetRing(doc); err != nil {
			return err
		}
		applied(doc)
	case ringFile != "":
		err := source.WatchFile(ctx, ringFile, time.Second, func(doc *ring.Document) error {
			if err := srv.SetRing(doc); err != nil {
				return err
			}
			applied(doc)
			return nil
		}, report)
		if err != nil {
			return err
		}
	default:
		rc, err := restConfig(kubeconfig)
		if err != nil {
			return err
		}
		cs, err := kubernetes.NewForConfig(rc)
		if err != nil {
			return err
		}
		node, pod := os.Getenv("NODE_NAME"), os.Getenv("POD_NAME")
		if node == "" {
			node, _ = os.Hostname()
		}
		k := &source.Kube{Client: cs, Fleet: fleet, Namespace: namespace, Node: node, Pod: pod, LeaseDuration: 30 * time.Second, Report: report,
			Apply: func(doc *ring.Document, password string) error {
				srv.SetPassword(password)
				if k := readBusKey(ctx, cs, namespace, doc); k != nil {
					busKey.Store(&k)
				}
				if err := srv.SetRing(doc); err != nil {
					return err
				}
				applied(doc)
				return nil
			}}
		if err := k.Run(ctx); err != nil {
			return err
		}
	}

	if k := busKey.Load(); k != nil {
		r := srv.Router()
		nodeName := os.Getenv("NODE_NAME")
		if nodeName == "" {
			nodeName, _ = os.Hostname()
		}
		b := bus.New(bus.Config{
			Fleet: r.Doc.Namespace + "/" + r.Doc.Fleet, Channel: r.Doc.Invalidation.Channel, Key: *k, Node: nodeName,
			Shards: func() []*router.Shard { return srv.Router().Shards },
			Apply:  srv.ApplyInvalidation, Flush: srv.FlushL1,
		})
		srv.SetBus(b)
		go b.Run(ctx)
		log.Info("Invalidation bus on", "channel", r.Doc.Invalidation.Channel, "sender", b.Sender())
	} else {
		log.Info("No bus key: other agents' ttl-mode copies expire with their L1 TTL")
	}
	token := func() string {
		if k := busKey.Load(); k != nil {
			return string(*k)
		}
		return ""
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(srv.Collector(), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	handler := srv.HTTPHandlerWithToken(reg, token)
	if pprofOn {
		mux := http.NewServeMux()
		mux.Handle("/", handler)
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		handler = mux
	}
	httpSrv := &http.Server{Addr: httpListen, Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	hln, err := net.Listen("tcp", httpListen)
	if err != nil {
		return err
	}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	go func() {
		if err := httpSrv.Serve(hln); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	log.Info("Agent listening", "resp", ln.Addr().String(), "http", hln.Addr().String())

	select {
	case <-ctx.Done():
	case err := <-errc:
		if err != nil {
			return err
		}
	}
	log.Info("Shutting down: finishing in-flight requests")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_ = httpSrv.Shutdown(shutdownCtx)
	return srv.Shutdown(shutdownCtx)
}

// readBusKey reads the fleet's bus signing key from its Secret; nil if it cannot.
func readBusKey(ctx context.Context, cs kubernetes.Interface, ns string, doc *ring.Document) []byte {
	ref := doc.Invalidation.Secret
	if ref.Name == "" {
		return nil
	}
	s, err := cs.CoreV1().Secrets(ns).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	return s.Data[ref.Key]
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
