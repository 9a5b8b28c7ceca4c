// Package testutil starts real shard server processes (valkey-server under make test; redis-server
// where a test is about compatibility with it, or Valkey is not built) and agents for
// integration tests.
package testutil

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ServerBinary is the shard server the tests run: $CACHEFLEET_SHARD_SERVER (make test points
// it at valkey-server built from source), else redis-server (the same protocol and flags).
func ServerBinary() string {
	if b := os.Getenv("CACHEFLEET_SHARD_SERVER"); b != "" {
		return b
	}
	return "redis-server"
}

// Redis is a shard server process (valkey-server or redis-server) on a loopback port.
type Redis struct {
	Port     int
	Password string
	// ReplicaOf is the port of the primary this server replicates, 0 for a primary.
	ReplicaOf int
	// dir is the server's own working directory: a replica writes the RDB of its full sync
	// there, which must neither land in the package directory nor be loaded by a later start.
	dir    string
	cmd    *exec.Cmd
	exited chan struct{}
	t      testing.TB
}

// FreePort returns a loopback port that is free now, picked at random below the kernel's
// ephemeral range (32768 and up). Ports from bind(0) are also handed out as source ports of
// outgoing connections and to the other test processes running in parallel, so they can be
// taken before the process meant to use them binds them.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 200 {
		port := 20000 + rand.IntN(12000)
		if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no free loopback port between 20000 and 32000")
	return 0
}

// StartRedis starts redis-server without persistence; it is stopped when the test ends.
// The test fails (never skips) when redis-server is missing: CI installs it.
func StartRedis(t testing.TB, password string) *Redis {
	t.Helper()
	return startRedis(t, &Redis{Password: password, t: t})
}

// StartReplica starts a replica of primary.
func StartReplica(t testing.TB, primary *Redis) *Redis {
	t.Helper()
	return startRedis(t, &Redis{Password: primary.Password, ReplicaOf: primary.Port, t: t})
}

func startRedis(t testing.TB, r *Redis) *Redis {
	t.Helper()
	if _, err := exec.LookPath(ServerBinary()); err != nil {
		t.Fatalf("%s is required for this test (hack/valkey-bins.sh builds valkey-server; apt-get install redis-server): %v", ServerBinary(), err)
	}
	t.Cleanup(r.Stop)
	r.dir = t.TempDir()
	var err error
	for range 5 { // another process may take the port first: pick another
		r.Port = FreePort(t)
		if err = r.start(); err == nil {
			return r
		}
	}
	t.Fatal(err)
	return nil
}

// Addr is host:port.
func (r *Redis) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.Port) }

// Start (re)starts the process on the same port with an empty dataset.
func (r *Redis) Start() {
	r.t.Helper()
	if err := r.start(); err != nil {
		r.t.Fatal(err)
	}
}

// start runs redis-server and waits until it answers. It checks the answer comes from this
// process, not from another server that holds the port.
func (r *Redis) start() error {
	// A (re)started shard comes back empty, as a restarted cache does.
	_ = os.Remove(filepath.Join(r.dir, "dump.rdb"))
	args := []string{"--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no",
		"--loglevel", "warning", "--repl-diskless-sync-delay", "0", "--dir", r.dir}
	if r.Password != "" {
		args = append(args, "--requirepass", r.Password, "--masterauth", r.Password)
	}
	if r.ReplicaOf != 0 {
		args = append(args, "--replicaof", "127.0.0.1", strconv.Itoa(r.ReplicaOf))
	}
	cmd := exec.Command(ServerBinary(), args...)
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	r.cmd, r.exited = cmd, exited
	want := "process_id:" + strconv.Itoa(cmd.Process.Pid) + "\r\n"
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			r.cmd = nil
			return fmt.Errorf("redis-server on port %d exited at start (port taken?)", r.Port)
		default:
		}
		if info, err := r.Do("INFO", "server"); err == nil && strings.Contains(info, want) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.Stop()
	return fmt.Errorf("redis-server on port %d did not start", r.Port)
}

// Stop kills the process.
func (r *Redis) Stop() {
	if r.cmd != nil {
		r.cmd.Process.Kill()
		<-r.exited
		r.cmd = nil
	}
}

