package controller

import (
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
	"github.com/cachefleet/cachefleet/internal/contract"
)

// buildRingDocument is the unsealed ring document for the fleet and its accepted policies.
// Shards are listed in index order; their names, not addresses, are the ring's members.
func buildRingDocument(f *cachev1alpha1.CacheFleet, policies []cachev1alpha1.CachePolicy, roles shardRoles) *contract.Document {
	s := f.Spec
	doc := &contract.Document{
		SchemaVersion: contract.SchemaVersion,
		Fleet:         f.Name,
		Namespace:     f.Namespace,
		Algorithm:     string(s.Ring.Algorithm),
		Tiers: contract.Tiers{
			L1Enabled:        s.Tiers.L1.Enabled,
			L1MaxMemoryBytes: s.Tiers.L1.MaxMemory.Value(),
			L1MaxTTLMillis:   s.Tiers.L1.MaxTTL.Milliseconds(),
			DefaultTTLMillis: s.Tiers.L2.DefaultTTL.Milliseconds(),
			MinUsableMillis:  s.Tiers.L2.MinUsableTTL.Milliseconds(),
			MaxValueBytes:    s.Tiers.L2.MaxValueSize.Value(),
			AllowFlush:       s.Tiers.L2.AllowFlush,
		},
		Invalidation: contract.Invalidation{
			Channel: f.InvalidationChannel(),
			Secret:  contract.SecretRef(f.BusSecret()),
		},
		Auth: contract.Auth{Enabled: s.Auth.Enabled},
	}
	if doc.Algorithm == contract.AlgorithmKetama {
		doc.VirtualNodes = int(s.Ring.VirtualNodes)
	}
	if s.Auth.Enabled {
		ref := contract.SecretRef(f.PasswordSecret())
		doc.Auth.Secret = &ref
	}
	roles = roles.withDefaults(f)
	for i := 0; i < int(s.Shards.Count); i++ {
		primary := roles[shardName(i)]
		sh := contract.Shard{Name: shardName(i), Primary: podAddress(f, primary)}
		for o := 0; o <= int(s.Shards.Replicas); o++ {
			if pod := shardPodName(f, i, o); pod != primary {
				sh.Replicas = append(sh.Replicas, podAddress(f, pod))
			}
		}
		doc.Shards = append(doc.Shards, sh)
	}
	for i := range policies {
		doc.Policies = append(doc.Policies, compilePolicy(&policies[i]))
	}
	contract.SortPolicies(doc.Policies)
	return doc
}

// holdBackJoiningShards removes from doc the shards that previous did not have while any of
// them has no ready primary, and names them: a scale-up moves keys to new shards only once they
// can answer (otherwise writes to those keys fail and reads miss until they start), and all at
// once, so each key moves at most once (the warm-up knows only the layout before the last move).
// A first document, with no previous one, is published whole: there are no keys to move yet.
func holdBackJoiningShards(doc, previous *contract.Document, primaryReady func(shard string) bool) []string {
	if previous == nil {
		return nil
	}
	had := map[string]bool{}
	for _, sh := range previous.Shards {
		had[sh.Name] = true
	}
	var joining []string
	allReady := true
	for _, sh := range doc.Shards {
		if !had[sh.Name] {
			joining = append(joining, sh.Name)
			allReady = allReady && primaryReady(sh.Name)
		}
	}
	if allReady {
		return nil
	}
	doc.Shards = slices.DeleteFunc(doc.Shards, func(sh contract.Shard) bool { return !had[sh.Name] })
	return joining
}

// DefaultWarmUpWindow is spec.shards.warmUpWindow's default.
const DefaultWarmUpWindow = 10 * time.Minute

func warmUpWindow(f *cachev1alpha1.CacheFleet) time.Duration {
	if w := f.Spec.Shards.WarmUpWindow; w != nil {
		return w.Duration
	}
	return DefaultWarmUpWindow
}

