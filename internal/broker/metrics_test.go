package broker_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/testbroker"
)

// TestMetrics: /metrics reports reservations, bound ports and requests by
// operation and result code.
func TestMetrics(t *testing.T) {
	b := testbroker.Start(t, func(c *broker.Config) { c.Metrics = "127.0.0.1:0" })
	c := b.Dial(t)
	ctx := context.Background()
	r, err := c.Acquire(ctx, portres.UDP, 46900, 5)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := r.ListenPacket(ctx, "udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c.Acquire(ctx, portres.UDP, 46902, 1) // WSAEADDRINUSE
	resp, err := http.Get("http://" + b.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`portres_reservations{kind="runtime",proto="udp"} 1`,
		`portres_reserved_ports{kind="runtime",proto="udp"} 5`,
		`portres_bound_ports{kind="runtime",proto="udp"} 1`,
		`portres_placeholder_sockets 4`,
		`portres_requests_total{code="NO_ERROR",op="acquire"} 1`,
		`portres_requests_total{code="WSAEADDRINUSE",op="acquire"} 1`,
		`portres_requests_total{code="NO_ERROR",op="bind"} 1`,
		`portres_request_duration_seconds_count{op="acquire"} 2`,
		`portres_enforcement{mode="hold"} 1`,
		`portres_clients 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
