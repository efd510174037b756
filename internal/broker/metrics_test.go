//go:build linux

package broker_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

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
		`portres_enforcement_info{mode="hold",requested="hold"} 1`,
		`portres_build_info{goversion="go`,
		`portres_requests_total{code="NO_ERROR",op="persistent create"} 0`,
		`portres_clients 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestSweepReadsTablesOnce: a sweep reads each protocol's socket tables
// once, however many reservations have bound ports (each sweep once read
// them again per delegated block, under the lock: 300 blocks and 3,000
// sockets took show to 12 s).
func TestSweepReadsTablesOnce(t *testing.T) {
	b := testbroker.Start(t, func(c *broker.Config) { c.Metrics = "127.0.0.1:0"; c.Sweep = time.Hour }) // only show sweeps
	ctx := context.Background()
	c := b.Dial(t)
	for i := 0; i < 300; i++ {
		r, err := c.AcquireDelegated(ctx, portres.TCP, uint16(21000+i), 1)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", r.Start()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
	}
	for i := 0; i < 3000; i++ {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
	}
	reads0, sweeps0 := scrape(t, b, "portres_socket_table_reads_total"), scrape(t, b, "portres_sweep_duration_seconds_count")
	for i := 0; i < 5; i++ {
		infos, err := c.Show(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if bound := len(infos[len(infos)-1].Bound); bound != 1 {
			t.Fatalf("show: the last delegated block has %d bound ports, want 1", bound)
		}
	}
	reads, sweeps := scrape(t, b, "portres_socket_table_reads_total")-reads0, scrape(t, b, "portres_sweep_duration_seconds_count")-sweeps0
	if sweeps != 5 || reads > 2*sweeps {
		t.Errorf("%v sweeps read the socket tables %v times, want at most 2 each (TCP and UDP)", sweeps, reads)
	}
}

// scrape returns the value of the sample named metric (no labels).
func scrape(t *testing.T, b *testbroker.Broker, metric string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + b.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, metric+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics", metric)
	return 0
}

// TestKernelListWritesCoalesce: kernel-list changes that arrive together
// share a write (each used to write, read back and record the list under
// one lock, one after the other).
func TestKernelListWritesCoalesce(t *testing.T) {
	b := testbroker.Start(t, func(c *broker.Config) { c.Metrics = "127.0.0.1:0" })
	ctx := context.Background()
	before := scrape(t, b, "portres_kernel_list_writes_total")
	const clients, each = 16, 10
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		c := b.Dial(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < each; j++ {
				if _, err := c.AcquireDelegated(ctx, portres.UDP, 0, 1); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	writes := scrape(t, b, "portres_kernel_list_writes_total") - before
	if writes >= clients*each {
		t.Errorf("%v writes for %d concurrent delegated acquires: none shared", writes, clients*each)
	}
	t.Logf("%v writes for %d acquires", writes, clients*each)
	if list := reservedNow(t); len(list) == 0 {
		t.Error("the delegated blocks are not in the kernel list")
	}
}
