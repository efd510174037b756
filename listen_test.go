//go:build linux

package portres_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/testbroker"
	"golang.org/x/sys/unix"
)

// TestClientListen: one request acquires a port and binds a listener on
// it (wildcard and specific, TCP and UDP); the block shows with its port
// bound, serves connections, and a failed bind leaves no block behind.
func TestClientListen(t *testing.T) {
	b := testbroker.Start(t, nil)
	c := b.Dial(t)
	ctx := context.Background()

	ln, r, err := c.Listen(ctx, "tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := port(t, ln.Addr())
	if r.Count() != 1 || r.Start() != p || r.Proto() != portres.TCP {
		t.Errorf("Listen(:0): reservation %v, listener on %d", r, p)
	}
	conn, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
	if err != nil {
		t.Fatalf("dial the listener: %v", err)
	}
	conn.Close()
	infos, err := c.Show(ctx)
	if err != nil || len(infos) != 1 || len(infos[0].Bound) != 1 || infos[0].Bound[0] != p || !infos[0].Mine {
		t.Errorf("show after Listen: %+v %v", infos, err)
	}

	pc, ru, err := c.ListenPacket(ctx, "udp4", "127.0.0.1:47611")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if ru.Start() != 47611 || port(t, pc.LocalAddr()) != 47611 {
		t.Errorf("ListenPacket(127.0.0.1:47611): reservation %v, socket on %v", ru, pc.LocalAddr())
	}
	// A bind error names the block's protocol, though a bind request
	// carries none.
	ufd, _ := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	defer unix.Close(ufd)
	var pe *portres.Error
	if _, err := c.BindFD(ctx, ru.Token(), ufd, netip.Addr{}, 0); !errors.As(err, &pe) || pe.Code != portres.WSAENOBUFS || pe.Proto != portres.UDP || pe.Start != 47611 {
		t.Errorf("bind from the full block: %v (%+v), want WSAENOBUFS naming udp 47611", err, pe)
	}
	// The same specific port again overlaps: nothing is bound, nothing kept.
	if _, _, err := c.ListenPacket(ctx, "udp", ":47611"); !errors.Is(err, portres.WSAEADDRINUSE) {
		t.Errorf("second ListenPacket on 47611: %v, want WSAEADDRINUSE", err)
	}
	if _, _, err := c.Listen(ctx, "udp", ":0"); err == nil {
		t.Error("Listen with network udp: no error")
	}

	// A port a foreign socket holds explicitly: the acquire may succeed
	// (placeholders refuse it) or the bind fail; either way no block is
	// left behind for the failed call.
	fd, _ := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet6{Port: 47612}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Listen(ctx, "tcp", ":47612"); !errors.Is(err, portres.WSAEADDRINUSE) {
		t.Errorf("Listen on a port in use: %v, want WSAEADDRINUSE", err)
	}
	if infos, _ := c.Show(ctx); len(infos) != 2 {
		t.Errorf("after the failed Listen, show lists %d blocks, want the 2 live ones: %+v", len(infos), infos)
	}
	if err := r.Release(ctx); err != nil {
		t.Errorf("release the Listen block: %v", err)
	}
}

// TestPackageListen: portres.Listen works on its own connection; closing
// the listener releases the port.
func TestPackageListen(t *testing.T) {
	b := testbroker.Start(t, nil)
	t.Setenv("PORTRES_SOCKET", b.Config.Socket)
	ctx := context.Background()
	ln, err := portres.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := b.Dial(t)
	if infos, _ := c.Show(ctx); len(infos) != 1 || infos[0].Start != port(t, ln.Addr()) {
		t.Fatalf("while listening: %+v", infos)
	}
	ln.Close()
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if infos, _ := c.Show(ctx); len(infos) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the port is still reserved after the listener closed")
		}
	}
	pc, err := portres.ListenPacket(ctx, "udp", ":"+strconv.Itoa(47613))
	if err != nil {
		t.Fatal(err)
	}
	pc.Close()
}

