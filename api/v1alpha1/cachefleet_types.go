package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CacheFleetSpec is the desired state of a fleet: sharded Valkey (L2), one agent per node with a
// local L1 in front of it, and the ring and invalidation channel the agents share.
//
// Defaults are written into the object by the API server (+kubebuilder:default), so
// `kubectl get -o yaml` shows the effective configuration. The few values that depend on the
// object's name (invalidation channel, generated Secrets) are derived by the controller and
// reported in status and in the ring document.
type CacheFleetSpec struct {
	// shards configures the Valkey shards that hold the L2 tier.
	// +kubebuilder:default={}
	// +optional
	Shards ShardsSpec `json:"shards,omitzero"`

	// ring configures how keys are mapped to shards.
	// +kubebuilder:default={}
	// +optional
	Ring RingSpec `json:"ring,omitzero"`

	// tiers configures the node-local L1 and the sharded L2.
	// +kubebuilder:default={}
	// +optional
	Tiers TiersSpec `json:"tiers,omitzero"`

	// invalidation configures the channel agents use to invalidate each other's L1.
	// +kubebuilder:default={}
	// +optional
	Invalidation InvalidationSpec `json:"invalidation,omitzero"`

	// agent configures the per-node agent DaemonSet that applications talk to.
	// +kubebuilder:default={}
	// +optional
	Agent AgentSpec `json:"agent,omitzero"`

	// auth configures the password shared by shards and agents.
	// +kubebuilder:default={}
	// +optional
	Auth AuthSpec `json:"auth,omitzero"`

	// monitoring configures Prometheus scraping of the agents.
	// +kubebuilder:default={}
	// +optional
	Monitoring MonitoringSpec `json:"monitoring,omitzero"`
}

// EvictionPolicy is a Valkey maxmemory-policy.
// +kubebuilder:validation:Enum=allkeys-lru;allkeys-lfu;allkeys-random;volatile-lru;volatile-lfu;volatile-random;volatile-ttl;noeviction
type EvictionPolicy string

// ShardsSpec configures the Valkey shards.
// +kubebuilder:validation:XValidation:rule="has(self.maxMemory) || !has(self.resources) || (has(self.resources.limits) && 'memory' in self.resources.limits)",message="set maxMemory or resources.limits.memory: a cache without a memory bound is killed by the kubelet instead of evicting keys",fieldPath=".maxMemory"
type ShardsSpec struct {
	// count is the number of shards (each a primary plus its replicas).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=256
	// +kubebuilder:default=3
	// +optional
	Count int32 `json:"count,omitempty"`

	// replicas is the number of read replicas per shard, each replicating from the shard's primary.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=5
	// +kubebuilder:default=0
	// +optional
	Replicas int32 `json:"replicas"`

	// image is the Valkey container image.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:default="valkey/valkey:8.1.4"
	// +optional
	Image string `json:"image,omitempty"`

	// resources of the Valkey container. A memory limit is required unless maxMemory is set.
	// +kubebuilder:default={limits: {memory: "1Gi"}, requests: {cpu: "100m", memory: "1Gi"}}
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitzero"`

	// maxMemory is Valkey's maxmemory. When absent it is derived as 75% of the memory limit,
	// leaving headroom for replication buffers and allocator fragmentation.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$`
	// +optional
	MaxMemory *resource.Quantity `json:"maxMemory,omitempty"`

	// evictionPolicy is Valkey's maxmemory-policy.
	// +kubebuilder:default=allkeys-lru
	// +optional
	EvictionPolicy EvictionPolicy `json:"evictionPolicy,omitempty"`

	// scheduling places the shard pods. Replicas are kept off their primary's node by default.
	// +optional
	Scheduling Scheduling `json:"scheduling,omitzero"`

	// failoverAfter is how long a shard's primary may be unready (or gone) before the controller
	// promotes the replica with the most data. A primary that restarted empty while a replica
	// still holds the shard's data is replaced at once, whatever this says.
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:Type=string
	// +kubebuilder:default="5s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('10m')",message="failoverAfter must be between 1s and 10m"
	// +optional
	FailoverAfter metav1.Duration `json:"failoverAfter,omitzero"`

	// warmUpWindow is how long, after the ring's members change (a scale-up), a miss on a key's
	// new shard is looked up on the shard that held it before and copied over with its remaining
	// TTL. "0s" turns warm-up off.
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:Type=string
	// +kubebuilder:default="10m"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('24h')",message="warmUpWindow must be between 0s and 24h"
	// +optional
	WarmUpWindow *metav1.Duration `json:"warmUpWindow,omitempty"`

	// fencing stops a primary cut off from its replicas from taking writes that a failover
	// would then throw away (split brain). It applies to shards with replicas.
	// +kubebuilder:default={}
	// +optional
	Fencing FencingSpec `json:"fencing,omitzero"`

	// podDisruptionBudget limits voluntary disruptions to one pod per shard at a time.
	// It only takes effect when replicas > 0 (a single pod cannot keep serving while evicted).
	// +kubebuilder:default={}
	// +optional
	PodDisruptionBudget PodDisruptionBudgetSpec `json:"podDisruptionBudget,omitzero"`
}

