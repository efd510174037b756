//go:build linux

package broker_test

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/testutil"
	"github.com/portres/portres/internal/wire"
	"golang.org/x/sys/unix"
)

// The request path across processes (BenchmarkPath): a broker, an echo
// server made of blocking syscalls (the floor), and client processes
// that time operations against both, interleaved in one run.

func init() {
	testutil.Helpers["echo-server"] = helperEchoServer
	testutil.Helpers["path-client"] = helperPathClient
}

// helperEchoServer is the floor's server: it listens on a SOCK_SEQPACKET
// socket at PATH and answers every datagram with its first 8 bytes, each
// connection on a thread of its own blocked in recvmsg; descriptors that
// come with a datagram are closed. It prints "ready".
func helperEchoServer(args []string) int {
	ln, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		err = unix.Bind(ln, &unix.SockaddrUnix{Name: args[0]})
	}
	if err == nil {
		err = unix.Listen(ln, 128)
	}
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("ready")
	for {
		fd, _, err := unix.Accept4(ln, unix.SOCK_CLOEXEC)
		if err != nil {
			return 0
		}
		go func() {
			runtime.LockOSThread()
			buf := make([]byte, 256)
			oob := make([]byte, unix.CmsgSpace(manyFDs*4))
			for {
				n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
				if err != nil || n == 0 {
					unix.Close(fd)
					return
				}
				if oobn > 0 {
					if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
						for i := range msgs {
							fds, _ := unix.ParseUnixRights(&msgs[i])
							for _, f := range fds {
								unix.Close(f)
							}
						}
					}
				}
				if err := unix.Sendmsg(fd, buf[:min(n, 8)], nil, nil, 0); err != nil {
					unix.Close(fd)
					return
				}
			}
		}()
	}
}

// pathOps are the operations a path client times. The floors talk to
// the echo server with blocking syscalls; the others go through the
// portres library to the broker.
var pathOps = []string{"rtt", "rttfd", "rttfd8", "bind0", "rawtrivial", "trivial", "acqrel", "bindfd", "bindmany", "acqbindrel", "listen1"}

// pathFloors are the floor operations among pathOps.
var pathFloors = []string{"rtt", "rttfd", "rttfd8", "bind0"}

// cPathOps are the operations of the C client (BENCH_CLIENT=c): all but
// rawtrivial, which is the Go library's own cost apart.
var cPathOps = []string{"rtt", "rttfd", "rttfd8", "bind0", "trivial", "acqrel", "bindfd", "bindmany", "acqbindrel", "listen1"}

// buildPathBench builds libportres/bench/path_bench.c, the C client and
// echo server, and returns the program; it skips b without a C compiler.
func buildPathBench(b *testing.B) string {
	for _, tool := range []string{"cc", "make", "ar"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skipf("BENCH_CLIENT=c needs %s: %v", tool, err)
		}
	}
	dir := testutil.Dir(b)
	exe := filepath.Join(dir, "path_bench")
	if out, err := exec.Command("make", "-s", "-C", "../../libportres", "O="+dir, exe).CombinedOutput(); err != nil {
		b.Fatalf("make path_bench: %v\n%s", err, out)
	}
	return exe
}

// idleReport says how an idle CPU waits, which decides what waking a
// process on it costs: on a VM whose CPUs halt at once when idle
// (cpuidle haltpoll with guest_halt_poll_ns 0), a wake-up across CPUs
// costs tens of microseconds, and figures with few clients swing with
// where the scheduler put each process.
func idleReport() string {
	read := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			return "?"
		}
		return strings.TrimSpace(string(b))
	}
	line := "cpuidle driver " + read("/sys/devices/system/cpu/cpuidle/current_driver")
	if poll := read("/sys/module/haltpoll/parameters/guest_halt_poll_ns"); poll != "?" {
		line += ", guest_halt_poll_ns " + poll
	}
	return line + "\n"
}

// manyFDs is how many sockets bindmany binds in one request (and rttfd8
// carries).
const manyFDs = 8

