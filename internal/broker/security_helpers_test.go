//go:build linux

package broker_test

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/fdpass"
	"github.com/portres/portres/internal/testutil"
	"github.com/portres/portres/internal/wire"
	"golang.org/x/sys/unix"
)

// Helpers of the security tests (security_test.go): a hostile local user
// in a process of its own, and a broker in a process of its own.
func init() {
	testutil.Helpers["ops"] = helperOps
	testutil.Helpers["daemon"] = helperDaemon
}

// helperOps runs the commands given as arguments, one per argument, and
// prints one line per command: "NAME CODE N EDQUOT MSG", where CODE is the
// Winsock code of the last error (0: none), N what the command counts,
// EDQUOT whether errors.Is(err, syscall.EDQUOT), MSG the error text.
// Reservations and connections are kept until the helper exits.
//
//	acquire PROTO START COUNT        one runtime reservation
//	delegate PROTO START COUNT       one delegated reservation
//	fill PROTO COUNT                 wildcard delegated blocks of COUNT until refused; N = ports
//	scatter PROTO START STEP MAX     1-port delegated blocks at START, START+STEP, ... until refused; N = blocks
//	starts PROTO COUNT K             K wildcard blocks; prints "start S" for each
//	conns MAX                        up to MAX connections, each asking one request; N = connections served
//	malformed K                      K malformed datagrams on one connection; N = answers read
//	burst K                          K trivial requests (dynamic range); N = milliseconds taken
//	status                           the broker's status; N = reservations it counts, MSG = its JSON
//	system START COUNT               dynamicport set --system (FlagSystem)
//	listen NETWORK ADDRESS           acquire and bind in one request (FlagBind), kept; N = the port
//	misbind PORT                     acquire tcp PORT; a brokered bind of a socket that must fail
//	                                 (an address not on the host), then bind(2) of that socket
//	                                 to PORT by the helper itself; CODE is the brokered bind's,
//	                                 MSG the errno of the own bind ("ok" if it succeeded)
//	passmany K                       K bind requests of 64 descriptors each on one connection,
//	                                 sent before any answer is read; N = answers WSAEDQUOT
//	                                 that name their request
//	bindmany TOKEN K                 K TCP sockets bound from reservation TOKEN in one request;
//	                                 N = the sockets that ended up bound
//	wait                             read a line from stdin
func helperOps(args []string) int {
	ctx := context.Background()
	c, err := portres.Dial(ctx, "")
	if err != nil {
		fmt.Println("dial", err)
		return 1
	}
	defer c.Close()
	var keep []*portres.Client
	defer func() {
		for _, k := range keep {
			k.Close()
		}
	}()
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	report := func(name string, n int, err error) {
		msg := ""
		if err != nil {
			msg = strings.ReplaceAll(err.Error(), "\n", " ")
		}
		fmt.Fprintln(out, name, code(err), n, errors.Is(err, syscall.EDQUOT), msg)
		out.Flush()
	}
	for _, line := range args {
		f := strings.Fields(line)
		var proto portres.Proto
		if len(f) > 1 {
			proto, _ = portres.ParseProto(f[1])
		}
		switch f[0] {
		case "acquire", "delegate":
			acq := c.Acquire
			if f[0] == "delegate" {
				acq = c.AcquireDelegated
			}
			_, err := acq(ctx, proto, uint16(mustAtoi(f[2])), uint16(mustAtoi(f[3])))
			report(f[0], 0, err)
		case "fill":
			n := 0
			var err error
			for err == nil {
				var r *portres.Reservation
				if r, err = c.AcquireDelegated(ctx, proto, 0, uint16(mustAtoi(f[2]))); err == nil {
					n += int(r.Count())
				}
			}
			report("fill", n, err)
		case "scatter":
			start, step, most := mustAtoi(f[2]), mustAtoi(f[3]), mustAtoi(f[4])
			n := 0
			var err error
			for ; n < most && err == nil; n++ {
				_, err = c.AcquireDelegated(ctx, proto, uint16(start+n*step), 1)
			}
			if err != nil {
				n--
			}
			report("scatter", n, err)
		case "starts":
			for i := 0; i < mustAtoi(f[3]); i++ {
				r, err := c.Acquire(ctx, proto, 0, uint16(mustAtoi(f[2])))
				if err != nil {
					report("starts", i, err)
					break
				}
				fmt.Fprintln(out, "start", r.Start())
			}
			report("starts", 0, nil)
		case "conns":
			n := 0
			var err error
			for i := 0; i < mustAtoi(f[1]) && err == nil; i++ {
				var k *portres.Client
				if k, err = portres.Dial(ctx, ""); err != nil {
					break
				}
				keep = append(keep, k)
				if _, _, err = k.DynamicPortRange(ctx, portres.TCP); err == nil {
					n++
				}
			}
			report("conns", n, err)
		case "malformed":
			conn, err := net.Dial("unixpacket", os.Getenv("PORTRES_SOCKET"))
			if err != nil {
				report("malformed", 0, err)
				break
			}
			n := 0
			buf := make([]byte, 512)
			for i := 0; i < mustAtoi(f[1]); i++ {
				conn.Write([]byte{wire.Magic, 99, 1, 2, 3, 4, 5, 6, 7, 8, 9})
				if _, err := conn.Read(buf); err == nil {
					n++
				}
			}
			conn.Close()
			report("malformed", n, nil)
		case "burst":
			t0 := time.Now()
			var err error
			for i := 0; i < mustAtoi(f[1]) && err == nil; i++ {
				_, _, err = c.DynamicPortRange(ctx, portres.TCP)
			}
			report("burst", int(time.Since(t0).Milliseconds()), err)
		case "status":
			st, err := c.Status(ctx)
			if err != nil {
				report("status", 0, err)
				break
			}
			js, _ := json.Marshal(st)
			fmt.Fprintln(out, "status", 0, st.Counts.Runtime+st.Counts.Persistent, false, string(js))
			out.Flush()
		case "system":
			_, err := c.SetSystemDynamicPortRange(ctx, uint16(mustAtoi(f[1])), uint16(mustAtoi(f[2])))
			report("system", 0, err)
		case "listen":
			ln, _, err := c.Listen(ctx, f[1], f[2])
			port := 0
			if err == nil {
				defer ln.Close()
				port = ln.Addr().(*net.TCPAddr).Port
			}
			report("listen", port, err)
		case "passmany":
			conn, err := net.Dial("unixpacket", os.Getenv("PORTRES_SOCKET"))
			if err != nil {
				report("passmany", 0, err)
				break
			}
			devnull, _ := os.Open(os.DevNull)
			many := make([]int, fdpass.MaxFDs)
			for i := range many {
				many[i] = int(devnull.Fd())
			}
			k := mustAtoi(f[1])
			for i := 0; i < k; i++ {
				fdpass.Send(conn.(*net.UnixConn), wire.AppendRequest(nil, &wire.Request{ID: uint32(i + 1), Op: wire.OpBind, Token: 1}), many...)
			}
			n := 0
			buf := make([]byte, wire.MaxMessage)
			for i := 0; i < k; i++ {
				m, _, err := fdpass.Recv(conn.(*net.UnixConn), buf)
				if err != nil {
					break
				}
				if r, err := wire.DecodeResponse(buf[:m]); err == nil && r.Code == uint32(portres.WSAEDQUOT) && r.ID != 0 {
					n++
				}
			}
			conn.Close()
			devnull.Close()
			report("passmany", n, nil)
		case "bindmany":
			token, _ := strconv.ParseUint(f[1], 10, 64)
			fds := make([]int, mustAtoi(f[2]))
			for i := range fds {
				fds[i], _ = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			}
			_, err := c.BindFDs(ctx, token, fds, netip.Addr{}, 0)
			n := 0
			for _, fd := range fds {
				if sa, _ := unix.Getsockname(fd); sa != nil && sa.(*unix.SockaddrInet4).Port != 0 {
					n++
				}
				unix.Close(fd)
			}
			report("bindmany", n, err)
		case "misbind":
			port, _ := strconv.Atoi(f[1])
			r, err := c.Acquire(ctx, portres.TCP, uint16(port), 1)
			if err != nil {
				report("misbind", 0, err)
				break
			}
			fd, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			_, err = c.BindFD(ctx, r.Token(), fd, netip.MustParseAddr("192.0.2.1"), uint16(port))
			own := "ok"
			if berr := unix.Bind(fd, &unix.SockaddrInet4{Port: port}); berr != nil {
				own = unix.ErrnoName(berr.(unix.Errno))
			}
			unix.Close(fd)
			fmt.Fprintln(out, "misbind", code(err), 0, false, own)
		case "wait":
			bufio.NewReader(os.Stdin).ReadString('\n')
		default:
			fmt.Fprintln(out, "unknown command", line)
			return 2
		}
	}
	return 0
}