// Scheduling constrains where pods run.
type Scheduling struct {
	// nodeSelector must match a node's labels for the pod to be scheduled there.
	// +kubebuilder:validation:MaxProperties=32
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// tolerations let pods run on tainted nodes.
	// +kubebuilder:validation:MaxItems=32
	// +listType=atomic
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// affinity replaces the default anti-affinity between a shard's pods when set.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`

	// topologySpreadConstraints spread the shard pods across zones or nodes.
	// +kubebuilder:validation:MaxItems=8
	// +listType=atomic
	// +optional
	TopologySpreadConstraints []corev1.TopologySpreadConstraint `json:"topologySpreadConstraints,omitempty"`
}

// PodDisruptionBudgetSpec switches the per-shard PodDisruptionBudget.
type PodDisruptionBudgetSpec struct {
	// enabled creates a PodDisruptionBudget (maxUnavailable 1) per shard that has replicas.
	// +kubebuilder:default=true
	// +optional
	Enabled bool `json:"enabled"`
}

// FencingSpec bounds how long a primary cut off from its replicas keeps taking writes.
type FencingSpec struct {
	// enabled makes a primary refuse writes (-NOREPLICAS) once no replica has acknowledged it for
	// maxLagSeconds: Valkey's min-replicas-to-write 1. The controller lifts it while the shard
	// has no replica that could take over (one being restarted, or unreachable), so a planned
	// restart or a lost replica does not stop writes; such a replica could not be promoted.
	// +kubebuilder:default=true
	// +optional
	Enabled bool `json:"enabled"`

	// maxLagSeconds is Valkey's min-replicas-max-lag: how long a replica may go unheard before
	// it no longer counts. A cut-off primary refuses writes about this long (plus up to a second)
	// after the cut; the writes it took before then are lost with the failover.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=60
	// +kubebuilder:default=2
	// +optional
	MaxLagSeconds int32 `json:"maxLagSeconds,omitempty"`
}

// HashAlgorithm names the consistent hash used to map keys to shards.
// +kubebuilder:validation:Enum=rendezvous;ketama
type HashAlgorithm string

const (
	// HashRendezvous is highest-random-weight hashing: the most even load and minimal movement.
	HashRendezvous HashAlgorithm = "rendezvous"
	// HashKetama is the ketama ring used by twemproxy and libmemcached, for compatibility.
	HashKetama HashAlgorithm = "ketama"
)

// RingSpec configures how keys are mapped to shards.
type RingSpec struct {
	// algorithm is the consistent hash. Members are stable shard names (shard-0, shard-1, ...),
	// never addresses, so pods moving between nodes never moves keys.
	// +kubebuilder:default=rendezvous
	// +optional
	Algorithm HashAlgorithm `json:"algorithm,omitempty"`

	// virtualNodes is the number of points per shard on the ketama ring. Ignored for rendezvous.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1024
	// +kubebuilder:default=160
	// +optional
	VirtualNodes int32 `json:"virtualNodes,omitempty"`
}

