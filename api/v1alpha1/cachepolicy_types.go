package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CachePolicySpec sets the rules for the keys of one fleet that start with keyPrefix. When several
// policies match a key, the longest prefix wins; keys matched by none use the fleet's defaults.
// Absent optional fields fall back to the fleet's settings.
// +kubebuilder:validation:XValidation:rule="!has(self.ttl) || !has(self.negativeCacheTTL) || duration(self.negativeCacheTTL) <= duration(self.ttl)",message="negativeCacheTTL must not exceed ttl",fieldPath=".negativeCacheTTL"
// +kubebuilder:validation:XValidation:rule="!has(self.negativeCacheTTL) || has(self.origin) || (has(self.stampedeProtection) && self.stampedeProtection.enabled)",message="negativeCacheTTL needs an origin or stampedeProtection.enabled: misses are recorded by the agent that asked the origin, or by the lease holder (CF.LMISS)",fieldPath=".negativeCacheTTL"
// +kubebuilder:validation:XValidation:rule="!has(self.staleWhileRevalidate) || has(self.origin)",message="staleWhileRevalidate needs an origin to revalidate from",fieldPath=".staleWhileRevalidate"
// +kubebuilder:validation:XValidation:rule="!has(self.staleIfError) || has(self.origin)",message="staleIfError needs an origin whose errors it covers",fieldPath=".staleIfError"
type CachePolicySpec struct {
	// fleetRef names the CacheFleet, in this namespace, the policy applies to.
	// +required
	FleetRef FleetReference `json:"fleetRef"`

	// keyPrefix selects the keys the policy applies to, e.g. "session:".
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +required
	KeyPrefix string `json:"keyPrefix"`

	// ttl is given to values written without an expiry. An expiry set by the client is kept and
	// never extended. Defaults to the fleet's tiers.l2.defaultTTL.
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="ttl must be positive"
	// +optional
	TTL *metav1.Duration `json:"ttl,omitempty"`

	// ttlJitterPercent adds up to this much random extra TTL to values given the policy TTL, so
	// keys written together do not expire together.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=50
	// +kubebuilder:default=0
	// +optional
	TTLJitterPercent int32 `json:"ttlJitterPercent"`

	// l1 controls the node-local tier for these keys.
	// +kubebuilder:default={}
	// +optional
	L1 PolicyL1 `json:"l1,omitzero"`

	// maxValueSize refuses larger values. Defaults to the fleet's tiers.l2.maxValueSize.
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).compareTo(quantity('1')) >= 0 && quantity(string(self)).compareTo(quantity('512Mi')) <= 0",message="maxValueSize must be between 1 byte and 512Mi"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$`
	// +optional
	MaxValueSize *resource.Quantity `json:"maxValueSize,omitempty"`

	// negativeCacheTTL caches "not found" answers for this long: a lease holder that finds
	// nothing at the origin records it with CF.LMISS, and CF.LGET then answers CFNOTFOUND
	// without sending anyone to the origin (plain reads see nil). Absent means misses are not
	// cached.
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:Type=string
	// +optional
	NegativeCacheTTL *metav1.Duration `json:"negativeCacheTTL,omitempty"`

	// origin makes the agents fill missing keys themselves (read-through): a GET or MGET of a
	// missing key asks the origin, once per key across the fleet, stores the answer with the
	// policy's ttl and returns it.
	// +optional
	Origin *Origin `json:"origin,omitempty"`

	// staleWhileRevalidate answers a value up to this long past its ttl at once, and refreshes
	// it from the origin in the background (once per key across the fleet). Needs origin.
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s') && duration(self) <= duration('24h')",message="staleWhileRevalidate must be between 0s (excluded) and 24h"
	// +optional
	StaleWhileRevalidate *metav1.Duration `json:"staleWhileRevalidate,omitempty"`

	// staleIfError answers a value up to this long past its ttl while the origin fails or times
	// out (the failure is counted); clients never wait longer than the origin's timeout. Needs
	// origin.
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s') && duration(self) <= duration('168h')",message="staleIfError must be between 0s (excluded) and 168h"
	// +optional
	StaleIfError *metav1.Duration `json:"staleIfError,omitempty"`

	// invalidateOnWrite makes a write through any agent drop every agent's L1 copy of the key.
	// +kubebuilder:default=true
	// +optional
	InvalidateOnWrite bool `json:"invalidateOnWrite"`

	// stampedeProtection lets one caller across the fleet refill a missing key while the others wait.
	// +kubebuilder:default={}
	// +optional
	StampedeProtection StampedeProtection `json:"stampedeProtection,omitzero"`

	// compression of values stored in L2.
	// +kubebuilder:default={}
	// +optional
	Compression Compression `json:"compression,omitzero"`
}

