//go:build linux

package broker_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/testbroker"
	"github.com/portres/portres/internal/testutil"
	"golang.org/x/sys/unix"
)

func socketEnv(b *testbroker.Broker) []string { return []string{"PORTRES_SOCKET=" + b.Config.Socket} }

// narrowEphemeral sets the netns's ephemeral range for the test.
func narrowEphemeral(t testing.TB, lo, hi int) {
	t.Helper()
	testutil.RequireRoot(t) // the sysctl is the test netns's own
	const path = "/proc/sys/net/ipv4/ip_local_port_range"
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(fmt.Sprintf("%d %d", lo, hi)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.WriteFile(path, old, 0o644) })
}

// waitShow polls Show until ok accepts the list or 3 s pass.
func waitShow(t *testing.T, c *portres.Client, ok func([]portres.Info) bool) []portres.Info {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		infos, err := c.Show(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if ok(infos) {
			return infos
		}
		if time.Now().After(deadline) {
			t.Fatalf("Show never reached the expected state; last: %+v", infos)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestForeignProcessKeptOut: a program that does not use portres can
// neither bind a reserved port explicitly nor get one from bind(0), for
// TCP and UDP, v4 and v6, with or without SO_REUSEADDR/SO_REUSEPORT.
func TestForeignProcessKeptOut(t *testing.T) {
	narrowEphemeral(t, 41000, 41299)
	b := testbroker.Start(t, nil)
	for _, proto := range []string{"tcp", "udp"} {
		t.Run(proto, func(t *testing.T) {
			// Reserve the lower half of the ephemeral range.
			holder := testutil.StartHelper(t, "hold", socketEnv(b), proto, "41000", "150")
			if l := holder.Line(5 * time.Second); !strings.HasPrefix(l, "ready") {
				t.Fatalf("holder: %s", l)
			}
			foreign := testutil.StartHelper(t, "foreign", nil, proto, "41000", "150", "300")
			for {
				l := foreign.Line(10 * time.Second)
				if l == "done" {
					break
				}
				t.Errorf("foreign process got reserved %s port: %s", proto, l)
			}
			foreign.Wait()
			holder.Wait()
		})
	}
}

// TestSIGKILLFreesReservations: a client killed with SIGKILL loses its
// reservations, and the ports can be reserved again.
func TestSIGKILLFreesReservations(t *testing.T) {
	b := testbroker.Start(t, nil)
	c := b.Dial(t)
	holder := testutil.StartHelper(t, "hold", socketEnv(b), "tcp", "42000", "20")
	if l := holder.Line(5 * time.Second); !strings.HasPrefix(l, "ready") {
		t.Fatalf("holder: %s", l)
	}
	infos, err := c.Show(context.Background())
	if err != nil || len(infos) != 1 || infos[0].PID != int32(holder.Cmd.Process.Pid) || len(infos[0].Bound) != 1 {
		t.Fatalf("Show = %+v, %v; want one block owned by the holder with one bound port", infos, err)
	}
	if infos[0].Token != 0 {
		t.Errorf("Show revealed another process's token %#x", infos[0].Token)
	}
	holder.Cmd.Process.Signal(syscall.SIGKILL)
	holder.Cmd.Wait()
	waitShow(t, c, func(i []portres.Info) bool { return len(i) == 0 })
	r, err := c.Acquire(context.Background(), portres.TCP, 42000, 20)
	if err != nil {
		t.Fatalf("re-acquire after the owner died: %v", err)
	}
	r.Release(context.Background())
}

// TestConcurrentProcessesNeverShare: two processes hammering
// acquire/bind/release in a small dynamic range never hold overlapping
// blocks at the same time, and every bind lands in its own block.
func TestConcurrentProcessesNeverShare(t *testing.T) {
	b := testbroker.Start(t, nil)
	if err := b.Dial(t).SetDynamicPortRange(context.Background(), portres.TCP, 43000, 255); err != nil {
		t.Fatal(err)
	}
	const rounds = 300
	type span struct {
		proc, start, count int
		t0, t1             int64
	}
	var spans []span
	var procs []*testutil.Process
	for i := 0; i < 2; i++ {
		procs = append(procs, testutil.StartHelper(t, "hammer", socketEnv(b), strconv.Itoa(rounds), strconv.Itoa(i)))
	}
	for i, p := range procs {
		for n := 0; n < rounds; n++ {
			f := strings.Fields(p.Line(60 * time.Second))
			if f[0] != "R" {
				t.Fatalf("process %d: %v", i, f)
			}
			s := span{proc: i, start: mustAtoi(f[1]), count: mustAtoi(f[2])}
			s.t0, _ = strconv.ParseInt(f[3], 10, 64)
			s.t1, _ = strconv.ParseInt(f[4], 10, 64)
			if port := mustAtoi(f[5]); port < s.start || port >= s.start+s.count {
				t.Errorf("process %d bound port %d outside its block %d+%d", i, port, s.start, s.count)
			}
			if s.start < 43000 || s.start+s.count > 43255 {
				t.Errorf("wildcard block %d+%d outside the dynamic range", s.start, s.count)
			}
			spans = append(spans, s)
		}
		if code := p.Wait(); code != 0 {
			t.Fatalf("process %d exited %d", i, code)
		}
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].t0 < spans[j].t0 })
	for i, a := range spans {
		for _, c := range spans[i+1:] {
			if c.t0 > a.t1 {
				break
			}
			if a.proc != c.proc && a.start < c.start+c.count && c.start < a.start+a.count {
				t.Errorf("processes %d and %d held overlapping blocks %d+%d and %d+%d at the same time", a.proc, c.proc, a.start, a.count, c.start, c.count)
			}
		}
	}
}

// TestOtherProcessCannotUseToken: release, associate and bind with
// another process's runtime token all fail with WSAEACCES; a second
// connection of the owning process may use it.
func TestOtherProcessCannotUseToken(t *testing.T) {
	b := testbroker.Start(t, nil)
	c := b.Dial(t)
	r, err := c.Acquire(context.Background(), portres.TCP, 44000, 5)
	if err != nil {
		t.Fatal(err)
	}
	thief := testutil.StartHelper(t, "steal", socketEnv(b), strconv.FormatUint(r.Token(), 10))
	for _, op := range []string{"release", "associate", "bind"} {
		if l := thief.Line(5 * time.Second); l != fmt.Sprintf("%s %d", op, portres.WSAEACCES) {
			t.Errorf("other process: %q, want %s %d", l, op, portres.WSAEACCES)
		}
	}
	thief.Wait()
	c2 := b.Dial(t)
	same, err := c2.Reservation(context.Background(), r.Token())
	if err != nil {
		t.Fatalf("second connection of the owner: %v", err)
	}
	ln, err := same.Listen(context.Background(), "tcp", ":44002")
	if err != nil {
		t.Fatalf("owner's second connection binding: %v", err)
	}
	ln.Close()
	if err := same.Release(context.Background()); err != nil {
		t.Fatalf("owner's second connection releasing: %v", err)
	}
}

// TestClosedSocketPortComesBack: after the client closes a bound socket,
// the sweep gives the port its placeholder back: foreign binds fail
// again and the port can be bound from the reservation again.
func TestClosedSocketPortComesBack(t *testing.T) {
	b := testbroker.Start(t, nil)
	c := b.Dial(t)
	ctx := context.Background()
	r, err := c.Acquire(ctx, portres.UDP, 45000, 1)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := r.ListenPacket(ctx, "udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.ListenPacket(ctx, "udp", ":0"); !errors.Is(err, portres.WSAENOBUFS) {
		t.Fatalf("second bind from a one-port block: %v, want WSAENOBUFS", err)
	}
	pc.Close()
	waitShow(t, c, func(i []portres.Info) bool { return len(i) == 1 && len(i[0].Bound) == 0 })
	foreign := testutil.StartHelper(t, "foreign", nil, "udp", "45000", "1", "0")
	if l := foreign.Line(5 * time.Second); l != "done" {
		t.Errorf("after the owner closed its socket, a foreign process: %s", l)
	}
	pc, err = r.ListenPacket(ctx, "udp", ":45000")
	if err != nil {
		t.Fatalf("rebinding the freed port: %v", err)
	}
	pc.Close()
}

// TestSecondBrokerRefused: a second broker on the same socket refuses to
// start and leaves the first one working.
func TestSecondBrokerRefused(t *testing.T) {
	b := testbroker.Start(t, nil)
	cfg := b.Config
	cfg.State = testutil.Dir(t) + "/other.db"
	if b2, err := broker.New(cfg); err == nil {
		b2.Close()
		t.Fatal("second broker on the same socket started")
	} else if !strings.Contains(err.Error(), "another portresd") {
		t.Errorf("refusal does not say why: %v", err)
	}
	if _, err := b.Dial(t).Show(context.Background()); err != nil {
		t.Fatalf("first broker after the refused start: %v", err)
	}
}

// TestCloseReleasesEverything: closing the broker drops placeholders and
// removes the socket.
func TestCloseReleasesEverything(t *testing.T) {
	b := testbroker.Start(t, nil)
	c := b.Dial(t)
	if _, err := c.Acquire(context.Background(), portres.TCP, 46000, 3); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if _, err := os.Stat(b.Config.Socket); !os.IsNotExist(err) {
		t.Errorf("socket still there after Close: %v", err)
	}
	foreign := testutil.StartHelper(t, "foreign", nil, "tcp", "46000", "3", "0")
	n := 0
	for l := foreign.Line(5 * time.Second); l != "done"; l = foreign.Line(5 * time.Second) {
		n++
	}
	if n != 6 { // 3 ports, v4 and v6
		t.Errorf("after Close only %d of 6 foreign binds worked", n)
	}
}

// TestRebindExplicitPortAtOnce: closing a socket and binding the same
// explicit port again works at once, without waiting for a sweep.
func TestRebindExplicitPortAtOnce(t *testing.T) {
	b := testbroker.Start(t, func(c *broker.Config) { c.Sweep = time.Hour })
	ctx := context.Background()
	r, err := b.Dial(t).Acquire(ctx, portres.TCP, 45100, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		ln, err := r.Listen(ctx, "tcp", ":45101")
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		ln.Close()
	}
}

// TestShowDelegatedBinds: ports of a delegated block that the receiving
// process listens on show as bound, and free again once closed.
func TestShowDelegatedBinds(t *testing.T) {
	b := testbroker.Start(t, nil)
	c := b.Dial(t)
	r, err := c.AcquireDelegated(context.Background(), portres.TCP, 45200, 3)
	if err != nil {
		t.Fatal(err)
	}
	fd, _ := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err := unix.Bind(fd, &unix.SockaddrInet6{Port: int(r.Start()) + 1}); err != nil {
		t.Fatalf("plain bind of a delegated port: %v", err)
	}
	unix.Listen(fd, 1) // bound-only TCP sockets are not in the kernel's tables
	infos := waitShow(t, c, func(i []portres.Info) bool { return len(i) == 1 && len(i[0].Bound) == 1 })
	if !infos[0].Delegated || infos[0].Bound[0] != r.Start()+1 {
		t.Errorf("Show = %+v", infos[0])
	}
	unix.Close(fd)
	waitShow(t, c, func(i []portres.Info) bool { return len(i) == 1 && len(i[0].Bound) == 0 })
}

// TestShowNeverStealsDelegatedPorts: while show and sweeps inspect a
// delegated block, the process it was handed to can always bind its
// ports (checking by binding a probe once made such binds fail).
func TestShowNeverStealsDelegatedPorts(t *testing.T) {
	b := testbroker.Start(t, func(c *broker.Config) { c.Sweep = 5 * time.Millisecond })
	c := b.Dial(t)
	r, err := c.AcquireDelegated(context.Background(), portres.UDP, 45300, 4)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		c2 := b.Dial(t)
		for {
			select {
			case <-stop:
				return
			default:
				c2.Show(context.Background())
			}
		}
	}()
	failures := 0
	for i := 0; i < 3000; i++ {
		fd, _ := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err := unix.Bind(fd, &unix.SockaddrInet6{Port: int(r.Start()) + i%4}); err != nil {
			failures++
		}
		unix.Close(fd)
	}
	close(stop)
	<-done
	if failures > 0 {
		t.Errorf("%d of 3000 binds of delegated ports failed while show ran", failures)
	}
}

