//go:build linux

package enforce

import (
	"errors"
	"fmt"
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
		testutil.ListenTCP(t, family, base)
		ln := testutil.ListenTCP(t, family, base+1)
		testutil.ConnectTCP(t, family, ln, base+1, base+2) // ESTABLISHED both ends
		c, _ := testutil.ConnectTCP(t, family, ln, base+1, base+3)
		testutil.CloseFD(c) // FIN_WAIT2 here, CLOSE_WAIT on the accepted side
		ln2 := testutil.ListenTCP(t, family, base+4)
		c, s2 := testutil.ConnectTCP(t, family, ln2, base+4, base+5)
		testutil.CloseFD(c)
		testutil.CloseFD(s2) // TIME_WAIT on base+5
		testutil.CloseFD(ln2)
		testutil.Socket(t, family, unix.SOCK_STREAM, base+6, false) // bound only: in neither
		testutil.Socket(t, family, unix.SOCK_DGRAM, base+7, false)
		u := testutil.Socket(t, family, unix.SOCK_DGRAM, base+8, false)
		if err := unix.Connect(u, testutil.Sockaddr(family, base+7, true)); err != nil {
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

	testutil.ListenTCP(t, unix.AF_INET6, 24701)
	testutil.Socket(t, unix.AF_INET, unix.SOCK_DGRAM, 24702, false)
	testutil.Socket(t, unix.AF_INET, unix.SOCK_DGRAM, 24703, false)
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
