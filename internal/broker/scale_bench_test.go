//go:build linux

package broker_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/testutil"
)

func init() { testutil.Helpers["fill"] = helperFill }

// helperFill holds N live one-port wildcard reservations (TCP and UDP
// alternating) on one connection; prints "ready" and holds until stdin
// closes.
func helperFill(args []string) int {
	ctx := context.Background()
	c, err := portres.Dial(ctx, "")
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	defer c.Close()
	for i := 0; i < mustAtoi(args[0]); i++ {
		proto := portres.TCP
		if i%2 == 1 {
			proto = portres.UDP
		}
		if _, err := c.Acquire(ctx, proto, 0, 1); err != nil {
			fmt.Println("error", err)
			return 1
		}
	}
	fmt.Println("ready")
	bufio.NewReader(os.Stdin).ReadString('\n')
	return 0
}

// BenchmarkScale measures acquire, release and disconnect (dial, acquire,
// close) with 10, 1,000 and 10,000 other reservations live, in hold and
// bpf mode, the broker and the reservations' holder being processes of
// their own. Each figure is the median of b.N operations (at least 200);
// the ratio is against the same operation with 10 live.
func BenchmarkScale(b *testing.B) {
	testutil.RequireRoot(b)
	n := max(b.N, 200)
	ctx := context.Background()
	type key struct {
		mode, op string
		live     int
	}
	res := map[key]float64{}
	for _, mode := range []string{broker.EnforceHold, broker.EnforceBPF} {
		dir := testutil.Dir(b)
		dc := daemonConfig{Socket: filepath.Join(dir, "portres.sock"), State: filepath.Join(dir, "state.db"),
			LogFile: filepath.Join(dir, "log"), Sweep: time.Second, Enforce: mode}
		if mode == broker.EnforceBPF {
			dc.Cgroup, _ = testutil.Cgroup(b)
		}
		stop := startDaemon(b, nil, dc)
		if mode == broker.EnforceBPF && !strings.Contains(daemonLog(dc.LogFile), "enforce=bpf") {
			stop()
			b.Logf("the eBPF guard did not load; bpf mode skipped")
			continue
		}
		env := append([]string{"PORTRES_SOCKET=" + dc.Socket}, quickExit()...)
		for _, live := range []int{10, 1000, 10000} {
			fill := testutil.StartHelper(b, "fill", env, fmt.Sprint(live))
			if l := fill.Line(5 * time.Minute); l != "ready" {
				b.Fatalf("fill %d: %s", live, l)
			}
			c, err := portres.Dial(ctx, dc.Socket)
			if err != nil {
				b.Fatal(err)
			}
			var acq, rel, disc []time.Duration
			for i := 0; i < n; i++ {
				t0 := time.Now()
				r, err := c.Acquire(ctx, portres.TCP, 0, 1)
				t1 := time.Now()
				if err == nil {
					err = r.Release(ctx)
				}
				if err != nil {
					b.Fatal(err)
				}
				acq, rel = append(acq, t1.Sub(t0)), append(rel, time.Since(t1))
				t0 = time.Now()
				dc, err := portres.Dial(ctx, dc.Socket)
				if err == nil {
					_, err = dc.Acquire(ctx, portres.TCP, 0, 1)
					dc.Close()
				}
				if err != nil {
					b.Fatal(err)
				}
				disc = append(disc, time.Since(t0))
			}
			c.Close()
			fill.Stdin.Close()
			fill.Wait()
			med := func(v []time.Duration) float64 {
				slices.Sort(v)
				return float64(v[len(v)/2].Nanoseconds()) / 1e3
			}
			res[key{mode, "acquire", live}] = med(acq)
			res[key{mode, "release", live}] = med(rel)
			res[key{mode, "dial+acquire+close", live}] = med(disc)
		}
		stop()
	}
	var out strings.Builder
	fmt.Fprintf(&out, "BenchmarkScale: medians of %d, µs, with 10 / 1,000 / 10,000 reservations live (ratio 10,000 : 10):\n", n)
	for _, mode := range []string{broker.EnforceHold, broker.EnforceBPF} {
		for _, op := range []string{"acquire", "release", "dial+acquire+close"} {
			a, c := res[key{mode, op, 10}], res[key{mode, op, 10000}]
			if a == 0 {
				continue
			}
			fmt.Fprintf(&out, "  %-4s %-20s %8.1f %8.1f %8.1f  %.2fx\n", mode, op, a, res[key{mode, op, 1000}], c, c/a)
			b.ReportMetric(c/a, mode+"-"+strings.ReplaceAll(op, "+", "-")+"-x")
		}
	}
	fmt.Print(out.String())
}