// TestListenMany: many sockets of one block in one round trip: UDP on
// any free ports and TCP on consecutive ones, more than one request's
// worth, all or nothing; a failed batch leaves no port bound.
func TestListenMany(t *testing.T) {
	b := testbroker.Start(t, nil)
	c := b.Dial(t)
	ctx := context.Background()

	r, err := c.Acquire(ctx, portres.UDP, 0, 6)
	if err != nil {
		t.Fatal(err)
	}
	pcs, err := r.ListenPacketMany(ctx, "udp", "127.0.0.1:0", 4)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint16]bool{}
	for _, pc := range pcs {
		p := port(t, pc.LocalAddr())
		if !r.Contains(p) || seen[p] {
			t.Errorf("ListenPacketMany: port %d (block %v, seen %v)", p, r, seen)
		}
		seen[p] = true
	}
	// Each socket is a working UDP socket.
	if _, err := pcs[0].WriteTo([]byte("hi"), pcs[3].LocalAddr()); err != nil {
		t.Fatal(err)
	}
	pcs[3].SetReadDeadline(time.Now().Add(2 * time.Second))
	if buf := make([]byte, 8); true {
		if n, from, err := pcs[3].ReadFrom(buf); err != nil || string(buf[:n]) != "hi" || port(t, from) != port(t, pcs[0].LocalAddr()) {
			t.Errorf("datagram between two of the sockets: %q from %v, %v", buf[:n], from, err)
		}
	}
	// Two ports are left: three fail, and the two bound meanwhile are
	// closed again (the block's ports stay usable).
	if _, err := r.ListenPacketMany(ctx, "udp", ":0", 3); !errors.Is(err, portres.WSAENOBUFS) {
		t.Errorf("3 sockets from the 2 free ports: %v, want WSAENOBUFS", err)
	}
	more, err := r.ListenPacketMany(ctx, "udp", ":0", 2)
	if err != nil {
		t.Fatalf("the 2 ports left after a failed batch: %v", err)
	}
	for _, pc := range append(pcs, more...) {
		pc.Close()
	}
	if _, err := r.ListenPacketMany(ctx, "udp", ":0", 7); !errors.Is(err, portres.WSAEINVAL) {
		t.Errorf("7 sockets of a 6-port block: %v, want WSAEINVAL", err)
	}

	// Consecutive TCP ports from the one asked for.
	rt, err := c.Acquire(ctx, portres.TCP, 47700, 5)
	if err != nil {
		t.Fatal(err)
	}
	lns, err := rt.ListenMany(ctx, "tcp", ":47701", 3)
	if err != nil {
		t.Fatal(err)
	}
	for i, ln := range lns {
		if p := port(t, ln.Addr()); p != 47701+uint16(i) {
			t.Errorf("listener %d on port %d, want %d", i, p, 47701+i)
		}
		conn, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
		if err != nil {
			t.Errorf("dial listener %d: %v", i, err)
			continue
		}
		conn.Close()
	}
	// 47703 is bound: a run over it fails, and 47704 is not kept.
	if _, err := rt.ListenMany(ctx, "tcp", ":47703", 2); !errors.Is(err, portres.WSAEADDRINUSE) {
		t.Errorf("a run over a bound port: %v, want WSAEADDRINUSE", err)
	}
	if _, err := rt.ListenMany(ctx, "tcp", ":47704", 2); !errors.Is(err, portres.WSAEINVAL) {
		t.Errorf("a run past the block: %v, want WSAEINVAL", err)
	}
	last, err := rt.ListenMany(ctx, "tcp", ":47704", 1)
	if err != nil {
		t.Fatalf("47704 after the failed runs: %v", err)
	}
	last[0].Close()
	for _, ln := range lns {
		ln.Close()
	}

	// One socket unfit for the block binds none of the batch.
	tcp, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	udp, _ := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	defer unix.Close(tcp)
	defer unix.Close(udp)
	if ports, err := c.BindFDs(ctx, rt.Token(), []int{tcp, udp}, netip.Addr{}, 0); !errors.Is(err, portres.WSAEINVAL) || len(ports) != 0 {
		t.Errorf("a TCP and a UDP socket from a TCP block: %v %v, want WSAEINVAL and nothing bound", ports, err)
	}
	if sa, _ := unix.Getsockname(tcp); sa.(*unix.SockaddrInet4).Port != 0 {
		t.Errorf("the TCP socket of the refused batch was bound: %+v", sa)
	}

	// More sockets than one request carries: several batches.
	big, err := c.Acquire(ctx, portres.UDP, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	many, err := big.ListenPacketMany(ctx, "udp", ":0", 100)
	if err != nil {
		t.Fatal(err)
	}
	seen = map[uint16]bool{}
	for _, pc := range many {
		seen[port(t, pc.LocalAddr())] = true
		pc.Close()
	}
	if len(seen) != 100 {
		t.Errorf("100 sockets on %d distinct ports", len(seen))
	}

	// A run past port 65535 over two requests: refused before the first,
	// not bound up to 65535 and then anywhere.
	top, err := c.Acquire(ctx, portres.TCP, 65440, 96)
	if err != nil {
		t.Fatal(err)
	}
	fds := make([]int, 70)
	for i := range fds {
		fds[i], _ = unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		defer unix.Close(fds[i])
	}
	if ports, err := c.BindFDs(ctx, top.Token(), fds, netip.Addr{}, 65472); !errors.Is(err, portres.WSAEINVAL) || len(ports) != 0 {
		t.Errorf("70 sockets from port 65472: %v %v, want WSAEINVAL and nothing bound", ports, err)
	}
}

// TestBindFDNotOpen: a descriptor that is not open is the caller's error
// (WSAENOTSOCK), answered at once; the client keeps working.
func TestBindFDNotOpen(t *testing.T) {
	b := testbroker.Start(t, nil)
	c := b.Dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := c.Acquire(ctx, portres.TCP, 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.BindFD(ctx, r.Token(), -1, netip.Addr{}, 0); !errors.Is(err, portres.WSAENOTSOCK) {
		t.Errorf("BindFD(-1): %v, want WSAENOTSOCK", err)
	}
	fd, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	defer unix.Close(fd)
	if ports, err := c.BindFDs(ctx, r.Token(), []int{fd, 1 << 20}, netip.Addr{}, 0); !errors.Is(err, portres.WSAENOTSOCK) || len(ports) != 0 {
		t.Errorf("BindFDs with a descriptor not open: %v %v, want WSAENOTSOCK and nothing bound", ports, err)
	}
	if _, err := c.BindFD(ctx, r.Token(), fd, netip.Addr{}, 0); err != nil {
		t.Errorf("BindFD after the refused ones: %v", err)
	}
}
