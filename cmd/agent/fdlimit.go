package main

import (
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/cachefleet/cachefleet/internal/cacheagent/server"
)

// reservedFiles are descriptors kept for what is not a client: listeners, epoll, shard and
// Kubernetes connections, WATCH connections. Valkey keeps 32; the agent has more peers.
const reservedFiles = 128

// fitClientsToFileLimit raises the open-files soft limit to the hard one and, as Valkey does,
// lowers MaxClients when the hard limit cannot hold them: an accept that runs out of
// descriptors refuses a client without telling it why.
func fitClientsToFileLimit(cfg *server.Config, log *slog.Logger) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		log.Warn("Could not read the open-files limit", "error", err)
		return
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
			log.Warn("Could not raise the open-files limit", "error", err)
			_ = unix.Getrlimit(unix.RLIMIT_NOFILE, &rl)
		}
	}
	if fit := maxClientsFor(rl.Cur); fit < uint64(cfg.MaxClients) {
		log.Warn("Lowered --max-clients to fit the open-files limit", "requested", cfg.MaxClients, "maxClients", fit, "openFilesLimit", rl.Cur)
		cfg.MaxClients = int(fit)
	}
}

// maxClientsFor is how many clients fit under an open-files limit.
func maxClientsFor(limit uint64) uint64 {
	if limit <= 2*reservedFiles {
		return max(limit/2, 1)
	}
	return limit - reservedFiles
}

// fitGCToMemoryLimit sets Go's soft memory limit to 90% of the container's (MEMORY_LIMIT, in
// bytes, which the operator fills from limits.memory), unless GOMEMLIMIT says otherwise: near
// the limit the GC runs more often instead of the kernel killing the agent.
func fitGCToMemoryLimit(log *slog.Logger) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	limit, err := strconv.ParseInt(os.Getenv("MEMORY_LIMIT"), 10, 64)
	if err != nil || limit <= 0 {
		return
	}
	debug.SetMemoryLimit(limit / 10 * 9)
	log.Info("Set the Go memory limit", "bytes", limit/10*9, "containerLimit", limit)
}