// helperPathClient runs commands from stdin: "run OP MS AT" does OP
// over and over for MS milliseconds from the CLOCK_MONOTONIC time AT (so
// that every client runs at once; a few untimed ones first) and prints
// "done MEDIAN_NS COUNT P90_NS". The
// environment names the broker (PORTRES_SOCKET) and the echo server
// (ECHO_SOCKET).
func helperPathClient([]string) int {
	ctx := context.Background()
	echo, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		err = unix.Connect(echo, &unix.SockaddrUnix{Name: os.Getenv("ECHO_SOCKET")})
	}
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	c, err := portres.Dial(ctx, "")
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	defer c.Close()
	msg, buf := make([]byte, 8), make([]byte, 64)
	raw, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		err = unix.Connect(raw, &unix.SockaddrUnix{Name: os.Getenv("PORTRES_SOCKET")})
	}
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	trivialReq := wire.AppendRequest(nil, &wire.Request{ID: 1, Op: wire.OpDynamicShow, Proto: uint8(portres.TCP)})
	rbuf := make([]byte, wire.MaxMessage)
	spare, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	rights := unix.UnixRights(spare)
	spares := make([]int, manyFDs)
	for i := range spares {
		spares[i] = spare
	}
	rights8 := unix.UnixRights(spares...)
	ops := map[string]func() error{
		"rtt": func() error {
			if err := unix.Sendmsg(echo, msg, nil, nil, 0); err != nil {
				return err
			}
			_, _, _, _, err := unix.Recvmsg(echo, buf, nil, 0)
			return err
		},
		"rttfd": func() error {
			if err := unix.Sendmsg(echo, msg, rights, nil, 0); err != nil {
				return err
			}
			_, _, _, _, err := unix.Recvmsg(echo, buf, nil, 0)
			return err
		},
		"rttfd8": func() error {
			if err := unix.Sendmsg(echo, msg, rights8, nil, 0); err != nil {
				return err
			}
			_, _, _, _, err := unix.Recvmsg(echo, buf, nil, 0)
			return err
		},
		"bind0": func() error {
			fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			err = unix.Bind(fd, &unix.SockaddrInet6{})
			unix.Close(fd)
			return err
		},
		"rawtrivial": func() error { // the same request without the library: its cost apart
			if err := unix.Sendmsg(raw, trivialReq, nil, nil, 0); err != nil {
				return err
			}
			_, _, _, _, err := unix.Recvmsg(raw, rbuf, nil, 0)
			return err
		},
		"trivial": func() error {
			_, _, err := c.DynamicPortRange(ctx, portres.TCP)
			return err
		},
		"acqrel": func() error {
			r, err := c.Acquire(ctx, portres.TCP, 0, 1)
			if err != nil {
				return err
			}
			return r.Release(ctx)
		},
		"listen1": func() error { // acquire+bind in one request, close, release
			ln, r, err := c.Listen(ctx, "tcp", ":0")
			if err != nil {
				return err
			}
			ln.Close()
			return r.Release(ctx)
		},
		"acqbindrel": func() error {
			r, err := c.Acquire(ctx, portres.TCP, 0, 1)
			if err != nil {
				return err
			}
			ln, err := r.Listen(ctx, "tcp", ":0")
			if err != nil {
				return err
			}
			ln.Close()
			return r.Release(ctx)
		},
	}
	// bindfd binds one socket after another from a block of this
	// client's, closing each: the block never fills.
	var block *portres.Reservation
	ops["bindfd"] = func() error {
		if block == nil {
			var err error
			if block, err = c.Acquire(ctx, portres.TCP, 0, 8); err != nil {
				return err
			}
		}
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		_, err = c.BindFD(ctx, block.Token(), fd, netip.Addr{}, 0)
		unix.Close(fd)
		return err
	}
	// bindmany binds manyFDs sockets of a block of as many ports in one
	// request, then closes them all.
	var many *portres.Reservation
	fds := make([]int, manyFDs)
	ops["bindmany"] = func() error {
		if many == nil {
			var err error
			if many, err = c.Acquire(ctx, portres.TCP, 0, manyFDs); err != nil {
				return err
			}
		}
		for i := range fds {
			fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			fds[i] = fd
		}
		_, err := c.BindFDs(ctx, many.Token(), fds, netip.Addr{}, 0)
		for _, fd := range fds {
			unix.Close(fd)
		}
		return err
	}
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var op string
		var ms int
		var at int64
		if !scan(in.Text(), "run %s %d %d", &op, &ms, &at) || ops[op] == nil {
			fmt.Println("error bad command", in.Text())
			continue
		}
		f := ops[op]
		for i := 0; i < 20; i++ {
			f()
		}
		time.Sleep(time.Duration(at - monoNow()))
		lat := make([]time.Duration, 0, 1<<16)
		end := time.Now().Add(time.Duration(ms) * time.Millisecond)
		var ferr error
		for t0 := time.Now(); t0.Before(end); {
			if err := f(); err != nil && ferr == nil {
				ferr = err
			}
			t1 := time.Now()
			lat = append(lat, t1.Sub(t0))
			t0 = t1
		}
		if ferr != nil {
			fmt.Println("error", op, ferr)
			continue
		}
		slices.Sort(lat)
		fmt.Println("done", int64(lat[len(lat)/2]), len(lat), int64(lat[len(lat)*9/10]))
	}
	return 0
}

