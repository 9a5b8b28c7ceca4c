// Package controller reconciles CacheFleets and CachePolicies.
package controller

import (
	ctrl "sigs.k8s.io/controller-runtime"
)

// DefaultAgentImage is the agent image for fleets whose spec.agent.image is empty.
const DefaultAgentImage = "ghcr.io/cachefleet/agent:v0.1.0"

// Options configures the controllers.
type Options struct {
	MaxConcurrentReconciles int
	AgentImage              string
}

// Setup registers the controllers with the manager.
func Setup(mgr ctrl.Manager, opts Options) error {
	return nil
}
