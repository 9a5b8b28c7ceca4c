// Package kubehealth shortens how long a process keeps talking to the API server over a
// connection that died without a close (a node cut off, then healed): client-go's HTTP/2 health
// check pings an idle connection after 30 s and gives it 15 s more by default, and meanwhile
// every watch on it is silently stale. A manager that wins the leader lease in that window acts
// on a cache that misses whatever changed since (in the node-loss tests: a whole new fleet, never
// failed over).
package kubehealth

import "os"

// Defaults: a dead connection is noticed within 10 s. Set before the first client is built;
// the environment still wins (HTTP2_READ_IDLE_TIMEOUT_SECONDS, HTTP2_PING_TIMEOUT_SECONDS).
const (
	readIdleSeconds = "5"
	pingSeconds     = "5"
)

// CheckConnectionsOften sets client-go's HTTP/2 health check to the defaults above, unless the
// environment sets it.
func CheckConnectionsOften() {
	for name, v := range map[string]string{"HTTP2_READ_IDLE_TIMEOUT_SECONDS": readIdleSeconds, "HTTP2_PING_TIMEOUT_SECONDS": pingSeconds} {
		if _, set := os.LookupEnv(name); !set {
			_ = os.Setenv(name, v)
		}
	}
}