// TiersSpec configures the two cache tiers.
type TiersSpec struct {
	// l1 is the per-node cache inside each agent.
	// +kubebuilder:default={}
	// +optional
	L1 L1Spec `json:"l1,omitzero"`

	// l2 is the sharded Valkey tier.
	// +kubebuilder:default={}
	// +optional
	L2 L2Spec `json:"l2,omitzero"`
}

// L1Spec configures the node-local tier.
type L1Spec struct {
	// enabled turns the L1 on. Policies can still turn it off per key prefix.
	// +kubebuilder:default=true
	// +optional
	Enabled bool `json:"enabled"`

	// maxMemory bounds the L1 of each agent.
	// +kubebuilder:default="64Mi"
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).compareTo(quantity('1Mi')) >= 0",message="maxMemory must be at least 1Mi"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$`
	// +optional
	MaxMemory resource.Quantity `json:"maxMemory,omitzero"`

	// maxTTL is the longest time a value lives in L1, whatever a policy says: the bound on
	// staleness if an invalidation is ever lost.
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:Type=string
	// +kubebuilder:default="60s"
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="maxTTL must be positive: it bounds how stale an L1 copy can get"
	// +optional
	MaxTTL metav1.Duration `json:"maxTTL,omitzero"`
}

// L2Spec configures the sharded Valkey tier.
// +kubebuilder:validation:XValidation:rule="!has(self.minUsableTTL) || !has(self.defaultTTL) || duration(self.minUsableTTL) < duration(self.defaultTTL)",message="minUsableTTL must be shorter than defaultTTL",fieldPath=".minUsableTTL"
type L2Spec struct {
	// defaultTTL is given to values written without an expiry and matched by no policy.
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:Type=string
	// +kubebuilder:default="1h"
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="defaultTTL must be positive: a cache entry without expiry is never refreshed"
	// +optional
	DefaultTTL metav1.Duration `json:"defaultTTL,omitzero"`

	// minUsableTTL: values with less life left are not copied into L1 or between tiers.
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:Type=string
	// +kubebuilder:default="5s"
	// +optional
	MinUsableTTL metav1.Duration `json:"minUsableTTL,omitzero"`

	// maxValueSize is the largest value the agents accept; larger writes are refused, never truncated.
	// +kubebuilder:default="1Mi"
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).compareTo(quantity('1')) >= 0 && quantity(string(self)).compareTo(quantity('512Mi')) <= 0",message="maxValueSize must be between 1 byte and 512Mi (Valkey's largest string)"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$`
	// +optional
	MaxValueSize resource.Quantity `json:"maxValueSize,omitzero"`

	// allowFlush lets clients run FLUSHALL and FLUSHDB through the agents: they then empty
	// every shard and every agent's L1. Off by default: one command would empty the whole fleet.
	// +kubebuilder:default=false
	// +optional
	AllowFlush bool `json:"allowFlush,omitempty"`
}

// InvalidationSpec configures the invalidation bus.
type InvalidationSpec struct {
	// channel is the pub/sub channel of the bus. Defaults to "cachefleet:<namespace>/<name>".
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=200
	// +kubebuilder:validation:Pattern=`^[-._:/a-zA-Z0-9]+$`
	// +optional
	Channel string `json:"channel,omitempty"`

	// signingSecretRef holds the HMAC key that signs bus messages. When absent the controller
	// generates the Secret "<name>-bus" (key "key") once and never overwrites it.
	// +optional
	SigningSecretRef *SecretKeyRef `json:"signingSecretRef,omitempty"`
}

// AgentSpec configures the per-node agent.
// +kubebuilder:validation:XValidation:rule="!has(self.port) || !has(self.httpPort) || self.port != self.httpPort",message="port and httpPort must differ",fieldPath=".httpPort"
type AgentSpec struct {
	// image of the agent. When empty, the image the operator was released with.
	// +kubebuilder:validation:MaxLength=512
	// +optional
	Image string `json:"image,omitempty"`

	// port is where applications reach the agent with any Redis client.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +kubebuilder:default=6380
	// +optional
	Port int32 `json:"port,omitempty"`

	// httpPort serves health checks, metrics and the debug API.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +kubebuilder:default=8080
	// +optional
	HTTPPort int32 `json:"httpPort,omitempty"`

	// resources of the agent container. Size the memory limit above tiers.l1.maxMemory. A CPU
	// limit of n cores runs the agent on n threads; without one it runs on two.
	// +kubebuilder:default={limits: {memory: "256Mi"}, requests: {cpu: "100m", memory: "128Mi"}}
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitzero"`

	// nodeSelector limits the nodes that run an agent.
	// +kubebuilder:validation:MaxProperties=32
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// tolerations let agents run on tainted nodes.
	// +kubebuilder:validation:MaxItems=32
	// +listType=atomic
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// limits bound what clients may take from an agent, which every pod on the node shares.
	// +kubebuilder:default={}
	// +optional
	Limits AgentLimits `json:"limits,omitzero"`
}

