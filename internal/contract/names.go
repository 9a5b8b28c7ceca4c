package contract

// Names, labels and annotations the controller writes and the agents read (or the reverse).

// RingConfigMapName is the ConfigMap holding a fleet's ring document under DocumentKey.
func RingConfigMapName(fleet string) string { return fleet + "-ring" }

// AgentLeaseName is the Lease the agent on node renews with the ring epoch it serves.
func AgentLeaseName(fleet, node string) string { return fleet + "-agent-" + node }

// Labels and annotations.
const (
	LabelFleet     = "cachefleet.io/fleet"
	LabelComponent = "app.kubernetes.io/component"
	LabelPartOf    = "app.kubernetes.io/part-of"
	PartOf         = "cachefleet"

	// ComponentAgent labels agents' objects, their Leases included.
	ComponentAgent = "agent"

	// AnnotationRingEpoch is set by agents on their Lease: the ring epoch they serve.
	AnnotationRingEpoch = "cachefleet.io/ring-epoch"
	// AnnotationPublishedAt is set on the ring ConfigMap: when its epoch was published.
	AnnotationPublishedAt = "cachefleet.io/published-at"
	// AnnotationNode is set by agents on their Lease: the node they run on.
	AnnotationNode = "cachefleet.io/node"
	// AnnotationUnreachable is set by agents on their Lease: the shards whose primary they
	// cannot reach, and since when (FormatShardTimes).
	AnnotationUnreachable = "cachefleet.io/unreachable"
	// AnnotationRefusingWrites is set by agents on their Lease: the shards whose primary refuses
	// writes for want of a replica (fencing), and since when (FormatShardTimes).
	AnnotationRefusingWrites = "cachefleet.io/refusing-writes"
)
