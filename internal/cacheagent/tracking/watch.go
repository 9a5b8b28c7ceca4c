package tracking

import (
	"context"
	"sync"
	"time"

	"github.com/valkey-io/valkey-go"
)

// A Watcher follows every change on one shard over its own connection in BCAST mode, whoever
// makes it: this agent, another agent, a client on the shard itself, expiry or eviction.
// Changes it may have missed (the connection lost, the shard not reachable yet, FLUSHALL) are
// reported as nil, once when they happen and again once it follows again, so a value a client
// read while the watcher was blind is dropped after the watcher can see again.
type Watcher struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	following bool
	waiters   []chan struct{}
}

// WatchOptions configure a watcher.
type WatchOptions struct {
	Addr, Password string
	// Every is how often the connection is checked (and re-made after a loss).
	Every time.Duration
}

// Watch starts a watcher; onChange gets the changed keys (nil: assume everything changed).
func Watch(o WatchOptions, onChange func(keys []string)) *Watcher {
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watcher{cancel: cancel, done: make(chan struct{})}
	if o.Every <= 0 {
		o.Every = time.Second
	}
	go w.run(ctx, o, onChange)
	return w
}

func (w *Watcher) run(ctx context.Context, o WatchOptions, onChange func(keys []string)) {
	defer close(w.done)
	var (
		mu   sync.Mutex
		lost = true // until the first subscription is confirmed
	)
	opt := valkey.ClientOption{
		InitAddress: []string{o.Addr}, Password: o.Password, DisableRetry: true,
		ForceSingleClient: true, PipelineMultiplex: -1, CacheSizeEachConn: 1, // its cache is never used
		ClientTrackingOptions: []string{"BCAST"},
		OnInvalidations: func(msgs []valkey.ValkeyMessage) {
			if msgs == nil { // the connection closed, or the shard was flushed
				mu.Lock()
				lost = true
				mu.Unlock()
				w.setFollowing(false)
				onChange(nil)
				return
			}
			keys := make([]string, 0, len(msgs))
			for _, m := range msgs {
				if k, err := m.ToString(); err == nil {
					keys = append(keys, k)
				}
			}
			onChange(keys)
		},
	}
	var client valkey.Client
	defer func() {
		if client != nil {
			client.Close()
		}
	}()
	tick := time.NewTicker(o.Every)
	defer tick.Stop()
	for {
		if client == nil {
			if c, err := valkey.NewClient(opt); err == nil {
				client = c
			}
		}
		if client != nil {
			pctx, cancel := context.WithTimeout(ctx, o.Every)
			err := client.Do(pctx, client.B().Ping().Build()).Error()
			cancel()
			mu.Lock()
			wasLost := lost
			lost = err != nil
			mu.Unlock()
			switch {
			case err != nil:
				w.setFollowing(false)
			case wasLost:
				// Following again: whatever was read while blind goes.
				onChange(nil)
				w.setFollowing(true)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (w *Watcher) setFollowing(v bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.following = v
	if v {
		for _, ch := range w.waiters {
			close(ch)
		}
		w.waiters = nil
	}
}

// WaitFollowing returns when the watcher follows the shard, or when ctx ends (false).
func (w *Watcher) WaitFollowing(ctx context.Context) bool {
	w.mu.Lock()
	if w.following {
		w.mu.Unlock()
		return true
	}
	ch := make(chan struct{})
	w.waiters = append(w.waiters, ch)
	w.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	}
}

// Following reports whether the watcher currently follows the shard.
func (w *Watcher) Following() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.following
}

// Stop ends the watcher and waits for it.
func (w *Watcher) Stop() {
	w.cancel()
	<-w.done
}