// pathResult is one operation's figures in one round: the median of the
// clients' medians, and the throughput of all clients together.
type pathResult struct {
	median time.Duration
	p90    time.Duration // of the client whose median is the median
	perSec float64
	spread float64 // most operations one client did : fewest (starvation)
	// CPU time per operation of the answering process (broker or echo
	// server) and of all clients together (including untimed warm-ups).
	serverCPU, clientCPU time.Duration
}

// cpuTime is the CPU time (user and system, every thread) process pid
// has used, at the kernel's clock-tick resolution (10 ms).
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command (which may hold spaces): state is the
	// 3rd field of the line, utime and stime the 14th and 15th.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

// runPathOp has every client run op for the same d at once and collects;
// server (nil: none) is the process that answers them, whose CPU time is
// measured with the clients'.
func runPathOp(b *testing.B, clients []*testutil.Process, server *testutil.Process, op string, d time.Duration) pathResult {
	b.Helper()
	cpu := func() (srv, cl time.Duration) {
		if server != nil {
			srv = cpuTime(server.Cmd.Process.Pid)
		}
		for _, c := range clients {
			cl += cpuTime(c.Cmd.Process.Pid)
		}
		return srv, cl
	}
	srv0, cl0 := cpu()
	at := monoNow() + int64(50*time.Millisecond) + int64(len(clients))*int64(2*time.Millisecond)
	for _, c := range clients {
		fmt.Fprintf(c.Stdin, "run %s %d %d\n", op, d.Milliseconds(), at)
	}
	var meds [][2]time.Duration
	total, most, fewest := 0, 0, 0
	for _, c := range clients {
		var med, p90 int64
		var count int
		if l := c.Line(5 * time.Minute); !scan(l, "done %d %d %d", &med, &count, &p90) {
			b.Fatalf("path client, %s: %s", op, l)
		}
		meds = append(meds, [2]time.Duration{time.Duration(med), time.Duration(p90)})
		total += count
		most = max(most, count)
		if fewest == 0 || count < fewest {
			fewest = count
		}
	}
	srv1, cl1 := cpu()
	slices.SortFunc(meds, func(a, b [2]time.Duration) int { return int(a[0] - b[0]) })
	return pathResult{median: meds[len(meds)/2][0], p90: meds[len(meds)/2][1], perSec: float64(total) / d.Seconds(), spread: float64(most) / float64(max(fewest, 1)),
		serverCPU: (srv1 - srv0) / time.Duration(max(total, 1)), clientCPU: (cl1 - cl0) / time.Duration(max(total, 1))}
}

