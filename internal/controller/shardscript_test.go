package controller

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
)

// runStartScript runs the shard start script with sh, as the pod does, against the tests' shard
// server (valkey-server built from source under make test) in a temporary directory.
func runStartScript(t *testing.T, password string) (*tu.Redis, *exec.Cmd, *strings.Builder) {
	t.Helper()
	server := tu.ServerBinary()
	if _, err := exec.LookPath(server); err != nil {
		t.Fatalf("%s is required (hack/valkey-bins.sh): %v", server, err)
	}
	dir := t.TempDir()
	conf := strings.Replace(valkeyConfig(defaultedFleet()), "dir /data", "dir "+dir, 1)
	if err := os.WriteFile(filepath.Join(dir, "valkey.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &tu.Redis{Port: tu.FreePort(t), Password: password}
	script := strings.NewReplacer(
		"/etc/valkey/valkey.conf", filepath.Join(dir, "valkey.conf"),
		"/run/valkey/valkey.conf", filepath.Join(dir, "runtime.conf"),
		"exec valkey-server", "exec "+server,
	).Replace(shardStartScript)
	script = strings.TrimSpace(script) + " --port " + strconv.Itoa(r.Port) + "\n"
	cmd := exec.Command("sh", "-c", script)
	cmd.Env = append(os.Environ(), "VALKEY_PASSWORD="+password, "POD_NAME=web-shard-0-0", "PRIMARY_HOST=unused")
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return r, cmd, out
}

func TestShardStartScriptAcceptsPasswordsWithQuotesAndBackslashes(t *testing.T) {
	for _, pw := range []string{`plain`, `with "quotes"`, `back\slash\`, `\x41 \n $HOME 'single' #hash`} {
		r, _, out := runStartScript(t, pw)
		deadline := time.Now().Add(10 * time.Second)
		for {
			got, err := r.Do("PING")
			if err == nil && got == "PONG" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("password %q: no authenticated PONG (last: %q, %v)\n%s", pw, got, err, out)
			}
			time.Sleep(20 * time.Millisecond)
		}
		wrong := &tu.Redis{Port: r.Port, Password: pw + "x"}
		if got, _ := wrong.Do("PING"); got == "PONG" {
			t.Errorf("password %q: a wrong password was accepted", pw)
		}
	}
}

func TestShardStartScriptRefusesAMultiLinePassword(t *testing.T) {
	_, cmd, out := runStartScript(t, "line one\nline two")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(out.String(), "must be a single line") {
			t.Errorf("exit %v, output %q: want a failure that names the problem", err, out)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the script started a server with a multi-line password")
	}
}
