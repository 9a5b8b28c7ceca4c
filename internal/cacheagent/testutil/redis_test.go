package testutil

import (
	"os"
	"testing"
)

// TestServersIgnoreTheWorkingDirectory: a dump.rdb left in the package directory (a replica's
// full sync once wrote one there; a newer server's cannot even be read by an older one) must
// neither stop a test server from starting nor fill it with data.
func TestServersIgnoreTheWorkingDirectory(t *testing.T) {
	if err := os.WriteFile("dump.rdb", []byte("REDIS0099 not a real snapshot"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove("dump.rdb") })
	r := StartRedis(t, "")
	if n, err := r.Do("DBSIZE"); err != nil || n != "0" {
		t.Errorf("DBSIZE = %q, %v; want an empty server", n, err)
	}
	r.Do("SET", "k", "v")
	r.Stop()
	r.Start()
	if n, _ := r.Do("DBSIZE"); n != "0" {
		t.Errorf("a restarted server holds %s keys, want none", n)
	}
}