// daemonConfig is what helperDaemon runs: a broker.Config's plain fields,
// and an RLIMIT_NOFILE to run under (0: the inherited one).
type daemonConfig struct {
	Socket, State, LogFile, ReservedPorts string
	Limits                                broker.Limits
	NoFile                                uint64
	Sweep                                 time.Duration // 0: 50 ms
	Enforce                               string        // "": hold
	Cgroup                                string        // bpf mode: where the guard attaches
	BPFPin                                string        // bpf mode: where it is pinned ("": testutil.BPFPin)
	RestoreGrace                          time.Duration // 0: the default
	InfoLog                               bool          // log at info level, as portresd does, not debug
}

// helperDaemon is portresd in a process of its own, configured by its
// JSON argument (daemonConfig). It prints "ready" once the socket accepts
// connections, or "error MSG", and runs until SIGTERM.
func helperDaemon(args []string) int {
	var dc daemonConfig
	if err := json.Unmarshal([]byte(args[0]), &dc); err != nil {
		fmt.Println("error", err)
		return 1
	}
	if dc.NoFile != 0 {
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: dc.NoFile, Max: dc.NoFile}); err != nil {
			fmt.Println("error", err)
			return 1
		}
	}
	broker.SetMaxProcs() // as portresd does
	if path := os.Getenv("PORTRES_CPUPROFILE"); path != "" {
		// For looking into benchmarks: the profile is written at SIGTERM.
		if f, err := os.Create(path); err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	level := slog.LevelDebug
	if dc.InfoLog {
		level = slog.LevelInfo
	}
	return serveDaemonLevel(level, broker.Config{Socket: dc.Socket, State: dc.State, ReservedPorts: dc.ReservedPorts, Limits: dc.Limits, Enforce: dc.Enforce, Cgroup: dc.Cgroup, BPFPin: dc.BPFPin, RestoreGrace: dc.RestoreGrace,
		Sweep: cmp.Or(dc.Sweep, 50*time.Millisecond)}, dc.LogFile)
}

