package server

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cachefleet/cachefleet/internal/cacheagent/codec"
	"github.com/cachefleet/cachefleet/internal/cacheagent/readthrough"
)

// Stats are the agent's counters: plain atomics on the hot path, turned into Prometheus
// metrics only when scraped (see Collector).
type Stats struct {
	requests         [numCommands][2]atomic.Int64 // ok, error
	L1Hits, L1Misses atomic.Int64
	L1NotAdmitted    atomic.Int64 // misses of a full L1 read as they are, not copied (l1.Admission)
	LoopHits         atomic.Int64 // L1 hits the event loop answered itself (inline.go)
	LoopForwards     atomic.Int64 // GETs and SETs the event loop forwarded to shards itself (forward.go)
	L2Hits, L2Misses atomic.Int64
	OversizeRejected atomic.Int64
	ProtocolErrors   atomic.Int64
	Clients          atomic.Int64
	BlockedClients   atomic.Int64 // clients waiting in a blocking command (BLPOP, XREAD BLOCK ...)
	RejectedClients  atomic.Int64 // connections refused over MaxClients
	AcceptErrors     atomic.Int64 // failed accepts (out of descriptors, say), retried
	Panics           atomic.Int64 // connections ended by a bug instead of the agent (conn.go: survive)
	// FunctionCopyFailures counts joining shards' rings applied without the function libraries.
	FunctionCopyFailures atomic.Int64
	// OutputLimitClosed counts clients disconnected over the output limits (outputlimit.go).
	OutputLimitClosed atomic.Int64
	RingEpoch         atomic.Int64
	TrackingClients   atomic.Int64 // connections with CLIENT TRACKING on
	TrackingPushes    atomic.Int64 // invalidation messages queued for tracking clients
	Warmup            WarmupStats
	Origin            readthrough.Stats
	latency           prometheus.Histogram
	policies          sync.Map // policy name -> *policyCounters (GET reads)
}

// policyCounters are one policy's GET reads: L1 hits, L1 misses, L2 hits, L2 misses.
type policyCounters [4]atomic.Int64

// forPolicy returns the counters of a policy ("" is the fleet's defaults); the set is bounded
// by the policies the ring has carried.
func (s *Stats) forPolicy(name string) *policyCounters {
	if name == "" {
		name = "default"
	}
	if pc, ok := s.policies.Load(name); ok {
		return pc.(*policyCounters)
	}
	pc, _ := s.policies.LoadOrStore(name, new(policyCounters))
	return pc.(*policyCounters)
}

func newStats() *Stats {
	return &Stats{latency: prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "cachefleet_agent", Name: "request_duration_seconds",
		Help:    "Time from reading a command to writing its reply.",
		Buckets: []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 100e-3, 1},
	})}
}

// count counts one request of cmd, answered or failed: every executor counts here, once per
// request, when its reply is written.
func (s *Stats) count(cmd *command, failed bool) {
	s.requests[cmd.id][boolIndex(failed)].Add(1)
}

// Requests returns the ok and error counts of a command.
func (s *Stats) Requests(name string) (ok, failed int64) {
	c := commandTable[name]
	if c == nil {
		return 0, 0
	}
	return s.requests[c.id][0].Load(), s.requests[c.id][1].Load()
}

// Collector exports the server's counters and its shards' state.
func (s *Server) Collector() prometheus.Collector { return &collector{s: s} }

type collector struct{ s *Server }