// Do sends one command straight to the shard (bypassing agents) and returns the reply as text.
func (r *Redis) Do(args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", r.Addr(), time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	rd := bufio.NewReader(conn)
	if r.Password != "" {
		if _, err := RoundTrip(conn, rd, "AUTH", r.Password); err != nil {
			return "", err
		}
	}
	return RoundTrip(conn, rd, args...)
}

// RoundTrip writes one command as a RESP array and reads one reply.
func RoundTrip(conn net.Conn, rd *bufio.Reader, args ...string) (string, error) {
	if _, err := conn.Write(Encode(args...)); err != nil {
		return "", err
	}
	return ReadReply(rd)
}

// Encode renders a command as a RESP array.
func Encode(args ...string) []byte {
	var sb strings.Builder
	fmt.Fprintf(&sb, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&sb, "$%d\r\n%s\r\n", len(a), a)
	}
	return []byte(sb.String())
}

// ReadReply reads one reply and renders it as text: errors as "ERR:...", nil as "(nil)",
// arrays (maps, sets) as "[a b c]", RESP3 pushes as "push[invalidate [k]]".
func ReadReply(rd *bufio.Reader) (string, error) {
	line, err := rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("empty reply line")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "ERR:" + line[1:], nil
	case '_':
		return "(nil)", nil
	case '$', '=':
		n, _ := strconv.Atoi(line[1:])
		if n < 0 {
			return "(nil)", nil
		}
		buf := make([]byte, n+2)
		if _, err := readFull(rd, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case '*', '%', '~', '>':
		n, _ := strconv.Atoi(line[1:])
		if n < 0 {
			return "(nil)", nil
		}
		if line[0] == '%' {
			n *= 2
		}
		parts := make([]string, n)
		for i := range parts {
			if parts[i], err = ReadReply(rd); err != nil {
				return "", err
			}
		}
		if line[0] == '>' { // out-of-band: marked so tests tell it from a reply
			return "push[" + strings.Join(parts, " ") + "]", nil
		}
		return "[" + strings.Join(parts, " ") + "]", nil
	}
	return "", fmt.Errorf("unknown reply %q", line)
}

func readFull(rd *bufio.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := rd.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// ReadRaw reads one reply and returns its exact bytes (RESP2 or RESP3), for byte-for-byte
// comparisons with a real server.
func ReadRaw(rd *bufio.Reader) ([]byte, error) {
	line, err := rd.ReadBytes('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 3 {
		return nil, fmt.Errorf("short reply line %q", line)
	}
	out := line
	n, _ := strconv.Atoi(string(line[1 : len(line)-2]))
	switch line[0] {
	case '$', '=', '!':
		if n < 0 {
			return out, nil
		}
		buf := make([]byte, n+2)
		if _, err := readFull(rd, buf); err != nil {
			return nil, err
		}
		return append(out, buf...), nil
	case '*', '~', '>', '%', '|':
		if line[0] == '%' || line[0] == '|' {
			n *= 2
		}
		for range max(n, 0) {
			elem, err := ReadRaw(rd)
			if err != nil {
				return nil, err
			}
			out = append(out, elem...)
		}
		if line[0] == '|' { // an attribute precedes the reply it annotates
			next, err := ReadRaw(rd)
			if err != nil {
				return nil, err
			}
			out = append(out, next...)
		}
	}
	return out, nil
}

// Freeze stops the process (SIGSTOP) until Thaw: it keeps its connections but answers nothing,
// like a server stalled by its machine.
func (r *Redis) Freeze() { r.signal(syscall.SIGSTOP) }

// Thaw lets a frozen process run again.
func (r *Redis) Thaw() { r.signal(syscall.SIGCONT) }

func (r *Redis) signal(sig syscall.Signal) {
	if r.cmd == nil {
		r.t.Fatalf("server on port %d is not running", r.Port)
	}
	if err := r.cmd.Process.Signal(sig); err != nil {
		r.t.Fatal(err)
	}
}

// Pid is the server's process id.
func (r *Redis) Pid() int { return r.cmd.Process.Pid }
