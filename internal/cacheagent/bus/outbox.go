package bus

import (
	"context"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
)

// An outbox sends one shard's messages in the order they were sealed: sequence numbers are
// assigned and queued under one lock, and each shard's queue goes out in order, pipelined.
// Receivers then see every sender's sequence in order on each shard, so concurrent publishers
// cause neither gaps (which flush their L1) nor messages mistaken for replays.
type outbox struct {
	ch chan outgoing
}

type outgoing struct {
	payload string
	sent    chan<- bool // told whether this shard took the message
}

// outboxSize bounds the messages queued for one shard; Publish waits when it is full.
const outboxSize = 4096

func newOutbox(sh *router.Shard, channel string) *outbox {
	ob := &outbox{ch: make(chan outgoing, outboxSize)}
	go ob.run(sh, channel)
	return ob
}

// run sends until the outbox is closed (its shard left the ring).
func (ob *outbox) run(sh *router.Shard, channel string) {
	batch := make([]outgoing, 0, 256)
	for first := range ob.ch {
		batch = append(batch[:0], first)
	fill:
		for len(batch) < cap(batch) {
			select {
			case o, ok := <-ob.ch:
				if !ok {
					break fill
				}
				batch = append(batch, o)
			default:
				break fill
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		res, err := sh.DoMulti(ctx, func(bd valkey.Builder) []valkey.Completed {
			cmds := make([]valkey.Completed, len(batch))
			for i, o := range batch {
				cmds[i] = bd.Publish().Channel(channel).Message(o.payload).Build()
			}
			return cmds
		})
		cancel()
		for i, o := range batch {
			o.sent <- err == nil && res[i].Error() == nil
		}
	}
}