var (
	descRequests     = newDesc("cachefleet_agent_requests_total", "Commands answered, by command and result.", []string{"command", "result"}, nil)
	descHits         = newDesc("cachefleet_agent_cache_hits_total", "Reads answered by a tier.", []string{"tier"}, nil)
	descLoopForwards = newDesc("cachefleet_agent_loop_forwards_total", "GETs and SETs the event loop forwarded to shards on its own connections, without waking the connection's goroutine.", nil, nil)
	descLoopHits     = newDesc("cachefleet_agent_loop_hits_total", "L1 hits answered by the event loop without waking the connection's goroutine.", nil, nil)
	descNotAdmitted  = newDesc("cachefleet_agent_l1_not_admitted_total", "L1 misses not copied into the L1: once it is full, a key is copied on its second read within a window, and its first is read from the shard as it is.", nil, nil)
	descMisses       = newDesc("cachefleet_agent_cache_misses_total", "Reads a tier could not answer.", []string{"tier"}, nil)
	descOversize     = newDesc("cachefleet_agent_oversize_rejected_total", "Writes refused for exceeding the value size limit.", nil, nil)
	descUndecodable  = newDesc("cachefleet_agent_undecodable_values_total", "Values marked compressed that did not decompress; returned as stored.", nil, nil)
	descProto        = newDesc("cachefleet_agent_protocol_errors_total", "Connections closed for malformed frames.", nil, nil)
	descClients      = newDesc("cachefleet_agent_clients", "Open client connections.", nil, nil)
	descRejected     = newDesc("cachefleet_agent_rejected_clients_total", "Connections refused because --max-clients were open.", nil, nil)
	descOutputClosed = newDesc("cachefleet_agent_output_limit_disconnects_total", "Clients disconnected for holding more replies than the output limits allow (they did not read).", nil, nil)
	descAcceptErrors = newDesc("cachefleet_agent_accept_errors_total", "Accepts that failed (out of file descriptors, say) and were retried.", nil, nil)
	descPubsubMsgs   = newDesc("cachefleet_agent_pubsub_messages_total", "Pub/sub messages handed to this agent's subscribed clients.", nil, nil)
	descPubsubResub  = newDesc("cachefleet_agent_pubsub_resubscribes_total", "Pub/sub shard connections re-made with their subscriptions (messages published meanwhile were not heard).", nil, nil)
	descPubsubSubs   = newDesc("cachefleet_agent_pubsub_subscriptions", "Names this agent's clients are subscribed to, by kind (channel, pattern, shard_channel).", []string{"kind"}, nil)
	descFunctionCopy = newDesc("cachefleet_agent_function_copy_failures_total", "Rings applied while a joining shard could not be given the fleet's function libraries (FCALLs there answer that the function is missing; FUNCTION LOAD REPLACE through an agent loads it everywhere).", nil, nil)
	descPanics       = newDesc("cachefleet_agent_panics_total", "Client connections ended by a bug in the agent (a panic, logged with its stack) instead of the whole agent.", nil, nil)
	descEpoch        = newDesc("cachefleet_agent_ring_epoch", "Ring epoch being served.", nil, nil)
	descBreaker      = newDesc("cachefleet_agent_shard_breaker_state", "Circuit breaker state per shard: 0 closed, 1 half-open, 2 open.", []string{"shard"}, nil)
	descShardErr     = newDesc("cachefleet_agent_shard_errors_total", "Failed requests to a shard.", []string{"shard"}, nil)
	descReplicaReads = newDesc("cachefleet_agent_replica_reads_total", "Reads answered by a replica while the shard's primary was unavailable.", []string{"shard"}, nil)
	descResends      = newDesc("cachefleet_agent_switchover_resends_total", "Commands sent again to a shard's new primary after the old one, demoted by a switchover, refused them with READONLY.", []string{"shard"}, nil)
	descStaleRetry   = newDesc("cachefleet_agent_stale_connection_retries_total", "Requests retried on a fresh connection because the shard had closed the old one before they were sent.", []string{"shard"}, nil)
	descQueued       = newDesc("cachefleet_agent_deletes_queued_total", "Deletes queued for a shard that was down.", []string{"shard"}, nil)
	descReplayed     = newDesc("cachefleet_agent_deletes_replayed_total", "Queued deletes replayed after the shard returned.", []string{"shard"}, nil)
	descDropped      = newDesc("cachefleet_agent_deletes_dropped_total", "Deletes not queued because the queue was full.", []string{"shard"}, nil)
	descPending      = newDesc("cachefleet_agent_deletes_pending", "Deletes waiting for their shard.", []string{"shard"}, nil)
	descL1Bytes      = newDesc("cachefleet_agent_l1_bytes", "Approximate bytes held by the ttl-mode L1.", nil, nil)
	descLeases       = newDesc("cachefleet_agent_leases_total", "Stampede protection: leases granted, waits for another caller's fill, fills refused.", []string{"event"}, nil)
	descBus          = newDesc("cachefleet_agent_bus_messages_total", "Invalidation bus messages, by event: published, publish_failed, received, applied, duplicate.", []string{"event"}, nil)
	descBusRej       = newDesc("cachefleet_agent_bus_rejected_total", "Bus messages rejected, by reason (bad signature, expired, replayed, malformed, other fleet).", []string{"reason"}, nil)
	descBusGaps      = newDesc("cachefleet_agent_bus_gaps_total", "Gaps in a sender's sequence (L1 copies that rely on the bus were flushed).", nil, nil)
	descBusResub     = newDesc("cachefleet_agent_bus_resubscribes_total", "Bus subscriptions re-established.", nil, nil)
	descPolicyHits   = newDesc("cachefleet_agent_policy_hits_total", "GET reads (and MGET keys looked up in the L1) answered by a tier, by the key's policy.", []string{"policy", "tier"}, nil)
	descPolicyMisses = newDesc("cachefleet_agent_policy_misses_total", "GET reads (and MGET keys looked up in the L1) a tier could not answer, by the key's policy.", []string{"policy", "tier"}, nil)
	descTracking     = newDesc("cachefleet_agent_tracking_clients", "Client connections with CLIENT TRACKING on (client-side caching).", nil, nil)
	descTrackKeys    = newDesc("cachefleet_agent_tracking_keys", "Keys remembered as read by default-mode tracking clients.", nil, nil)
	descOriginReqs   = newDesc("cachefleet_agent_origin_requests_total", "Read-through: requests to policies' origins by result (ok, not_found, status, timeout, unreachable, too_large), and fetches not sent: the origin's breaker was open (breaker_open), its headers Secret unreadable (misconfigured).", []string{"result"}, nil)
	descRefreshes    = newDesc("cachefleet_agent_origin_refreshes_total", "Read-through: background refreshes of stale values sent to the origin (stale-while-revalidate).", nil, nil)
	descStale        = newDesc("cachefleet_agent_stale_answers_total", "Read-through: values past their TTL answered, by reason (revalidate: refreshed in the background; error: the origin failed).", []string{"reason"}, nil)
	descCoalesced    = newDesc("cachefleet_agent_origin_coalesced_total", "Read-through: readers answered by another reader's origin fetch, on this agent (agent) or another (fleet).", []string{"scope"}, nil)
	descUnstored     = newDesc("cachefleet_agent_origin_unstored_total", "Read-through: origin answers for keys whose shard was down, answered and not stored.", nil, nil)
	descWarmup       = newDesc("cachefleet_agent_warmup_total", "Warm-up after a change of ring members: reads of moved keys looked up on their previous owner (moved, absent, raced, superseded, unmoved) and previous copies dropped for writes.", []string{"result"}, nil)
	descTrackPushes  = newDesc("cachefleet_agent_tracking_invalidations_total", "Invalidation messages sent to tracking clients.", nil, nil)
)

