//go:build linux

package portres_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/testbroker"
	"github.com/portres/portres/internal/testutil"
)

// TestMain also runs a broker for the examples, which find it through
// PORTRES_SOCKET like any program would.
func TestMain(m *testing.M) { testutil.Main(withExampleBroker{m}) }

type withExampleBroker struct{ m *testing.M }

func (w withExampleBroker) Run() int {
	dir, err := os.MkdirTemp("", "portres-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	b, err := broker.New(broker.Config{Socket: filepath.Join(dir, "portres.sock"), State: filepath.Join(dir, "state.db"),
		ReservedPorts: "-", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		panic(err)
	}
	go b.Serve(context.Background())
	defer b.Close()
	os.Setenv("PORTRES_SOCKET", b.Addr())
	return w.m.Run()
}

func port(t *testing.T, a net.Addr) uint16 {
	t.Helper()
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	return ap.Port()
}

// TestListenDialFromReservation: Listen (dual-stack, v4, v6, explicit
// port), ListenPacket and Dialer all use ports of the reservation, and the
// sockets work.
func TestListenDialFromReservation(t *testing.T) {
	testutil.CheckFDLeak(t)
	b := testbroker.Start(t, nil)
	c := b.Dial(t)
	ctx := context.Background()
	r, err := c.Acquire(ctx, portres.TCP, 0, 8)
	if err != nil {
		t.Fatal(err)
	}
	if r.Start() == 0 || r.Count() != 8 || r.End() != r.Start()+7 || len(r.Ports()) != 8 || !r.Contains(r.Start()+7) || r.Contains(r.End()+1) {
		t.Fatalf("reservation %v: start %d count %d", r, r.Start(), r.Count())
	}
	for _, l := range []struct{ network, addr string }{{"tcp", ":0"}, {"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}, {"tcp", "localhost:" + itoa(r.Start()+7)}} {
		ln, err := r.Listen(ctx, l.network, l.addr)
		if err != nil {
			t.Fatalf("Listen(%s, %s): %v", l.network, l.addr, err)
		}
		p := port(t, ln.Addr())
		if !r.Contains(p) {
			t.Errorf("Listen(%s, %s) got port %d outside %v", l.network, l.addr, p, r)
		}
		dialAddr := "127.0.0.1:" + itoa(p)
		if l.network == "tcp6" {
			dialAddr = "[::1]:" + itoa(p)
		}
		conn, err := r.Dialer().DialContext(ctx, "tcp", dialAddr)
		if err != nil {
			t.Fatalf("Dial %s from the reservation: %v", dialAddr, err)
		}
		if lp := port(t, conn.LocalAddr()); !r.Contains(lp) {
			t.Errorf("dialer's local port %d outside %v", lp, r)
		}
		srv, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		conn.Write([]byte("hi"))
		buf := make([]byte, 2)
		if _, err := srv.Read(buf); err != nil || string(buf) != "hi" {
			t.Errorf("read %q %v", buf, err)
		}
		srv.Close()
		conn.Close()
		ln.Close()
	}
	if _, err := r.ListenPacket(ctx, "udp", ":0"); !errors.Is(err, portres.WSAEINVAL) {
		t.Errorf("ListenPacket on a TCP reservation: %v", err)
	}
	if _, err := r.Listen(ctx, "tcp4", "[::1]:0"); !errors.Is(err, portres.WSAEINVAL) {
		t.Errorf("tcp4 with a v6 address: %v", err)
	}

	u, err := c.Acquire(ctx, portres.UDP, 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := u.ListenPacket(ctx, "udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if !u.Contains(port(t, pc.LocalAddr())) {
		t.Errorf("ListenPacket port %v outside %v", pc.LocalAddr(), u)
	}
	if err := u.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Release(ctx); !errors.Is(err, portres.WSAEINVAL) {
		t.Errorf("second release: %v", err)
	}
}

func itoa(p uint16) string { return strconv.Itoa(int(p)) }

// TestCancelRaceLeavesClientUsable: a context cancelled just as the
// answer arrives must not poison the next request (a stale read deadline
// once made every later call fail).
func TestCancelRaceLeavesClientUsable(t *testing.T) {
	b := testbroker.Start(t, nil)
	c := b.Dial(t)
	for i := 0; i < 2000; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		go cancel()
		c.DynamicPortRange(ctx, portres.TCP) // may or may not be cancelled
		if _, _, err := c.DynamicPortRange(context.Background(), portres.TCP); err != nil {
			t.Fatalf("iteration %d: a cancelled call broke the client: %v", i, err)
		}
	}
}

// TestWaitingForTurnHonoursContext: a call queued behind a long request
// on the same client gives up when its own context ends.
func TestWaitingForTurnHonoursContext(t *testing.T) {
	b := testbroker.Start(t, nil)
	c := b.Dial(t)
	long := make(chan error, 1)
	go func() {
		_, err := c.Acquire(context.Background(), portres.TCP, 2000, 12000) // thousands of placeholders
		long <- err
	}()
	time.Sleep(20 * time.Millisecond) // the acquire (>100 ms of binds) is in flight
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Show(ctx)
	if !errors.Is(err, portres.WSA_OPERATION_ABORTED) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("show queued behind a long acquire: %v, want WSA_OPERATION_ABORTED wrapping the deadline", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("queued call took %v", d)
	}
	if err := <-long; err != nil {
		t.Fatal(err)
	}
}
