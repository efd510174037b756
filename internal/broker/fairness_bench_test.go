//go:build linux

package broker_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/testutil"
	"golang.org/x/sys/unix"
)

// The fairness benchmark runs the broker, a victim, a flooding client and
// a loaded host as separate processes, as users run them.
func init() {
	testutil.Helpers["victim"] = helperVictim
	testutil.Helpers["flood"] = helperFlood
	testutil.Helpers["load"] = helperLoad
}

// helperVictim times N acquire+release cycles of one wildcard port, 200 µs
// apart (a busy client, but within the default per-user request rate, so
// that the limiter never paces it), and prints "p50 P99 MAX" in
// microseconds.
func helperVictim(args []string) int {
	ctx := context.Background()
	n := mustAtoi(args[0])
	c, err := portres.Dial(ctx, "")
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	defer c.Close()
	lat := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		t0 := time.Now()
		r, err := c.Acquire(ctx, portres.TCP, 0, 1)
		if err == nil {
			err = r.Release(ctx)
		}
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		lat = append(lat, time.Since(t0))
		time.Sleep(200 * time.Microsecond)
	}
	slices.Sort(lat)
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	fmt.Printf("%.1f %.1f %.1f\n", us(lat[len(lat)/2]), us(lat[len(lat)*99/100]), us(lat[len(lat)-1]))
	return 0
}

// helperFlood floods the broker from CONNS connections, each asking
// acquire+release as fast as it can, until stdin closes; it prints
// "ready" once flooding and "done N" with the number of requests.
func helperFlood(args []string) int {
	ctx := context.Background()
	conns := mustAtoi(args[0])
	var stop atomic.Bool
	var total atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < conns; i++ {
		c, err := portres.Dial(ctx, "")
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			for !stop.Load() {
				if r, err := c.Acquire(ctx, portres.UDP, 0, 1); err == nil {
					r.Release(ctx)
				}
				total.Add(2)
			}
		}()
	}
	fmt.Println("ready")
	bufio.NewReader(os.Stdin).ReadString('\n')
	stop.Store(true)
	wg.Wait()
	fmt.Println("done", total.Load())
	return 0
}

// helperLoad makes the host busy: BLOCKS delegated 1-port reservations,
// each with a listening socket on its port, and SOCKETS other sockets
// (bound UDP and listening TCP on loopback); prints "ready" and holds until stdin closes.
func helperLoad(args []string) int {
	ctx := context.Background()
	blocks, sockets := mustAtoi(args[0]), mustAtoi(args[1])
	c, err := portres.Dial(ctx, "")
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	defer c.Close()
	for i := 0; i < blocks; i++ {
		r, err := c.AcquireDelegated(ctx, portres.TCP, uint16(20000+i), 1)
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		fd, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(r.Start())}); err != nil {
			fmt.Println("error: bind", r.Start(), err)
			return 1
		}
		unix.Listen(fd, 1)
	}
	for i := 0; i < sockets; i++ {
		typ := unix.SOCK_DGRAM // half UDP, half listening TCP: the ephemeral range holds 10,000 of each
		if i%2 == 1 {
			typ = unix.SOCK_STREAM
		}
		fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			err = unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
		}
		if err == nil && typ == unix.SOCK_STREAM {
			err = unix.Listen(fd, 1)
		}
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
	}
	fmt.Println("ready")
	bufio.NewReader(os.Stdin).ReadString('\n')
	return 0
}

