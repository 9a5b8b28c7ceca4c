package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types of a CacheFleet.
const (
	// ReadyCondition is True when every shard has a ready primary, the ring is published and
	// every scheduled agent is ready.
	ReadyCondition = "Ready"
	// ShardsReadyCondition is True when every shard's pods are ready.
	ShardsReadyCondition = "ShardsReady"
	// AgentsReadyCondition is True when every scheduled agent is ready.
	AgentsReadyCondition = "AgentsReady"
	// RingPublishedCondition is True when the ring ConfigMap matches the spec.
	RingPublishedCondition = "RingPublished"
	// MonitoringReadyCondition is True when the ServiceMonitor is in place, or monitoring is off.
	MonitoringReadyCondition = "MonitoringReady"
	// DegradedCondition is True when at least one shard has no ready primary: its keys are
	// served from L1 or as misses until it returns.
	DegradedCondition = "Degraded"
	// ProgressingCondition is True while the fleet moves towards its spec (scaling, rolling out).
	ProgressingCondition = "Progressing"
	// ReconcilingCondition is True while the object is not yet what its spec asks for and the
	// controller is working on it; StalledCondition is True when it cannot get there until the
	// spec (or something the spec names) changes. Both follow the kstatus conventions, so
	// Argo CD, Flux and kpt read a CacheFleet's or CachePolicy's health without custom rules.
	ReconcilingCondition = "Reconciling"
	StalledCondition     = "Stalled"
)

// Condition reasons of a CacheFleet.
const (
	// ReasonCRDNotInstalled: monitoring is enabled but the ServiceMonitor CRD is absent.
	ReasonCRDNotInstalled = "CRDNotInstalled"
	// ReasonDisabled: the feature is switched off in the spec.
	ReasonDisabled = "Disabled"
	// ReasonCreated: the object exists as specified.
	ReasonCreated = "Created"
	// ReasonAllReady: every member is ready.
	ReasonAllReady = "AllReady"
	// ReasonNotAllReady: some members are not ready yet.
	ReasonNotAllReady = "NotAllReady"
	// ReasonPrimaryNotReady: at least one shard has no ready primary.
	ReasonPrimaryNotReady = "PrimaryNotReady"
	// ReasonAsExpected: nothing is wrong.
	ReasonAsExpected = "AsExpected"
	// ReasonScaling: shards are being added or drained.
	ReasonScaling = "Scaling"
	// ReasonReconcileError: the last reconcile failed and is retried; the message says why.
	ReasonReconcileError = "ReconcileError"
	// ReasonInvalidSpec: the spec can never work (a check the API server cannot make); nothing is
	// retried until the spec changes. The message names the field.
	ReasonInvalidSpec = "InvalidSpec"
)

// FleetPhase summarises the conditions for `kubectl get`.
// +kubebuilder:validation:Enum=Pending;Provisioning;Ready;Degraded;Failed
type FleetPhase string

const (
	// PhasePending means nothing has been created yet.
	PhasePending FleetPhase = "Pending"
	// PhaseProvisioning means children exist but are not all ready.
	PhaseProvisioning FleetPhase = "Provisioning"
	// PhaseReady means the Ready condition is True.
	PhaseReady FleetPhase = "Ready"
	// PhaseDegraded means some shard has no ready primary.
	PhaseDegraded FleetPhase = "Degraded"
	// PhaseFailed means the controller cannot make progress; see the conditions.
	PhaseFailed FleetPhase = "Failed"
)

// CacheFleetStatus is the observed state of a fleet.
type CacheFleetStatus struct {
	// observedGeneration is the generation of the spec the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// phase summarises the conditions.
	// +optional
	Phase FleetPhase `json:"phase,omitempty"`

	// conditions: Ready, ShardsReady, AgentsReady, RingPublished, MonitoringReady, Degraded, Progressing.
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// desiredShards is the number of shards in the spec.
	// +optional
	DesiredShards int32 `json:"desiredShards,omitempty"`
	// readyShards is the number of shards whose primary is ready.
	// +optional
	ReadyShards int32 `json:"readyShards,omitempty"`
	// shards is "ready/desired", for kubectl.
	// +optional
	Shards string `json:"shards,omitempty"`

	// desiredAgents is the number of nodes that should run an agent.
	// +optional
	DesiredAgents int32 `json:"desiredAgents,omitempty"`
	// readyAgents is the number of ready agents.
	// +optional
	ReadyAgents int32 `json:"readyAgents,omitempty"`
	// convergedAgents is the number of agents that report serving the current ring epoch.
	// +optional
	ConvergedAgents int32 `json:"convergedAgents,omitempty"`
	// agents is "ready/desired", for kubectl.
	// +optional
	Agents string `json:"agents,omitempty"`

	// ringEpoch is the epoch of the published ring; it grows whenever routing changes.
	// +optional
	RingEpoch int64 `json:"ringEpoch,omitempty"`
	// ringChecksum is the SHA-256 of the published ring document.
	// +optional
	RingChecksum string `json:"ringChecksum,omitempty"`
	// invalidationChannel is the effective bus channel.
	// +optional
	InvalidationChannel string `json:"invalidationChannel,omitempty"`

	// primaries names each shard's primary pod: the controller assigns the role (pod 0 at first)
	// and moves it on failover.
	// +listType=map
	// +listMapKey=shard
	// +kubebuilder:validation:MaxItems=256
	// +optional
	Primaries []ShardPrimary `json:"primaries,omitempty"`
	// failovers counts the primaries the controller has replaced.
	// +optional
	Failovers int32 `json:"failovers,omitempty"`
	// lastFailoverTime is when the last one was.
	// +optional
	LastFailoverTime *metav1.Time `json:"lastFailoverTime,omitempty"`
}

// ShardPrimary is the pod holding a shard's primary role.
type ShardPrimary struct {
	// shard is the shard's name (shard-<index>).
	// +kubebuilder:validation:MaxLength=16
	Shard string `json:"shard"`
	// pod is the primary's pod name.
	// +kubebuilder:validation:MaxLength=63
	Pod string `json:"pod"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=cf,categories=cachefleet-all
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 40",message="metadata.name must be at most 40 characters: child names like <name>-shard-255-5 must stay valid"
// +kubebuilder:validation:XValidation:rule="!self.metadata.name.contains('.')",message="metadata.name must be a DNS label (no '.'): it names Services and StatefulSets"
// +kubebuilder:printcolumn:name="Shards",type=string,JSONPath=`.status.shards`,description="Shards with a ready primary / desired"
// +kubebuilder:printcolumn:name="Agents",type=string,JSONPath=`.status.agents`,description="Ready agents / desired"
// +kubebuilder:printcolumn:name="Epoch",type=integer,JSONPath=`.status.ringEpoch`,description="Published ring epoch"
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Failovers",type=integer,JSONPath=`.status.failovers`,priority=1,description="Primaries replaced by the controller"
// +kubebuilder:printcolumn:name="Last-Failover",type=date,JSONPath=`.status.lastFailoverTime`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// CacheFleet is a shared, sharded, two-tier cache: Valkey shards behind one agent per node.
type CacheFleet struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired fleet.
	// +kubebuilder:default={}
	// +optional
	Spec CacheFleetSpec `json:"spec,omitzero"`

	// status is the observed fleet.
	// +optional
	Status CacheFleetStatus `json:"status,omitzero"`
}

// +kubebuilder:object:root=true

// CacheFleetList is a list of CacheFleets.
type CacheFleetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []CacheFleet `json:"items"`
}