// metricNames are every metric the agent exports, for the dashboard and alert checks.
var metricNames = []string{"cachefleet_agent_request_duration_seconds"}

func newDesc(name, help string, labels []string, constLabels prometheus.Labels) *prometheus.Desc {
	metricNames = append(metricNames, name)
	return prometheus.NewDesc(name, help, labels, constLabels)
}

// MetricNames lists the names of the agent's metrics (histograms without their suffixes).
func MetricNames() []string { return append([]string(nil), metricNames...) }

func (c *collector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for name, cmd := range commandTable {
		if ok := st.requests[cmd.id][0].Load(); ok > 0 {
			counter(descRequests, ok, name, "ok")
		}
		if failed := st.requests[cmd.id][1].Load(); failed > 0 {
			counter(descRequests, failed, name, "error")
		}
	}
	counter(descHits, st.L1Hits.Load(), "l1")
	counter(descHits, st.L2Hits.Load(), "l2")
	counter(descLoopHits, st.LoopHits.Load())
	counter(descNotAdmitted, st.L1NotAdmitted.Load())
	counter(descLoopForwards, st.LoopForwards.Load())
	counter(descMisses, st.L1Misses.Load(), "l1")
	counter(descMisses, st.L2Misses.Load(), "l2")
	st.policies.Range(func(k, v any) bool {
		name, pc := k.(string), v.(*policyCounters)
		counter(descPolicyHits, pc[0].Load(), name, "l1")
		counter(descPolicyMisses, pc[1].Load(), name, "l1")
		counter(descPolicyHits, pc[2].Load(), name, "l2")
		counter(descPolicyMisses, pc[3].Load(), name, "l2")
		return true
	})
	counter(descOversize, st.OversizeRejected.Load())
	counter(descUndecodable, codec.Corrupt.Load())
	counter(descProto, st.ProtocolErrors.Load())
	gauge(descClients, float64(st.Clients.Load()))
	counter(descRejected, st.RejectedClients.Load())
	counter(descAcceptErrors, st.AcceptErrors.Load())
	counter(descPanics, st.Panics.Load())
	counter(descFunctionCopy, st.FunctionCopyFailures.Load())
	counter(descPubsubMsgs, c.s.pubsub.Stats.Delivered.Load())
	counter(descPubsubResub, c.s.pubsub.Stats.Resubscribes.Load())
	channels, patterns, shardChannels := c.s.pubsub.Subscriptions()
	gauge(descPubsubSubs, float64(channels), "channel")
	gauge(descPubsubSubs, float64(patterns), "pattern")
	gauge(descPubsubSubs, float64(shardChannels), "shard_channel")
	counter(descOutputClosed, st.OutputLimitClosed.Load())
	gauge(descEpoch, float64(st.RingEpoch.Load()))
	gauge(descTracking, float64(st.TrackingClients.Load()))
	gauge(descTrackKeys, float64(c.s.tracking.Keys()))
	counter(descTrackPushes, st.TrackingPushes.Load())
	for _, v := range []struct {
		name string
		n    *atomic.Int64
	}{{"moved", &st.Warmup.Moved}, {"absent", &st.Warmup.Absent}, {"raced", &st.Warmup.Raced}, {"superseded", &st.Warmup.Superseded},
		{"unmoved", &st.Warmup.Unmoved}, {"dropped", &st.Warmup.Dropped}} {
		counter(descWarmup, v.n.Load(), v.name)
	}
	o := &st.Origin
	for _, v := range []struct {
		name string
		n    *atomic.Int64
	}{{"ok", &o.OK}, {"not_found", &o.NotFound}, {"status", &o.Status}, {"timeout", &o.Timeout}, {"unreachable", &o.Unreachable},
		{"too_large", &o.TooLarge}, {"breaker_open", &o.BreakerOpen}, {"misconfigured", &o.Misconfigured}} {
		counter(descOriginReqs, v.n.Load(), v.name)
	}
	counter(descRefreshes, o.Refreshes.Load())
	counter(descStale, o.StaleRevalidate.Load(), "revalidate")
	counter(descStale, o.StaleError.Load(), "error")
	counter(descCoalesced, o.CoalescedAgent.Load(), "agent")
	counter(descCoalesced, o.CoalescedFleet.Load(), "fleet")
	counter(descUnstored, o.Unstored.Load())
	if l1 := c.s.L1(); l1 != nil {
		gauge(descL1Bytes, float64(l1.Weight()))
	}
	if r := c.s.Router(); r != nil {
		for _, sh := range r.Shards {
			n := sh.Name()
			gauge(descBreaker, float64(sh.BreakerState()), n)
			counter(descShardErr, sh.Stats.Errors.Load(), n)
			counter(descReplicaReads, sh.Stats.ReplicaReads.Load(), n)
			counter(descStaleRetry, sh.Stats.StaleRetries.Load(), n)
			counter(descResends, sh.Stats.SwitchoverResends.Load(), n)
			counter(descQueued, sh.Stats.QueuedDeletes.Load(), n)
			counter(descReplayed, sh.Stats.ReplayedDeletes.Load(), n)
			counter(descDropped, sh.Stats.DroppedDeletes.Load(), n)
			gauge(descPending, float64(sh.Pending()), n)
		}
	}
	ls := &c.s.leases.Stats
	counter(descLeases, ls.Granted.Load(), "granted")
	counter(descLeases, ls.Waits.Load(), "waited")
	counter(descLeases, ls.FillsRefused.Load(), "fill_refused")
	if b := c.s.Bus(); b != nil {
		bs := &b.Stats
		counter(descBus, bs.Published.Load(), "published")
		counter(descBus, bs.PublishFailed.Load(), "publish_failed")
		counter(descBus, bs.Received.Load(), "received")
		counter(descBus, bs.Applied.Load(), "applied")
		counter(descBus, bs.Duplicates.Load(), "duplicate")
		counter(descBusGaps, bs.Gaps.Load())
		counter(descBusResub, bs.Resubscribes.Load())
		bs.Rejected.Range(func(k, v any) bool {
			counter(descBusRej, v.(interface{ Load() int64 }).Load(), k.(string))
			return true
		})
	}
	st.latency.Collect(ch)
}