// TestRestartServerDuringTimeWait: a server that closed a connection
// first (leaving TIME_WAIT on its port) can listen on the same port of
// its reservation again at once, as with SO_REUSEADDR outside portres.
func TestRestartServerDuringTimeWait(t *testing.T) {
	b := testbroker.Start(t, nil)
	ctx := context.Background()
	r, err := b.Dial(t).Acquire(ctx, portres.TCP, 0, 1) // wildcard: earlier runs' TIME_WAIT may linger
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(int(r.Start()))
	for i := 0; i < 2; i++ {
		ln, err := r.Listen(ctx, "tcp", addr)
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		srv, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		srv.Close() // the server closes first: TIME_WAIT on its port
		conn.Read(make([]byte, 1))
		conn.Close()
		ln.Close()
	}
	if _, err := r.Listen(ctx, "tcp", ":"+strconv.Itoa(int(r.Start())+1)); !errors.Is(err, portres.WSAEINVAL) {
		t.Errorf("port outside the block: %v", err)
	}
}

// reuseSocket is an unbound socket with SO_REUSEADDR and SO_REUSEPORT,
// the flags that let the kernel share a port between sockets.
func reuseSocket(t *testing.T, typ int) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET6, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// TestNoPortHandedOutTwice: a port of a reservation bound by a live
// socket is never bound again, even when both sockets carry the reuse
// flags that would let the kernel share it.
func TestNoPortHandedOutTwice(t *testing.T) {
	for _, mode := range []string{broker.EnforceHold, broker.EnforceBPF} {
		t.Run(mode, func(t *testing.T) {
			cg := ""
			if mode == broker.EnforceBPF {
				cg, _ = testutil.Cgroup(t)
			}
			b := testbroker.Start(t, func(c *broker.Config) { c.Enforce = mode; c.Cgroup = cg })
			if b.Enforcement() != mode {
				t.Skip("the eBPF bind guard did not load here")
			}
			c := b.Dial(t)
			ctx := context.Background()
			for _, proto := range []portres.Proto{portres.TCP, portres.UDP} {
				typ := unix.SOCK_STREAM
				if proto == portres.UDP {
					typ = unix.SOCK_DGRAM
				}
				r, err := c.Acquire(ctx, proto, 47300, 1)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := c.BindFD(ctx, r.Token(), reuseSocket(t, typ), netip.Addr{}, 47300); err != nil {
					t.Fatal(err)
				}
				if _, err := c.BindFD(ctx, r.Token(), reuseSocket(t, typ), netip.Addr{}, 47300); !errors.Is(err, portres.WSAEADDRINUSE) {
					t.Errorf("%s: explicit rebind of a live port: %v, want WSAEADDRINUSE", proto, err)
				}
				c.Show(ctx) // sweeps: a bound-only TCP socket is not in the socket tables
				if _, err := c.BindFD(ctx, r.Token(), reuseSocket(t, typ), netip.Addr{}, 0); !errors.Is(err, portres.WSAENOBUFS) {
					t.Errorf("%s: port 0 from a block whose only port is bound: %v, want WSAENOBUFS", proto, err)
				}
				r.Release(ctx)
			}
		})
	}
}