// pathFloor is the floor of a broker operation, from the floors measured
// in the same round: round trips, round trips carrying a descriptor, and
// socket+bind(0)+close, the enforcement work of a placeholder or a probe.
func pathFloor(op string, f map[string]time.Duration) time.Duration {
	switch op {
	case "trivial", "rawtrivial":
		return f["rtt"]
	case "acqrel": // acquire (a round trip and a bind) + release
		return 2*f["rtt"] + f["bind0"]
	case "bindfd": // a round trip with the socket, and its bind
		return f["rttfd"] + f["bind0"]
	case "bindmany": // a round trip with the sockets, and their binds
		return f["rttfd8"] + manyFDs*f["bind0"]
	case "acqbindrel":
		return 2*f["rtt"] + f["rttfd"] + 2*f["bind0"]
	case "listen1": // one round trip with the socket, its port's and its own bind; release
		return f["rtt"] + f["rttfd"] + 2*f["bind0"]
	}
	return f[op]
}

// BenchmarkPath measures the request path across processes: for hold and
// bpf mode and 1, 2, 4, 8 and 32 client processes, the floors (a
// SOCK_SEQPACKET round trip with blocking syscalls against an echo
// server, the same carrying a descriptor, socket+bind(0)+close) and the
// broker's operations through the library (DynamicPortRange, acquire +
// release of one port, BindFD, acquire + Listen + release), interleaved,
// BENCH_ROUNDS rounds (default 3) in which every client does each
// operation for b.N milliseconds at once (BENCH_CLIENTS=1,8 picks the
// client counts, BENCH_OPS=bindfd,trivial the operations besides the
// floors, BENCH_ENFORCE=hold the modes, BENCH_CLIENT=c C clients and a
// C echo server, from libportres/bench, instead of Go ones). It prints each operation's median against its floor,
// the throughput of all clients against the echo server's, and the
// spread: the most operations one client did against the fewest. Give
// it an explicit -benchtime (milliseconds per operation):
//
//	go test -run '^$' -bench Path -benchtime 300x ./internal/broker
func BenchmarkPath(b *testing.B) {
	if b.N == 1 {
		return // the framework's first probe; the run proper follows
	}
	cg, cgfd := testutil.Cgroup(b)
	rounds := 3
	if v, err := strconv.Atoi(os.Getenv("BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	counts := []int{1, 2, 4, 8, 32}
	if v := os.Getenv("BENCH_CLIENTS"); v != "" {
		counts = nil
		for _, f := range strings.Split(v, ",") {
			n, _ := strconv.Atoi(f)
			counts = append(counts, n)
		}
	}
	known, cbench := pathOps, ""
	if os.Getenv("BENCH_CLIENT") == "c" {
		known, cbench = cPathOps, buildPathBench(b)
	}
	ops := known
	if v := os.Getenv("BENCH_OPS"); v != "" {
		// The floors always run: every ratio needs them.
		ops = slices.Clone(pathFloors)
		for _, op := range strings.Split(v, ",") {
			if !slices.Contains(ops, op) && slices.Contains(known, op) {
				ops = append(ops, op)
			}
		}
	}
	dir := testutil.Dir(b)
	echoSock := filepath.Join(dir, "echo.sock")
	var echo *testutil.Process
	if cbench != "" {
		echo = testutil.Start(b, cbench, nil, "echo", echoSock)
	} else {
		echo = testutil.StartHelper(b, "echo-server", nil, echoSock)
	}
	if l := echo.Line(10 * time.Second); l != "ready" {
		b.Fatalf("echo server: %s", l)
	}
	var report strings.Builder
	report.WriteString(idleReport())
	modes := []string{broker.EnforceHold, broker.EnforceBPF}
	if v := os.Getenv("BENCH_ENFORCE"); v != "" {
		modes = strings.Split(v, ",")
	}
	for _, mode := range modes {
		sock := filepath.Join(dir, mode+".sock")
		d := daemonProc(b, daemonConfig{Socket: sock, State: filepath.Join(dir, mode+".db"), LogFile: filepath.Join(dir, mode+".log"),
			Enforce: mode, Cgroup: cg, InfoLog: true, Sweep: time.Second})
		if c, err := portres.Dial(context.Background(), sock); err == nil {
			st, _ := c.Status(context.Background())
			c.Close()
			if st == nil || st.Enforcement.Mode != mode {
				b.Logf("mode %s not available here", mode)
				d.Cmd.Process.Signal(unix.SIGTERM)
				d.Wait()
				continue
			}
		}
		for _, k := range counts {
			env := []string{"PORTRES_SOCKET=" + sock, "ECHO_SOCKET=" + echoSock}
			var clients []*testutil.Process
			for i := 0; i < k; i++ {
				var p *testutil.Process
				if cbench != "" {
					p = testutil.StartIn(b, cgfd, cbench, env, "client")
				} else {
					p = testutil.StartHelperIn(b, cgfd, "path-client", env)
				}
				if l := p.Line(10 * time.Second); l != "ready" {
					b.Fatalf("path client: %s", l)
				}
				clients = append(clients, p)
			}
			dur := time.Duration(max(20, b.N)) * time.Millisecond
			res := map[string][]pathResult{}
			for r := 0; r < rounds; r++ {
				for _, op := range ops {
					server := d
					switch op {
					case "rtt", "rttfd", "rttfd8":
						server = echo
					case "bind0":
						server = nil
					}
					res[op] = append(res[op], runPathOp(b, clients, server, op, dur))
				}
			}
			med := func(op string) pathResult {
				rs := slices.Clone(res[op])
				slices.SortFunc(rs, func(a, b pathResult) int { return int(a.median - b.median) })
				return rs[len(rs)/2]
			}
			floors := map[string]time.Duration{}
			for _, op := range pathFloors {
				floors[op] = med(op).median
			}
			fmt.Fprintf(&report, "%s mode, %d client process(es), medians of %d rounds of %v per operation:\n", mode, k, rounds, dur)
			for _, op := range ops {
				m := med(op)
				line := fmt.Sprintf("  %-11s %8.1f µs (p90 %7.1f)", op, float64(m.median)/1e3, float64(m.p90)/1e3)
				if f := pathFloor(op, floors); !slices.Contains(pathFloors, op) {
					line += fmt.Sprintf("  floor %6.1f µs  %5.2fx", float64(f)/1e3, float64(m.median)/float64(f))
					b.ReportMetric(float64(m.median)/float64(f), fmt.Sprintf("%s-%dc-%s-x", mode, k, op))
				}
				line += fmt.Sprintf("  %8.0f ops/s  spread %.2f  cpu/op: server %.1f µs, clients %.1f µs", m.perSec, m.spread,
					float64(m.serverCPU)/1e3, float64(m.clientCPU)/1e3)
				fmt.Fprintln(&report, line)
			}
			rtt := med("rtt").perSec
			if slices.Contains(ops, "trivial") && slices.Contains(ops, "acqbindrel") {
				cyc := med("acqbindrel")
				fmt.Fprintf(&report, "  throughput: trivial requests %.2f of echo round trips; acquire+bind+release %.0f cycles/s = %.0f requests/s, %.2f of echo round trips\n",
					med("trivial").perSec/rtt, cyc.perSec, 3*cyc.perSec, 3*cyc.perSec/rtt)
			}
			for _, p := range clients {
				p.Stdin.Close()
				p.Wait()
			}
		}
		d.Cmd.Process.Signal(unix.SIGTERM)
		d.Wait()
		testutil.ClearReservedPorts(b)
	}
	clients := "Go"
	if cbench != "" {
		clients = "C"
	}
	b.Logf("BenchmarkPath (%s clients; client, broker and echo server in processes of their own):\n%s", clients, report.String())
	fmt.Print(report.String())
}
