package server

import (
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/evloop"
)

// OutputLimits are the agent's output bounds (Config.Output), after Valkey's
// client-output-buffer-limit: what the agent holds for a client that its socket has not
// taken. A batch whose replies are over the hard limit is not written and the client is
// disconnected; over the soft limit, the client must take them within the soft time or is
// disconnected. A client that does not read therefore holds at most one batch's replies, for
// a bounded time, and the agent reads nothing more from it meanwhile.
type OutputLimits struct {
	HardBytes int64
	SoftBytes int64
	SoftFor   time.Duration
	// TotalBytes bounds the replies held for all clients at once (Valkey's
	// maxmemory-clients): the client whose batch would pass it is disconnected.
	TotalBytes int64
}

// DefaultOutputLimits fit the agent's default memory limit (256 MiB): a pipeline of 32 values
// of 1 MiB fits (Valkey's pub/sub class has the same hard limit); a client that stalls on more
// than 8 MiB for 10 s goes.
var DefaultOutputLimits = OutputLimits{HardBytes: 32 << 20, SoftBytes: 8 << 20, SoftFor: 10 * time.Second, TotalBytes: 128 << 20}

// A client's batches start small and double up to MaxBatch while their replies stay small
// (under 64 KiB a command): a pipeline of reads of large values is fetched a few at a time,
// so a client that does not read has the shards send little before its limits judge it.
const (
	firstBatch       = 4
	smallReplyPerCmd = 64 << 10
)

// adaptBatch sets how many pipelined commands the client's next batch may take, after one of
// n commands whose replies held held bytes.
func (c *client) adaptBatch(held int64, n, maxBatch int) {
	if held > int64(max(n, 1))*smallReplyPerCmd {
		c.batchLimit = min(firstBatch, maxBatch)
	} else {
		c.batchLimit = min(max(2*c.batchLimit, firstBatch), maxBatch)
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

// drainBacklog waits, before the next batch runs, for the client to take the replies the loop
// could not write: the agent reads no more of a pipeline whose replies are unread. A client
// that takes nothing within the soft time is let go (false).
func (s *Server) drainBacklog(c *client, ec *evloop.Conn) bool {
	if !c.wmu.TryLock() {
		return true // the loop is writing to it: the next batch checks again
	}
	defer c.wmu.Unlock()
	if s.cfg.Output.SoftFor <= 0 {
		_, err := ec.Write(nil)
		return err == nil
	}
	_ = ec.SetWriteDeadline(time.Now().Add(s.cfg.Output.SoftFor))
	_, err := ec.Write(nil) // writes the backlog first
	_ = ec.SetWriteDeadline(time.Time{})
	if err != nil {
		s.Stats.OutputLimitClosed.Add(1)
		return false
	}
	return true
}