// Origin is the HTTP service a policy's keys are read through from.
type Origin struct {
	// url is fetched with GET for a missing key; {key} is replaced by the key without the
	// policy's prefix, escaped for where it stands (path or query).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.startsWith('http://') || self.startsWith('https://')",message="url must start with http:// or https://"
	// +kubebuilder:validation:XValidation:rule="self.contains('{key}')",message="url must contain {key}, where the key goes"
	// +kubebuilder:validation:XValidation:rule="isURL(self.replace('{key}', 'k'))",message="url is not a valid URL"
	// +required
	URL string `json:"url"`

	// timeout bounds one origin request, and how long a reader waits for one.
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10ms') && duration(self) <= duration('60s')",message="timeout must be between 10ms and 60s"
	// +kubebuilder:default="2s"
	// +optional
	Timeout metav1.Duration `json:"timeout,omitzero"`

	// headersFrom names a Secret in this namespace whose every key is sent as a request header
	// (an Authorization header, say); the agents are allowed to read it.
	// +optional
	HeadersFrom *SecretName `json:"headersFrom,omitempty"`

	// allowedStatusCodes are the answers stored as values. 404 and 410 mean "not found"
	// (cached for negativeCacheTTL, read as nil); any other status is an error.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:Minimum=200
	// +kubebuilder:validation:items:Maximum=299
	// +listType=set
	// +kubebuilder:default={200}
	// +optional
	AllowedStatusCodes []int32 `json:"allowedStatusCodes,omitempty"`
}

// SecretName names a Secret in the same namespace.
type SecretName struct {
	// name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +required
	Name string `json:"name"`
}

// FleetReference names a CacheFleet in the same namespace.
type FleetReference struct {
	// name of the CacheFleet.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=40
	// +required
	Name string `json:"name"`
}

// L1Mode chooses how L1 copies are kept fresh.
// +kubebuilder:validation:Enum=tracking;ttl
type L1Mode string

const (
	// L1Tracking uses server-assisted invalidation (RESP3 client tracking): any write, even one
	// made directly on Valkey, drops the L1 copy.
	L1Tracking L1Mode = "tracking"
	// L1TTL keeps copies until their L1 TTL ends or the bus invalidates them; staleness is
	// bounded by the TTL. Cheaper for hot keys that are rarely written.
	L1TTL L1Mode = "ttl"
)

// PolicyL1 controls the node-local tier for a policy's keys.
// +kubebuilder:validation:XValidation:rule="self.enabled || !has(self.ttl)",message="ttl is set but l1 is disabled",fieldPath=".ttl"
type PolicyL1 struct {
	// enabled keeps copies of these keys in L1 (if the fleet's L1 is on).
	// +kubebuilder:default=true
	// +optional
	Enabled bool `json:"enabled"`

	// ttl of L1 copies. Capped by the fleet's tiers.l1.maxTTL and the value's remaining L2 TTL.
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="ttl must be positive"
	// +optional
	TTL *metav1.Duration `json:"ttl,omitempty"`

	// mode chooses how copies are kept fresh.
	// +kubebuilder:default=tracking
	// +optional
	Mode L1Mode `json:"mode,omitempty"`
}

// StampedeProtection configures fleet-wide fill leases.
// +kubebuilder:validation:XValidation:rule="!has(self.leaseTTL) || (duration(self.leaseTTL) >= duration('100ms') && duration(self.leaseTTL) <= duration('5m'))",message="leaseTTL must be between 100ms and 5m",fieldPath=".leaseTTL"
type StampedeProtection struct {
	// enabled grants one fill lease per missing key; other callers wait for the fill.
	// +kubebuilder:default=false
	// +optional
	Enabled bool `json:"enabled"`

	// leaseTTL frees a key whose lease holder died.
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:Type=string
	// +kubebuilder:default="10s"
	// +optional
	LeaseTTL metav1.Duration `json:"leaseTTL,omitzero"`
}

