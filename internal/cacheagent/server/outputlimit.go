package server

import (
	"time"

	"github.com/valkey-io/valkey-go"
)

// Output limits, after Valkey's client-output-buffer-limit: what the agent holds for a client
// that its socket has not taken. A batch whose replies are over the hard limit is not written
// and the client is disconnected; over the soft limit, the client must take them within the
// soft time or is disconnected. A client that does not read therefore holds at most one
// batch's replies, for a bounded time, and the agent reads nothing more from it meanwhile.
// OutputLimits are the agent's per-client output bounds (Config.Output).
type OutputLimits struct {
	HardBytes int64
	SoftBytes int64
	SoftFor   time.Duration
	// TotalBytes bounds the replies held for all clients at once (Valkey's
	// maxmemory-clients): the client whose batch would pass it is disconnected.
	TotalBytes int64
}

// DefaultOutputLimits: a pipeline of 64 values of 1 MiB fits; a client that stalls on more
// than 16 MiB for 10 s goes.
var DefaultOutputLimits = OutputLimits{HardBytes: 64 << 20, SoftBytes: 16 << 20, SoftFor: 10 * time.Second, TotalBytes: 256 << 20}

// A client's batches start small and grow to MaxBatch while their replies stay small: a
// pipeline of reads of large values is fetched a few at a time, so a client that does not
// read has the shards send little before its limits judge it.
const (
	firstBatch     = 16
	smallReplyHeld = 1 << 20
)

// adaptBatch sets how many pipelined commands the client's next batch may take.
func (c *client) adaptBatch(held int64, maxBatch int) {
	if held > smallReplyHeld {
		c.batchLimit = firstBatch
	} else {
		c.batchLimit = maxBatch
	}
}

// holdOutput counts held bytes against the total for c until releaseOutput; false, with
// nothing counted, when they do not fit.
func (s *Server) holdOutput(c *client, held int64) bool {
	limit := s.cfg.Output.TotalBytes
	if limit > 0 && s.outputHeld.Add(held) > limit {
		s.outputHeld.Add(-held)
		return false
	}
	if limit <= 0 {
		return true
	}
	c.held += held
	return true
}

// releaseOutput gives back what c's written replies held.
func (s *Server) releaseOutput(c *client) {
	if c.held > 0 {
		s.outputHeld.Add(-c.held)
		c.held = 0
	}
}

// heldBytes is what the shards' replies of the batch hold, about.
func (b *batch) heldBytes() int64 {
	var n int64
	for i := range b.work {
		for j := range b.work[i].results {
			if m, err := b.work[i].results[j].ToMessage(); err == nil {
				n += messageBytes(&m)
			}
		}
	}
	return n
}

// messageBytes is a reply's payload size plus a little per element.
func messageBytes(m *valkey.ValkeyMessage) int64 {
	if s, err := m.ToString(); err == nil {
		return int64(len(s)) + 8
	}
	if arr, err := m.ToArray(); err == nil {
		n := int64(8)
		for i := range arr {
			n += messageBytes(&arr[i])
		}
		return n
	}
	return 16
}

// outputVerdict decides what to do with a batch holding held bytes for its client.
func (l OutputLimits) verdict(held int64) (disconnect bool, deadline time.Duration) {
	switch {
	case l.HardBytes > 0 && held > l.HardBytes:
		return true, 0
	case l.SoftBytes > 0 && held > l.SoftBytes:
		return false, l.SoftFor
	}
	return false, 0
}