// carryWarming sets doc's warm-up layout: previous's layout when this document moves keys to
// new owners, previous's own warm-up while it lasts when the layout is unchanged, none once it
// ended (which is also a new epoch, so the document says what is in effect). The window starts
// at now. A scale-in alone warms nothing: its keys move only off the removed shards, which
// agents do not consult.
func carryWarming(doc, previous *contract.Document, now time.Time, window time.Duration) {
	switch {
	case previous == nil || window <= 0:
		doc.Warming = nil
	case !doc.SameLayout(previous) && !onlyRemoves(doc, previous):
		doc.Warming = &contract.Warming{Epoch: previous.Epoch, Algorithm: previous.Algorithm,
			VirtualNodes: previous.VirtualNodes, Members: previous.Members(), UntilMillis: now.Add(window).UnixMilli()}
	case previous.Warming != nil && now.UnixMilli() < previous.Warming.UntilMillis:
		w := *previous.Warming
		doc.Warming = &w
	default:
		doc.Warming = nil
	}
}

// onlyRemoves reports whether doc is previous less some members, hashed the same way.
func onlyRemoves(doc, previous *contract.Document) bool {
	if doc.Algorithm != previous.Algorithm || doc.VirtualNodes != previous.VirtualNodes {
		return false
	}
	had := map[string]bool{}
	for _, name := range previous.Members() {
		had[name] = true
	}
	for _, name := range doc.Members() {
		if !had[name] {
			return false
		}
	}
	return true
}

func millis(d *metav1.Duration) int64 {
	if d == nil {
		return 0
	}
	return d.Milliseconds()
}

// compilePolicy turns a CachePolicy into its ring form; zero values mean "the fleet's setting".
func compilePolicy(p *cachev1alpha1.CachePolicy) contract.Policy {
	s := p.Spec
	out := contract.Policy{
		Name:              p.Name,
		Prefix:            s.KeyPrefix,
		TTLMillis:         millis(s.TTL),
		JitterPercent:     s.TTLJitterPercent,
		L1Enabled:         s.L1.Enabled,
		L1TTLMillis:       millis(s.L1.TTL),
		L1Mode:            string(s.L1.Mode),
		NegativeTTLMillis: millis(s.NegativeCacheTTL),
		InvalidateOnWrite: s.InvalidateOnWrite,
	}
	if s.MaxValueSize != nil {
		out.MaxValueBytes = s.MaxValueSize.Value()
	}
	if s.StampedeProtection.Enabled {
		out.LeaseTTLMillis = s.StampedeProtection.LeaseTTL.Milliseconds()
	}
	if s.Compression.Algorithm != "" && s.Compression.Algorithm != "none" {
		out.Compression = string(s.Compression.Algorithm)
		out.CompressionMinSize = s.Compression.MinSize.Value()
	}
	if o := s.Origin; o != nil {
		out.Origin = &contract.Origin{URL: o.URL, TimeoutMillis: o.Timeout.Milliseconds(), AllowedStatus: o.AllowedStatusCodes}
		if o.HeadersFrom != nil {
			out.Origin.HeadersSecret = o.HeadersFrom.Name
		}
		if len(out.Origin.AllowedStatus) == 0 { // defaulted by the API server; kept for objects built in code
			out.Origin.AllowedStatus = []int32{200}
		}
		if out.Origin.TimeoutMillis <= 0 {
			out.Origin.TimeoutMillis = 2000
		}
		out.StaleWhileRevalidateMillis = millis(s.StaleWhileRevalidate)
		out.StaleIfErrorMillis = millis(s.StaleIfError)
	}
	return out
}

// buildRingConfigMap publishes a sealed document. publishedAt records when its epoch first
// appeared, which bounds how long a scale-down waits for agents to converge.
func buildRingConfigMap(f *cachev1alpha1.CacheFleet, doc *contract.Document, publishedAt time.Time) (*corev1.ConfigMap, error) {
	data, err := doc.Encode()
	if err != nil {
		return nil, err
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: objectMeta(f, ringConfigMapName(f), ComponentRing),
		Data:       map[string]string{contract.DocumentKey: string(data)},
	}
	cm.Annotations = map[string]string{AnnotationPublishedAt: publishedAt.UTC().Format(time.RFC3339Nano)}
	return cm, nil
}