// TestHoldBlocksListed: where the broker may write ip_local_reserved_ports,
// placeholder-held blocks are listed there too, by 64-port chunks (the
// kernel's bind(0) then skips them without trying each placeholder), and
// leave it at the sweep after their release; when the list has no room
// for them they still succeed, held by their placeholders alone.
func TestHoldBlocksListed(t *testing.T) {
	b := testbroker.Start(t, func(c *broker.Config) { c.Limits = broker.Limits{UserReservations: -1, UserPorts: -1} })
	ctx := context.Background()
	c := b.Dial(t)
	r, err := c.Acquire(ctx, portres.TCP, 45300, 4)
	if err != nil {
		t.Fatal(err)
	}
	wantReserved(t, "45248-45311")
	if err := r.Release(ctx); err != nil {
		t.Fatal(err)
	}
	waitReserved(t, "")
	// Fill the unprivileged share with scattered delegated blocks; a
	// placeholder-held block of the same user still succeeds, unlisted.
	rs := runOps(t, b, nobodyCred, true, "scatter tcp 20000 3 2000", "acquire udp 45400 3")
	if rs[0].code != int(portres.WSAENOBUFS) {
		t.Fatalf("scatter: %+v, want the list full", rs[0])
	}
	if rs[1].code != 0 {
		t.Errorf("a placeholder-held block with the list full: %+v, want success", rs[1])
	}
	if covers(reservedNow(t), 45400, 45402) {
		t.Error("the placeholder-held block was listed past the user's share")
	}
}

