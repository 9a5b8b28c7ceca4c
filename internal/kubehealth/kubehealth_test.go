package kubehealth

import (
	"os"
	"testing"
)

func TestCheckConnectionsOftenKeepsWhatTheEnvironmentSays(t *testing.T) {
	t.Setenv("HTTP2_READ_IDLE_TIMEOUT_SECONDS", "12")
	t.Setenv("HTTP2_PING_TIMEOUT_SECONDS", "")
	os.Unsetenv("HTTP2_PING_TIMEOUT_SECONDS")
	CheckConnectionsOften()
	if got := os.Getenv("HTTP2_READ_IDLE_TIMEOUT_SECONDS"); got != "12" {
		t.Errorf("read idle %q, want the environment's 12", got)
	}
	if got := os.Getenv("HTTP2_PING_TIMEOUT_SECONDS"); got != pingSeconds {
		t.Errorf("ping timeout %q, want %s", got, pingSeconds)
	}
}
