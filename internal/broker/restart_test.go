//go:build linux

package broker_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/testbroker"
	"github.com/portres/portres/internal/testutil"
	"github.com/portres/portres/internal/wire"
	"golang.org/x/sys/unix"
)

// Helpers of the live-restore tests (restart_test.go, chaos_test.go).
func init() {
	testutil.Helpers["restart-owner"] = helperRestartOwner
	testutil.Helpers["restart-victim"] = helperRestartVictim
	testutil.Helpers["foreign-loop"] = helperForeignLoop
}

// monoNow is CLOCK_MONOTONIC in nanoseconds: one clock for every process
// of a test, so that events of several processes can be put in order.
func monoNow() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// lineSayer returns a function that prints one line to stdout at once,
// safe for concurrent use: a helper's answers and its client's restart
// reports come from different goroutines.
func lineSayer() func(format string, args ...any) {
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	return func(format string, args ...any) {
		mu.Lock()
		fmt.Fprintf(out, format+"\n", args...)
		out.Flush()
		mu.Unlock()
	}
}

// helperRestartOwner holds a TCP block of 6 ports with a listener on its
// first port and a UDP block of 2 with a socket on its first, and prints
// "ready TCPSTART UDPSTART". When its client reconnects after a restart
// of the broker it prints "restart kept=N lost=M". Commands on stdin:
// "use" listens on another port of the TCP block through the token and
// checks that the first listener still accepts ("use ok PORT");
// "release" releases both blocks ("released").
func helperRestartOwner([]string) int {
	ctx := context.Background()
	say := lineSayer()
	c, err := portres.Dial(ctx, "")
	if err != nil {
		say("error %v", err)
		return 1
	}
	c.SetReconnectWait(20 * time.Second)
	c.OnRestart(func(r portres.Restart) { say("restart kept=%d lost=%d", len(r.Kept), len(r.Lost)) })
	rt, err := c.Acquire(ctx, portres.TCP, 0, 6)
	if err != nil {
		say("error %v", err)
		return 1
	}
	ru, err := c.Acquire(ctx, portres.UDP, 0, 2)
	if err != nil {
		say("error %v", err)
		return 1
	}
	first, err := rt.Listen(ctx, "tcp", ":"+strconv.Itoa(int(rt.Start())))
	if err != nil {
		say("error %v", err)
		return 1
	}
	defer first.Close()
	pc, err := ru.ListenPacket(ctx, "udp", ":"+strconv.Itoa(int(ru.Start())))
	if err != nil {
		say("error %v", err)
		return 1
	}
	defer pc.Close()
	say("ready %d %d", rt.Start(), ru.Start())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "use":
			ln, err := rt.Listen(ctx, "tcp", ":0")
			if err != nil {
				say("use error %v", err)
				continue
			}
			port := ln.Addr().(*net.TCPAddr).Port
			ln.Close()
			conn, err := net.Dial("tcp", first.Addr().String())
			if err != nil {
				say("use error first listener: %v", err)
				continue
			}
			conn.Close()
			say("use ok %d", port)
		case "release":
			if err := rt.Release(ctx); err != nil {
				say("release error %v", err)
				continue
			}
			if err := ru.Release(ctx); err != nil {
				say("release error %v", err)
				continue
			}
			say("released")
		}
	}
	return 0
}

// helperRestartVictim holds a TCP block of 4 ports and prints "ready
// START", then waits to be killed.
func helperRestartVictim([]string) int {
	c, err := portres.Dial(context.Background(), "")
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	r, err := c.Acquire(context.Background(), portres.TCP, 0, 4)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("ready", r.Start())
	os.Stdin.Read(make([]byte, 1))
	return 0
}