// TestClosedPortReheldAtOnce: when the owner closes a socket the broker
// bound, the port gets its placeholder back as the kernel announces the
// close, not at the next sweep (here: an hour away), so another process
// cannot take it meanwhile (a foreign loop once won tens of thousands of
// binds in that window).
func TestClosedPortReheldAtOnce(t *testing.T) {
	b := testbroker.Start(t, func(c *broker.Config) { c.Sweep = time.Hour })
	ctx := context.Background()
	r, err := b.Dial(t).Acquire(ctx, portres.TCP, 45500, 2)
	if err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 20; round++ {
		ln, err := r.Listen(ctx, "tcp", "127.0.0.1:45500")
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		ln.Close()
		// Give the announcement a moment: a foreign bind racing it could
		// itself take the port first (the window is what this test
		// bounds), and the broker would then leave it to the sweep.
		time.Sleep(10 * time.Millisecond)
		held := false
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			// A foreign bind (it would win the port if it were free; then
			// give it back at once).
			fd, _ := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			err := unix.Bind(fd, &unix.SockaddrInet6{Port: 45500})
			unix.Close(fd)
			if errors.Is(err, unix.EADDRINUSE) {
				held = true
				break
			}
		}
		if !held {
			t.Fatalf("round %d: port 45500 not held again after its socket closed", round)
		}
	}
}

