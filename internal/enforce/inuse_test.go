package enforce

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/portres/portres/internal/sockdiag"
	"github.com/portres/portres/internal/testutil"
	"golang.org/x/sys/unix"
)

func TestInUseSeesListenersAndUDP(t *testing.T) {
	testutil.RequireRoot(t)
	cases := []struct {
		proto  uint8
		typ    int
		listen bool
		port   int
		family int
	}{
		{unix.IPPROTO_TCP, unix.SOCK_STREAM, true, 24001, unix.AF_INET},
		{unix.IPPROTO_TCP, unix.SOCK_STREAM, true, 24002, unix.AF_INET6},
		{unix.IPPROTO_UDP, unix.SOCK_DGRAM, false, 24003, unix.AF_INET},
		{unix.IPPROTO_UDP, unix.SOCK_DGRAM, false, 24004, unix.AF_INET6},
	}
	for _, c := range cases {
		fd, _ := unix.Socket(c.family, c.typ|unix.SOCK_CLOEXEC, 0)
		var sa unix.Sockaddr = &unix.SockaddrInet4{Port: c.port}
		if c.family == unix.AF_INET6 {
			sa = &unix.SockaddrInet6{Port: c.port}
		}
		if err := unix.Bind(fd, sa); err != nil {
			t.Fatal(err)
		}
		if c.listen {
			unix.Listen(fd, 1)
		}
		set, err := InUse(c.proto)
		if err != nil {
			t.Fatal(err)
		}
		if !set.Has(uint16(c.port)) || set.Has(uint16(c.port+100)) {
			t.Errorf("%s port %d (family %d): in use = %v, port+100 = %v", protoName(c.proto), c.port, c.family, set.Has(uint16(c.port)), set.Has(uint16(c.port+100)))
		}
		unix.Close(fd)
		if set, _ := InUse(c.proto); set.Has(uint16(c.port)) && c.proto == unix.IPPROTO_UDP {
			t.Errorf("udp port %d still in use after close", c.port)
		}
	}
	if _, err := InUse(1); err == nil {
		t.Error("InUse(ICMP) succeeded")
	}
}

// liveFDs maps each socket the tests made to the closed flag of its
// cleanup: a socket is closed once, by closeFD or at the end of the test,
// never twice (a stale close could hit a reused number and hide a leak).
var liveFDs sync.Map

func closeFD(fd int) {
	if v, ok := liveFDs.LoadAndDelete(fd); ok {
		*v.(*bool) = true
	}
	unix.Close(fd)
}

// trackFD closes fd when the test ends unless closeFD did before, and
// returns the flag closeFD sets.
func trackFD(t testing.TB, fd int) *bool {
	closed := new(bool)
	liveFDs.Store(fd, closed)
	t.Cleanup(func() {
		if !*closed {
			closeFD(fd)
		}
	})
	return closed
}

// tcpSocket makes a socket of family and typ bound to port (none if
// negative), closed when the test ends unless closeFD closed it.
func tcpSocket(t testing.TB, family, typ, port int, reuse bool) int {
	t.Helper()
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	trackFD(t, fd)
	if reuse {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	}
	if port >= 0 {
		if err := unix.Bind(fd, loopbackAddr(family, port, false)); err != nil {
			t.Fatalf("bind family %d type %d port %d: %v", family, typ, port, err)
		}
	}
	return fd
}

func loopbackAddr(family, port int, loopback bool) unix.Sockaddr {
	if family == unix.AF_INET6 {
		sa := &unix.SockaddrInet6{Port: port}
		if loopback {
			sa.Addr[15] = 1
		}
		return sa
	}
	sa := &unix.SockaddrInet4{Port: port}
	if loopback {
		sa.Addr = [4]byte{127, 0, 0, 1}
	}
	return sa
}

func tcpListen(t testing.TB, family, port int) int {
	t.Helper()
	fd := tcpSocket(t, family, unix.SOCK_STREAM, port, false)
	if err := unix.Listen(fd, 4096); err != nil {
		t.Fatal(err)
	}
	return fd
}