// BenchmarkFairness measures a victim's acquire+release latency (p50,
// p99) on its own, while another uid floods the broker from 8
// connections, and on a host with 2,000 delegated blocks whose ports are
// bound plus 12,000 other sockets (where each sweep and show reads the
// socket tables), with and without the flood. Every party is a process
// of its own; ratios are against the unloaded victim of the same run.
// b.N is the victim's number of cycles per scenario.
func BenchmarkFairness(b *testing.B) {
	testutil.RequireRoot(b)
	dir := testutil.Dir(b)
	dc := daemonConfig{Socket: filepath.Join(dir, "portres.sock"), State: filepath.Join(dir, "state.db"), LogFile: filepath.Join(dir, "log"), Sweep: time.Second}
	if mode := os.Getenv("BENCH_ENFORCE"); mode == broker.EnforceBPF { // default: hold
		dc.Enforce = mode
		dc.Cgroup, _ = testutil.Cgroup(b)
	}
	var denv []string
	if e := os.Getenv("BENCH_DAEMON_ENV"); e != "" {
		denv = append(denv, e)
	}
	defer startDaemon(b, nil, dc, denv...)()
	env := append([]string{"PORTRES_SOCKET=" + dc.Socket}, quickExit()...)
	n := max(b.N, 200)
	victim := func() (p50, p99 float64) {
		v := testutil.StartHelperAs(b, nobodyCred, "victim", env, strconv.Itoa(n))
		f := strings.Fields(v.Line(5 * time.Minute))
		if len(f) != 3 {
			b.Fatalf("victim: %v", f)
		}
		v.Wait()
		p50, _ = strconv.ParseFloat(f[0], 64)
		p99, _ = strconv.ParseFloat(f[1], 64)
		return
	}
	flood := func() func() {
		fl := testutil.StartHelperAs(b, &syscall.Credential{Uid: 65533, Gid: 65533}, "flood", env, "8")
		if l := fl.Line(10 * time.Second); l != "ready" {
			b.Fatalf("flood: %s", l)
		}
		return func() { fl.Stdin.Close(); fl.Line(time.Minute); fl.Wait() }
	}
	// Scenarios are interleaved over rounds (a victim run alone, then one
	// under the flood) and each figure is the median over the rounds, so
	// that a noisy moment of the machine does not decide a ratio.
	rounds := 3
	if r, err := strconv.Atoi(os.Getenv("BENCH_ROUNDS")); err == nil && r > 0 {
		rounds = r
	}
	type figures struct{ p50, p99 []float64 }
	pair := func(alone, flooded *figures) {
		for r := 0; r < rounds; r++ {
			p50, p99 := victim()
			alone.p50, alone.p99 = append(alone.p50, p50), append(alone.p99, p99)
			stop := flood()
			p50, p99 = victim()
			stop()
			flooded.p50, flooded.p99 = append(flooded.p50, p50), append(flooded.p99, p99)
		}
	}
	var base, fl, ld, lf figures
	b.ResetTimer()
	pair(&base, &fl)
	b.StopTimer()

	load := testutil.StartHelper(b, "load", env, "2000", "12000")
	if l := load.Line(2 * time.Minute); l != "ready" {
		b.Fatalf("load: %s", l)
	}
	defer load.Wait()
	ctx := context.Background()
	c, err := portres.Dial(ctx, dc.Socket)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	t0 := time.Now()
	infos, err := c.Show(ctx)
	if err != nil || len(infos) < 2000 {
		b.Fatalf("show: %d entries, %v", len(infos), err)
	}
	show := time.Since(t0)
	b.StartTimer()
	pair(&ld, &lf)
	b.StopTimer()
	load.Stdin.Close()

	med := func(v []float64) float64 { slices.Sort(v); return v[len(v)/2] }
	base50, base99 := med(base.p50), med(base.p99)
	row := func(f figures) (float64, float64, float64) {
		p50, p99 := med(f.p50), med(f.p99)
		return p50, p99, p99 / base99
	}
	fl50, fl99, flx := row(fl)
	ld50, ld99, ldx := row(ld)
	lf50, lf99, lfx := row(lf)
	b.ReportMetric(base50, "base-p50-µs")
	b.ReportMetric(base99, "base-p99-µs")
	b.ReportMetric(flx, "flood-p99-x")
	b.ReportMetric(ldx, "loaded-p99-x")
	b.ReportMetric(lfx, "loaded+flood-p99-x")
	b.ReportMetric(float64(show.Microseconds())/1e3, "show-2000-ms")
	fmt.Printf("BenchmarkFairness: victim acquire+release, µs, medians of %d interleaved rounds of %d (p50 / p99, p99 against unloaded):\n"+
		"  unloaded               %7.1f / %7.1f\n"+
		"  flood (other uid)      %7.1f / %7.1f  %.2fx\n"+
		"  2,000 blocks + 12,000  %7.1f / %7.1f  %.2fx\n"+
		"  both                   %7.1f / %7.1f  %.2fx\n"+
		"  show with a sweep over 2,000 bound blocks: %v\n",
		rounds, n, base50, base99, fl50, fl99, flx, ld50, ld99, ldx, lf50, lf99, lfx, show)
}