// helperForeignLoop is a hostile program that knows nothing of portres.
// Its arguments are ranges "tcp:LO-HI" or "udp:LO-HI". Until stdin
// closes it loops: an explicit bind of every port of every range, v4 and
// v6, with SO_REUSEADDR and SO_REUSEPORT; then bind(0), TCP and UDP,
// keeping the sockets until the kernel has no port left to give (or 300
// sockets), then closing them. Each socket that gets a port of a range
// prints "win PROTO PORT MONOTONIC_NS". At the end it prints "done
// LOOPS".
func helperForeignLoop(args []string) int {
	type rng struct {
		typ    int
		name   string
		lo, hi int
	}
	var rs []rng
	for _, a := range args {
		name, span, _ := strings.Cut(a, ":")
		lo, hi, _ := strings.Cut(span, "-")
		typ := unix.SOCK_STREAM
		if name == "udp" {
			typ = unix.SOCK_DGRAM
		}
		rs = append(rs, rng{typ, name, mustAtoi(lo), mustAtoi(hi)})
	}
	out := bufio.NewWriter(os.Stdout)
	// check reports a bind won inside a watched range: when it returned,
	// how it was made and when it started.
	check := func(typ, port int, how string, started int64) {
		for _, r := range rs {
			if r.typ == typ && port >= r.lo && port <= r.hi {
				fmt.Fprintln(out, "win", r.name, port, monoNow(), how, started)
			}
		}
	}
	stop := make(chan struct{})
	go func() {
		os.Stdin.Read(make([]byte, 1))
		close(stop)
	}()
	loops := 0
	for {
		select {
		case <-stop:
			fmt.Fprintln(out, "done", loops)
			out.Flush()
			return 0
		default:
		}
		loops++
		for _, r := range rs {
			for p := r.lo; p <= r.hi; p++ {
				for _, sa := range []unix.Sockaddr{&unix.SockaddrInet4{Port: p}, &unix.SockaddrInet6{Port: p}} {
					af := unix.AF_INET
					if _, ok := sa.(*unix.SockaddrInet6); ok {
						af = unix.AF_INET6
					}
					fd, err := unix.Socket(af, r.typ|unix.SOCK_CLOEXEC, 0)
					if err != nil {
						continue
					}
					unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
					unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
					started := monoNow()
					if unix.Bind(fd, sa) == nil {
						check(r.typ, p, fmt.Sprintf("bind-ipv%d", map[int]int{unix.AF_INET: 4, unix.AF_INET6: 6}[af]), started)
					}
					unix.Close(fd)
				}
			}
		}
		for _, typ := range []int{unix.SOCK_STREAM, unix.SOCK_DGRAM} {
			var fds []int
			for len(fds) < 300 {
				fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					break
				}
				fds = append(fds, fd)
				started := monoNow()
				if unix.Bind(fd, &unix.SockaddrInet4{}) != nil {
					break // the ephemeral range is used up
				}
				if sa, err := unix.Getsockname(fd); err == nil {
					check(typ, sa.(*unix.SockaddrInet4).Port, "bind(0)", started)
				}
			}
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
		out.Flush()
	}
}

// foreignWin is one bind the foreign loop won inside a watched range.
type foreignWin struct {
	proto   string
	port    int
	at      int64  // CLOCK_MONOTONIC ns, when the bind had returned
	how     string // bind-ipv4, bind-ipv6 (SO_REUSEADDR and SO_REUSEPORT), bind(0)
	started int64  // when the bind was called
}

// collectForeign reads a foreign-loop helper's output until "done".
func collectForeign(p *testutil.Process) <-chan []foreignWin {
	res := make(chan []foreignWin, 1)
	go func() {
		var wins []foreignWin
		for {
			line, err := p.Stdout.ReadString('\n')
			f := strings.Fields(line)
			if len(f) == 6 && f[0] == "win" {
				at, _ := strconv.ParseInt(f[3], 10, 64)
				started, _ := strconv.ParseInt(f[5], 10, 64)
				wins = append(wins, foreignWin{f[1], mustAtoi(f[2]), at, f[4], started})
			}
			if err != nil || len(f) > 0 && f[0] == "done" {
				res <- wins
				return
			}
		}
	}()
	return res
}

// daemonProc starts helperDaemon with dc in a process of its own and
// waits until it serves; the caller stops it (SIGKILL, or SIGTERM).
func daemonProc(t testing.TB, dc daemonConfig) *testutil.Process {
	t.Helper()
	cfg, _ := json.Marshal(dc)
	d := testutil.StartHelper(t, "daemon", quickExit(), string(cfg))
	if l := d.Line(20 * time.Second); l != "ready" {
		log, _ := os.ReadFile(dc.LogFile)
		t.Fatalf("daemon: %s\n%s", l, log)
	}
	return d
}

