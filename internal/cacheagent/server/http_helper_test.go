package server_test

import (
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cachefleet/cachefleet/internal/cacheagent/httpapi"
)

func httptestServer(t *testing.T, a *agent) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(a.srv.Collector())
	s := httptest.NewServer(httpapi.New(a.srv, reg, func() string { return string(busKey) }))
	t.Cleanup(s.Close)
	return s.URL
}