// newCountLogger logs text records to w at debug level.
func newCountLogger(w *countWriter) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// daemonLog returns a test daemon's log once it holds the start-up line
// (the socket accepts before New logs it), or after 5 s.
func daemonLog(path string) string {
	var log []byte
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if log, _ = os.ReadFile(path); strings.Contains(string(log), "portresd listening") {
			break
		}
	}
	return string(log)
}

// startDaemon runs helperDaemon with dc as cred (nil: this test's uid),
// with extra environment, waits until it serves and returns a stop
// function (SIGTERM, wait, empty the kernel list), also run at cleanup.
func startDaemon(tb testing.TB, cred *syscall.Credential, dc daemonConfig, env ...string) (stop func()) {
	tb.Helper()
	if dc.BPFPin == "" {
		dc.BPFPin = testutil.BPFPin(tb)
	}
	cfg, _ := json.Marshal(dc)
	d := testutil.StartHelperAs(tb, cred, "daemon", append(quickExit(), env...), string(cfg))
	if l := d.Line(10 * time.Second); l != "ready" {
		tb.Fatalf("daemon: %s", l)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			d.Cmd.Process.Signal(syscall.SIGTERM)
			d.Wait()
			testutil.ClearReservedPorts(tb)
		})
	}
	tb.Cleanup(stop)
	return stop
}
