// Command manager runs the cachefleet operator: the CacheFleet and CachePolicy controllers.
package main

import (
	"flag"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/cachefleet/cachefleet/internal/controller"
	"github.com/cachefleet/cachefleet/internal/kubehealth"
)

func main() {
	var (
		metricsAddr, probeAddr, namespaces, agentImage string
		leaderElect                                    bool
		maxConcurrent                                  int
		drainTimeout                                   time.Duration
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8443", "Address of the metrics endpoint; 0 disables it.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Elect a leader so only one replica reconciles.")
	flag.StringVar(&namespaces, "namespaces", "", "Comma-separated namespaces to watch; empty watches all.")
	flag.IntVar(&maxConcurrent, "max-concurrent-reconciles", 4, "Fleets reconciled in parallel.")
	flag.StringVar(&agentImage, "agent-image", controller.DefaultAgentImage, "Agent image for fleets that set none.")
	flag.DurationVar(&drainTimeout, "drain-timeout", controller.DrainTimeout, "Longest wait for agents to leave a removed shard before its StatefulSet is deleted.")
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")
	kubehealth.CheckConnectionsOften()

	scheme := runtime.NewScheme()
	must(clientgoscheme.AddToScheme(scheme))
	must(controller.AddToScheme(scheme))

	cacheOpts := cache.Options{ByObject: controller.CacheByObject()}
	if namespaces != "" {
		cacheOpts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range strings.Split(namespaces, ",") {
			cacheOpts.DefaultNamespaces[strings.TrimSpace(ns)] = cache.Config{}
		}
	}
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                 scheme,
		Cache:                  cacheOpts,
		Metrics:                metricsOptions(metricsAddr),
		HealthProbeBindAddress: probeAddr,
		LeaderElection:         leaderElect,
		LeaderElectionID:       "cachefleet-manager.cache.cachefleet.io",
		// A leader stopped on purpose (rollout, drain, delete) hands the lease over at once
		// instead of making its successor wait out the lease: main returns right after Start.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		log.Error(err, "Failed to create the manager")
		os.Exit(1)
	}
	if err := controller.Setup(mgr, controller.Options{MaxConcurrentReconciles: maxConcurrent, AgentImage: agentImage, DrainTimeout: drainTimeout}); err != nil {
		log.Error(err, "Failed to set up the controllers")
		os.Exit(1)
	}
	must(mgr.AddHealthzCheck("healthz", healthz.Ping))
	must(mgr.AddReadyzCheck("readyz", healthz.Ping))
	log.Info("Starting the manager", "namespaces", namespaces, "leaderElection", leaderElect)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "Manager stopped with an error")
		os.Exit(1)
	}
}

// The metrics endpoint checks callers with TokenReviews and SubjectAccessReviews.
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// metricsOptions serves metrics over HTTPS with Kubernetes authentication and authorization,
// except on loopback (local runs), where plain HTTP is enough.
func metricsOptions(addr string) metricsserver.Options {
	if addr == "0" || strings.HasPrefix(addr, "127.0.0.1") || strings.HasPrefix(addr, "localhost") {
		return metricsserver.Options{BindAddress: addr}
	}
	return metricsserver.Options{BindAddress: addr, SecureServing: true, FilterProvider: filters.WithAuthenticationAndAuthorization}
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}