// TestRestartKeepsReservations: the broker is SIGKILLed while a client
// holds blocks with bound and unbound ports, and started again. A
// foreign process in the guarded cgroup, looping on explicit binds and
// bind(0) into those blocks the whole time, wins nothing before, during
// or after the outage. The client reconnects by itself, its token still
// works, its sockets were never touched. A block whose owner died during
// the outage is free after the restart.
func TestRestartKeepsReservations(t *testing.T) {
	cg, cgfd := testutil.Cgroup(t)
	narrowEphemeral(t, 46500, 46799)
	dir := testutil.Dir(t)
	sock := filepath.Join(dir, "portres.sock")
	dc := daemonConfig{Socket: sock, State: filepath.Join(dir, "state.db"), LogFile: filepath.Join(dir, "log"),
		Enforce: broker.EnforceBPF, Cgroup: cg, BPFPin: testutil.BPFPin(t), RestoreGrace: 2 * time.Second, Sweep: 100 * time.Millisecond}
	d := daemonProc(t, dc)
	ctx := context.Background()
	admin, err := portres.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := admin.Status(ctx); err != nil || st.Enforcement.Mode != broker.EnforceBPF {
		t.Skipf("the eBPF bind guard did not load here (%v, %v): live restore is exact only in bpf mode", st, err)
	}
	admin.SetReconnectWait(20 * time.Second)
	env := []string{"PORTRES_SOCKET=" + sock}
	owner := testutil.StartHelperIn(t, cgfd, "restart-owner", env)
	var tcpStart, udpStart int
	if l := owner.Line(10 * time.Second); !scan(l, "ready %d %d", &tcpStart, &udpStart) {
		t.Fatalf("owner: %s", l)
	}
	victim := testutil.StartHelperIn(t, cgfd, "restart-victim", env)
	var victimStart int
	if l := victim.Line(10 * time.Second); !scan(l, "ready %d", &victimStart) {
		t.Fatalf("victim: %s", l)
	}
	foreign := testutil.StartHelperIn(t, cgfd, "foreign-loop", nil,
		fmt.Sprintf("tcp:%d-%d", tcpStart, tcpStart+5), fmt.Sprintf("udp:%d-%d", udpStart, udpStart+1),
		fmt.Sprintf("tcp:%d-%d", victimStart, victimStart+3))
	wins := collectForeign(foreign)

	time.Sleep(300 * time.Millisecond)
	d.Cmd.Process.Signal(syscall.SIGKILL)
	d.Wait()
	time.Sleep(300 * time.Millisecond)
	victim.Cmd.Process.Signal(syscall.SIGKILL) // its owner dies while the broker is down
	victim.Wait()
	time.Sleep(300 * time.Millisecond)
	restarted := monoNow()
	d = daemonProc(t, dc)
	defer func() {
		d.Cmd.Process.Signal(syscall.SIGTERM)
		d.Wait()
	}()
	if l := owner.Line(10 * time.Second); l != "restart kept=2 lost=0" {
		t.Fatalf("owner after the restart: %s", l)
	}
	fmt.Fprintln(owner.Stdin, "use")
	if l := owner.Line(10 * time.Second); !strings.HasPrefix(l, "use ok ") {
		t.Errorf("owner's token after the restart: %s", l)
	}
	// The victim's block was not restored: its owner was gone.
	infos, err := admin.Show(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range infos {
		if int(in.Start) == victimStart && in.Proto == portres.TCP {
			t.Errorf("the dead victim's block is still reserved: %+v", in)
		}
	}
	freed := monoNow()
	time.Sleep(500 * time.Millisecond)
	foreign.Stdin.Close()
	var ownerWins, victimEarly, victimLate int
	for _, w := range <-wins {
		switch {
		case w.proto == "tcp" && w.port >= victimStart && w.port < victimStart+4:
			if w.at < restarted {
				victimEarly++
			} else if w.at > freed {
				victimLate++
			}
		default:
			ownerWins++
			t.Errorf("foreign process bound %s port %d of the owner's live block", w.proto, w.port)
		}
	}
	if victimEarly > 0 {
		t.Errorf("foreign process bound %d ports of the victim's block before the broker came back", victimEarly)
	}
	if victimLate == 0 {
		t.Errorf("the dead victim's block was not free after the restart: the foreign process never got it")
	}
	t.Logf("foreign wins: %d in the owner's blocks, %d in the victim's block after it was freed", ownerWins, victimLate)

	fmt.Fprintln(owner.Stdin, "release")
	if l := owner.Line(10 * time.Second); l != "released" {
		t.Errorf("owner release: %s", l)
	}
	owner.Stdin.Close()
	owner.Wait()
}

// TestRestartGraceExpires: a restored block whose owner lives on but
// never reclaims it (its client is not the Go library, which would) is
// released once the grace period ends, and shows as restored until then.
func TestRestartGraceExpires(t *testing.T) {
	testutil.RequireRoot(t)
	dir := testutil.Dir(t)
	sock := filepath.Join(dir, "portres.sock")
	dc := daemonConfig{Socket: sock, State: filepath.Join(dir, "state.db"), LogFile: filepath.Join(dir, "log"),
		Enforce: broker.EnforceHold, RestoreGrace: time.Second}
	d := daemonProc(t, dc)
	// A raw client: acquires, then sits on a dead connection without
	// reconnecting (as a client of another language might). Its process,
	// this one, stays alive.
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(wire.AppendRequest(nil, &wire.Request{ID: 1, Op: wire.OpAcquire, Proto: uint8(portres.TCP), Start: 47600, Count: 3})); err != nil {
		t.Fatal(err)
	}
	if resp := readResponse(t, conn); resp.Code != 0 {
		t.Fatalf("acquire: %+v", resp)
	}
	d.Cmd.Process.Signal(syscall.SIGKILL)
	d.Wait()
	d = daemonProc(t, dc)
	defer func() {
		d.Cmd.Process.Signal(syscall.SIGTERM)
		d.Wait()
	}()
	c, err := portres.Dial(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	infos, _ := c.Show(context.Background())
	if len(infos) != 1 || !infos[0].Restored || infos[0].Start != 47600 || infos[0].PID != int32(os.Getpid()) {
		t.Fatalf("after the restart, show: %+v; want the block, restored, owned by this process", infos)
	}
	waitShow(t, c, func(in []portres.Info) bool { return len(in) == 0 })
	// The broker logs the release once it has made it, a moment after
	// show stops listing the block.
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		log, _ := os.ReadFile(dc.LogFile)
		if strings.Contains(string(log), "did not reclaim it within 1s") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the release after the grace period is not logged:\n%s", log)
		}
	}
}