// AgentLimits are an agent's bounds per client and in all, after Valkey's.
type AgentLimits struct {
	// maxClients is how many client connections an agent serves at once (Valkey's maxclients);
	// one more is answered "-ERR max number of clients reached" and closed. The agent lowers it
	// to fit its open-files limit, and says so in its log.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +kubebuilder:default=10000
	// +optional
	MaxClients int32 `json:"maxClients,omitempty"`

	// clientOutputBuffer bounds the replies an agent holds for clients that do not read them
	// (Valkey's client-output-buffer-limit, and maxmemory-clients for the total).
	// +kubebuilder:default={}
	// +optional
	ClientOutputBuffer ClientOutputBufferLimit `json:"clientOutputBuffer,omitzero"`
}

// ClientOutputBufferLimit bounds what an agent holds for one client and for all of them.
// +kubebuilder:validation:XValidation:rule="!has(self.soft) || !has(self.hard) || quantity(string(self.soft)).compareTo(quantity(string(self.hard))) <= 0",message="soft must not be over hard"
type ClientOutputBufferLimit struct {
	// hard: a client whose pending replies pass it is disconnected at once.
	// +kubebuilder:default="32Mi"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$`
	// +optional
	Hard resource.Quantity `json:"hard,omitzero"`

	// soft: a client whose pending replies pass it must take them within softSeconds.
	// +kubebuilder:default="8Mi"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$`
	// +optional
	Soft resource.Quantity `json:"soft,omitzero"`

	// softSeconds is how long a client may stay over soft.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=3600
	// +kubebuilder:default=10
	// +optional
	SoftSeconds int32 `json:"softSeconds,omitempty"`

	// total bounds the replies held for all clients at once; the client whose replies would
	// pass it is disconnected.
	// +kubebuilder:default="128Mi"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$`
	// +optional
	Total resource.Quantity `json:"total,omitzero"`
}

// AuthSpec configures authentication between clients, agents and shards.
// +kubebuilder:validation:XValidation:rule="self.enabled || !has(self.passwordSecretRef)",message="passwordSecretRef is set but auth is disabled",fieldPath=".passwordSecretRef"
type AuthSpec struct {
	// enabled requires a password on shards and agents.
	// +kubebuilder:default=true
	// +optional
	Enabled bool `json:"enabled"`

	// passwordSecretRef holds the password. When absent the controller generates the Secret
	// "<name>-auth" (key "password") once and never overwrites it.
	// +optional
	PasswordSecretRef *SecretKeyRef `json:"passwordSecretRef,omitempty"`
}

// MonitoringSpec configures Prometheus scraping.
type MonitoringSpec struct {
	// serviceMonitor creates a prometheus-operator ServiceMonitor for the agents.
	// +kubebuilder:default={}
	// +optional
	ServiceMonitor ServiceMonitorSpec `json:"serviceMonitor,omitzero"`
}

// ServiceMonitorSpec configures the agents' ServiceMonitor.
type ServiceMonitorSpec struct {
	// enabled creates the ServiceMonitor; it needs the monitoring.coreos.com CRDs installed.
	// +kubebuilder:default=false
	// +optional
	Enabled bool `json:"enabled"`

	// interval between scrapes.
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	// +kubebuilder:default="30s"
	// +optional
	Interval string `json:"interval,omitempty"`

	// labels are added to the ServiceMonitor, typically to match a Prometheus serviceMonitorSelector.
	// +kubebuilder:validation:MaxProperties=16
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
}