// tcpConnect connects a client bound to cport (0: any) to the listener
// ln on lport over loopback, and returns the client and accepted fds. At
// the end of the test the client closes first, so the TIME_WAIT entry
// lands on its port, not on the listener's.
func tcpConnect(t testing.TB, family, ln, lport, cport int) (client, server int) {
	t.Helper()
	client = tcpSocket(t, family, unix.SOCK_STREAM, cport, cport != 0)
	if err := unix.Connect(client, loopbackAddr(family, lport, true)); err != nil {
		t.Fatalf("connect to port %d: %v", lport, err)
	}
	server, _, err := unix.Accept4(ln, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	trackFD(t, server)
	v, _ := liveFDs.Load(client)
	clientClosed := v.(*bool)
	t.Cleanup(func() {
		if !*clientClosed {
			closeFD(client)
		}
	})
	return client, server
}

// sameSet reports the first port where a and b differ, if any.
func sameSet(a, b *PortSet) (int, bool) {
	for p := 0; p <= 0xffff; p++ {
		if a.Has(uint16(p)) != b.Has(uint16(p)) {
			return p, false
		}
	}
	return 0, true
}

// InUse, InUseRange and OnlyTimeWait (sock_diag) agree with the /proc
// text tables on the same sockets: every TCP state the tests can make,
// v4 and v6, and bound UDP sockets.
func TestInUseAgreesWithProc(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.CheckFDLeak(t)
	for i, family := range []int{unix.AF_INET, unix.AF_INET6} {
		base := 24600 + 20*i
		tcpListen(t, family, base)
		ln := tcpListen(t, family, base+1)
		tcpConnect(t, family, ln, base+1, base+2) // ESTABLISHED both ends
		c, _ := tcpConnect(t, family, ln, base+1, base+3)
		closeFD(c) // FIN_WAIT2 here, CLOSE_WAIT on the accepted side
		ln2 := tcpListen(t, family, base+4)
		c, s2 := tcpConnect(t, family, ln2, base+4, base+5)
		closeFD(c)
		closeFD(s2) // TIME_WAIT on base+5
		closeFD(ln2)
		tcpSocket(t, family, unix.SOCK_STREAM, base+6, false) // bound only: in neither
		tcpSocket(t, family, unix.SOCK_DGRAM, base+7, false)
		u := tcpSocket(t, family, unix.SOCK_DGRAM, base+8, false)
		if err := unix.Connect(u, loopbackAddr(family, base+7, true)); err != nil {
			t.Fatal(err)
		}
	}
	// Let the closes play out on loopback.
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		tw4, _ := procOnlyTimeWait(24605)
		tw6, _ := procOnlyTimeWait(24625)
		if tw4 && tw6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no TIME_WAIT entries on ports 24605 and 24625")
		}
	}

	for _, proto := range []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
		// A TIME_WAIT entry of an earlier test could expire between the
		// two reads: compare again before failing.
		var diff int
		ok := false
		for try := 0; try < 3 && !ok; try++ {
			proc, err := procInUse(proto)
			if err != nil {
				t.Fatal(err)
			}
			diag, err := InUse(proto)
			if err != nil {
				t.Fatal(err)
			}
			diff, ok = sameSet(proc, diag)
		}
		if !ok {
			t.Errorf("%s: /proc and sock_diag differ on port %d", protoName(proto), diff)
		}
		proc, _ := procInUse(proto)
		some, err := InUseRange(proto, 24601, 24623)
		if err != nil {
			t.Fatal(err)
		}
		for p := 0; p <= 0xffff; p++ {
			want := p >= 24601 && p <= 24623 && proc.Has(uint16(p))
			if some.Has(uint16(p)) != want {
				t.Errorf("%s: InUseRange(24601, 24623) has port %d = %v, /proc says %v", protoName(proto), p, !want, want)
			}
		}
	}
	wantTCP := []uint16{24600, 24601, 24602, 24603, 24605}
	tcp, _ := InUse(unix.IPPROTO_TCP)
	udp, _ := InUse(unix.IPPROTO_UDP)
	for _, base := range []uint16{24600, 24620} {
		for _, p := range wantTCP {
			if !tcp.Has(p - 24600 + base) {
				t.Errorf("tcp port %d not in use", p-24600+base)
			}
		}
		if tcp.Has(base+4) || tcp.Has(base+6) {
			t.Errorf("tcp port %d or %d in use", base+4, base+6)
		}
		if !udp.Has(base+7) || !udp.Has(base+8) {
			t.Errorf("udp port %d or %d not in use", base+7, base+8)
		}
	}

	for p := uint16(24599); p <= 24630; p++ {
		proc, err := procOnlyTimeWait(p)
		if err != nil {
			t.Fatal(err)
		}
		diag, err := OnlyTimeWait(p)
		if err != nil {
			t.Fatal(err)
		}
		if proc != diag {
			t.Errorf("OnlyTimeWait(%d) = %v, /proc says %v", p, diag, proc)
		}
		if want := p == 24605 || p == 24625; diag != want {
			t.Errorf("OnlyTimeWait(%d) = %v, want %v", p, diag, want)
		}
	}
}

// Without sock_diag, InUseRange and OnlyTimeWait read /proc.
func TestInUseFallsBackToProc(t *testing.T) {
	testutil.RequireRoot(t)
	unsupported := fmt.Errorf("sockdiag: test: %w", errors.ErrUnsupported)
	diagPorts = func(uint8, uint16, uint16) (*PortSet, error) { return nil, unsupported }
	diagOnlyTimeWait = func(uint16) (bool, error) { return false, unsupported }
	t.Cleanup(func() { diagPorts, diagOnlyTimeWait = sockdiag.Ports, sockdiag.OnlyTimeWait })

	tcpListen(t, unix.AF_INET6, 24701)
	tcpSocket(t, unix.AF_INET, unix.SOCK_DGRAM, 24702, false)
	tcpSocket(t, unix.AF_INET, unix.SOCK_DGRAM, 24703, false)
	tcp, err := InUse(unix.IPPROTO_TCP)
	if err != nil || !tcp.Has(24701) {
		t.Errorf("InUse(tcp) without sock_diag: port 24701 listed = %v, err %v", err == nil && tcp.Has(24701), err)
	}
	udp, err := InUseRange(unix.IPPROTO_UDP, 24703, 24800)
	if err != nil || udp.Has(24702) || !udp.Has(24703) {
		t.Errorf("InUseRange(udp, 24703, 24800) without sock_diag: err %v", err)
	}
	if tw, err := OnlyTimeWait(24701); err != nil || tw {
		t.Errorf("OnlyTimeWait(24701) without sock_diag = %v, %v", tw, err)
	}
	if _, err := InUse(1); err == nil {
		t.Error("InUse(ICMP) without sock_diag succeeded")
	}
}