// TestHoldAfterAcceptedConnections: in hold mode a listener closed while
// a connection it accepted lives cannot take its placeholder back at
// once; the placeholder returns when that connection goes, announced as
// a destroyed socket of the port, not at the next sweep (set to an hour
// here): meanwhile and after, no other socket gets the port.
func TestHoldAfterAcceptedConnections(t *testing.T) {
	b := testbroker.Start(t, func(c *broker.Config) { c.Enforce = broker.EnforceHold; c.Sweep = time.Hour })
	c := b.Dial(t)
	ctx := context.Background()
	r, err := c.Acquire(ctx, portres.TCP, 47900, 1)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := r.Listen(ctx, "tcp", "127.0.0.1:47900")
	if err != nil {
		t.Fatal(err)
	}
	dialed, err := net.Dial("tcp", "127.0.0.1:47900")
	if err != nil {
		t.Fatal(err)
	}
	defer dialed.Close()
	accepted, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	// Let the broker handle the listener's end (the announcement comes
	// from a kernel work queue) while the connection still holds the port.
	time.Sleep(200 * time.Millisecond)
	// A foreign socket with SO_REUSEADDR, which a placeholder (none set)
	// refuses and an accepted connection (set, by Listen) does not.
	foreignBind := func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		return unix.Bind(fd, &unix.SockaddrInet4{Port: 47900, Addr: [4]byte{127, 0, 0, 2}})
	}
	// Gone without TIME_WAIT (linger 0): the port has no socket left.
	accepted.(*net.TCPConn).SetLinger(0)
	accepted.Close()
	deadline := time.Now().Add(2 * time.Second)
	for foreignBind() == nil {
		if time.Now().After(deadline) {
			t.Fatal("the port was still open to other sockets 2 s after its last connection closed (no placeholder until the sweep)")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Held again: free in the block for its owner.
	ln2, err := r.Listen(ctx, "tcp", "127.0.0.1:47900")
	if err != nil {
		t.Fatalf("the owner's listen after the connections closed: %v", err)
	}
	ln2.Close()
}

// TestAcquireBindFindsPortInUse: a one-request acquire and bind of an
// explicit port in hold mode is refused when another socket has the port
// on another address or shares it with SO_REUSEADDR, whether the
// client's socket could have bound beside it (a TCP listener sets
// SO_REUSEADDR: a placeholder checks the port first) or not (a
// dual-stack UDP socket without sharing binds in the placeholder's
// place); nothing is left reserved.
func TestAcquireBindFindsPortInUse(t *testing.T) {
	b := testbroker.Start(t, func(c *broker.Config) { c.Enforce = broker.EnforceHold })
	c := b.Dial(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name, network string
		typ           int
		reuse         bool
		port          int
	}{
		{"tcp, foreign on 127.0.0.2", "tcp", unix.SOCK_STREAM, false, 47950},
		{"tcp, foreign sharing", "tcp", unix.SOCK_STREAM, true, 47951},
		{"udp, foreign on 127.0.0.2", "udp", unix.SOCK_DGRAM, false, 47952},
		{"udp, foreign sharing", "udp", unix.SOCK_DGRAM, true, 47953},
	} {
		fd, err := unix.Socket(unix.AF_INET, tc.typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		addr := [4]byte{127, 0, 0, 2}
		if tc.reuse {
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			addr = [4]byte{}
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: tc.port, Addr: addr}); err != nil {
			t.Fatal(err)
		}
		address := ":" + strconv.Itoa(tc.port)
		if tc.network == "tcp" {
			_, _, err = c.Listen(ctx, "tcp", address)
		} else {
			_, _, err = c.ListenPacket(ctx, "udp", address)
		}
		if !errors.Is(err, portres.WSAEADDRINUSE) {
			t.Errorf("%s: acquire and bind of port %d: %v, want WSAEADDRINUSE", tc.name, tc.port, err)
		}
		unix.Close(fd)
	}
	if infos, _ := c.Show(ctx); len(infos) != 0 {
		t.Errorf("after the refused acquires, show lists %+v", infos)
	}
}