// CompressionAlgorithm compresses values in L2.
// +kubebuilder:validation:Enum=none;zstd
type CompressionAlgorithm string

// Compression configures value compression.
type Compression struct {
	// algorithm compresses values; none stores them as written.
	// +kubebuilder:default=none
	// +optional
	Algorithm CompressionAlgorithm `json:"algorithm,omitempty"`

	// minSize: smaller values are stored uncompressed (compression would not pay for itself).
	// +kubebuilder:default="1Ki"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$`
	// +optional
	MinSize resource.Quantity `json:"minSize,omitzero"`
}

// Condition types and reasons of a CachePolicy.
const (
	// AcceptedCondition is True when the policy's fleet exists and the policy is in its ring.
	AcceptedCondition = "Accepted"
	// ConflictedCondition is True when an older policy of the same fleet has the same prefix;
	// the newer policy is left out of the ring.
	ConflictedCondition = "Conflicted"

	// ReasonFleetNotFound: fleetRef names no CacheFleet in this namespace.
	ReasonFleetNotFound = "FleetNotFound"
	// ReasonPrefixConflict: another policy of the fleet already owns the prefix.
	ReasonPrefixConflict = "PrefixConflict"
	// ReasonAccepted: the policy is part of the fleet's ring document.
	ReasonAccepted = "Accepted"
	// ReasonNoConflict: no other policy has the prefix.
	ReasonNoConflict = "NoConflict"
)

// PolicyPhase summarises a policy's conditions for `kubectl get`.
// +kubebuilder:validation:Enum=Accepted;Pending;Conflicted;FleetNotFound
type PolicyPhase string

// Policy phases.
const (
	// PolicyAccepted means the policy is in its fleet's ring.
	PolicyAccepted PolicyPhase = "Accepted"
	// PolicyPending means the policy is accepted but not yet in a published ring.
	PolicyPending PolicyPhase = "Pending"
	// PolicyConflicted means another policy of the fleet has the same key prefix.
	PolicyConflicted PolicyPhase = "Conflicted"
	// PolicyFleetNotFound means the fleet the policy refers to does not exist.
	PolicyFleetNotFound PolicyPhase = "FleetNotFound"
)

// CachePolicyStatus is the observed state of a policy.
type CachePolicyStatus struct {
	// observedGeneration is the generation of the spec the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// phase is Accepted, Pending, Conflicted or FleetNotFound, for kubectl.
	// +optional
	Phase PolicyPhase `json:"phase,omitempty"`

	// conditions: Accepted, Conflicted.
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// appliedRingEpoch is the fleet ring epoch that first carried this generation of the policy.
	// +optional
	AppliedRingEpoch int64 `json:"appliedRingEpoch,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=cpol,categories=cachefleet-all
// +kubebuilder:selectablefield:JSONPath=`.spec.fleetRef.name`
// +kubebuilder:printcolumn:name="Fleet",type=string,JSONPath=`.spec.fleetRef.name`
// +kubebuilder:printcolumn:name="Prefix",type=string,JSONPath=`.spec.keyPrefix`
// +kubebuilder:printcolumn:name="TTL",type=string,JSONPath=`.spec.ttl`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Origin",type=string,JSONPath=`.spec.origin.url`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// CachePolicy sets per-keyspace cache rules (TTL, jitter, size limit, L1, invalidation, stampede
// protection) for one CacheFleet. Changes apply live: agents follow the fleet's ring document.
type CachePolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the policy.
	// +required
	Spec CachePolicySpec `json:"spec"`

	// status is the observed policy.
	// +optional
	Status CachePolicyStatus `json:"status,omitzero"`
}

// +kubebuilder:object:root=true

// CachePolicyList is a list of CachePolicies.
type CachePolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []CachePolicy `json:"items"`
}