// scan is fmt.Sscanf that reports whether every value was read.
func scan(s, format string, args ...any) bool {
	n, err := fmt.Sscanf(s, format, args...)
	return err == nil && n == len(args)
}

func init() { testutil.Helpers["otherns-bind"] = helperOtherNSBind }

// helperOtherNSBind runs in a network namespace of its own: it acquires
// a TCP port from the broker (whose socket it reaches through the file
// system), makes a socket in its own namespace, asks the broker to bind
// it and prints the error's code and message.
func helperOtherNSBind([]string) int {
	ctx := context.Background()
	c, err := portres.Dial(ctx, "")
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	defer c.Close()
	r, err := c.Acquire(ctx, portres.TCP, 0, 1)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fd, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	defer unix.Close(fd)
	_, err = c.BindFD(ctx, r.Token(), fd, netip.Addr{}, 0)
	var pe *portres.Error
	if errors.As(err, &pe) {
		fmt.Println(uint32(pe.Code), pe.Msg)
	} else {
		fmt.Println("no error:", err)
	}
	return 0
}

// TestBindRefusesOtherNetNS: a socket made in another network namespace
// than the broker's is refused (WSAEINVAL): the broker's enforcement
// works in its own namespace only.
func TestBindRefusesOtherNetNS(t *testing.T) {
	b := testbroker.Start(t, nil)
	p := testutil.StartHelperAttr(t, &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}, "otherns-bind",
		[]string{"PORTRES_SOCKET=" + b.Config.Socket})
	l := p.Line(10 * time.Second)
	if want := fmt.Sprint(uint32(portres.WSAEINVAL)) + " "; !strings.HasPrefix(l, want) || !strings.Contains(l, "another network namespace") {
		t.Errorf("bind of a socket of another netns: %q, want WSAEINVAL naming the namespace", l)
	}
	p.Wait()
}
