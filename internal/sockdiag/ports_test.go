//go:build linux

package sockdiag

import (
	"errors"
	"sync"
	"testing"

	"github.com/portres/portres/internal/testutil"
	"golang.org/x/sys/unix"
)

func mustPorts(t testing.TB, proto uint8, lo, hi uint16) *PortSet {
	t.Helper()
	set, err := Ports(proto, lo, hi)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// onlyIn fails t if set holds a port outside [lo,hi].
func onlyIn(t testing.TB, set *PortSet, lo, hi uint16) {
	t.Helper()
	for p := 0; p <= 0xffff; p++ {
		if set.Has(uint16(p)) && (uint16(p) < lo || uint16(p) > hi) {
			t.Errorf("port %d listed, outside the filter %d-%d", p, lo, hi)
		}
	}
}

func TestPortsTCP(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.CheckFDLeak(t)
	testutil.ListenTCP(t, unix.AF_INET, 24101)
	testutil.ListenTCP(t, unix.AF_INET6, 24102)
	ln4 := testutil.ListenTCP(t, unix.AF_INET, 24103)
	testutil.ConnectTCP(t, unix.AF_INET, ln4, 24103, 24105)
	ln6 := testutil.ListenTCP(t, unix.AF_INET6, 24104)
	testutil.ConnectTCP(t, unix.AF_INET6, ln6, 24104, 24106)
	timeWait(t, unix.AF_INET, 24107, 24108)
	timeWait(t, unix.AF_INET6, 24109, 24110)
	testutil.Socket(t, unix.AF_INET, unix.SOCK_STREAM, 24111, false) // bound only: not listed

	want := []uint16{24101, 24102, 24103, 24104, 24105, 24106, 24108, 24110}
	all := mustPorts(t, unix.IPPROTO_TCP, 1, 65535)
	for _, p := range want {
		if !all.Has(p) {
			t.Errorf("port %d not listed", p)
		}
	}
	for _, p := range []uint16{24107, 24109, 24111, 24112} {
		if all.Has(p) {
			t.Errorf("port %d listed", p)
		}
	}
	if udp := mustPorts(t, unix.IPPROTO_UDP, 1, 65535); udp.Has(24101) {
		t.Error("TCP listener listed as UDP")
	}

	some := mustPorts(t, unix.IPPROTO_TCP, 24102, 24105)
	for _, p := range want {
		if in := p >= 24102 && p <= 24105; some.Has(p) != in {
			t.Errorf("filter 24102-24105: port %d listed = %v", p, !in)
		}
	}
	onlyIn(t, some, 24102, 24105)
}

func TestPortsUDP(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.CheckFDLeak(t)
	testutil.Socket(t, unix.AF_INET, unix.SOCK_DGRAM, 24201, false)
	v6 := testutil.Socket(t, unix.AF_INET6, unix.SOCK_DGRAM, 24202, false)
	c := testutil.Socket(t, unix.AF_INET, unix.SOCK_DGRAM, 24203, false)
	if err := unix.Connect(c, testutil.Sockaddr(unix.AF_INET, 24201, true)); err != nil {
		t.Fatal(err)
	}
	set := mustPorts(t, unix.IPPROTO_UDP, 1, 65535)
	for _, p := range []uint16{24201, 24202, 24203} {
		if !set.Has(p) {
			t.Errorf("udp port %d not listed", p)
		}
	}
	if set.Has(24204) {
		t.Error("udp port 24204 listed")
	}
	if tcp := mustPorts(t, unix.IPPROTO_TCP, 1, 65535); tcp.Has(24201) {
		t.Error("UDP socket listed as TCP")
	}
	testutil.CloseFD(v6)
	if mustPorts(t, unix.IPPROTO_UDP, 24202, 24202).Has(24202) {
		t.Error("udp port 24202 still listed after close")
	}
	onlyIn(t, mustPorts(t, unix.IPPROTO_UDP, 24202, 24203), 24202, 24203)
}

// The filter's bounds are inclusive, and a range of one port works.
func TestPortsFilterBounds(t *testing.T) {
	testutil.RequireRoot(t)
	for p := 24300; p <= 24304; p++ {
		testutil.Socket(t, unix.AF_INET6, unix.SOCK_DGRAM, p, false)
	}
	cases := []struct{ lo, hi uint16 }{
		{24301, 24303}, {24302, 24302}, {24300, 24300}, {24304, 24400}, {24000, 24300},
		{0, 65535}, {1, 65535}, {0, 24301}, {24303, 65535}, {24305, 65535},
	}
	for _, c := range cases {
		set := mustPorts(t, unix.IPPROTO_UDP, c.lo, c.hi)
		for p := uint16(24299); p <= 24305; p++ {
			want := p >= 24300 && p <= 24304 && p >= c.lo && p <= c.hi
			if set.Has(p) != want {
				t.Errorf("filter %d-%d: port %d listed = %v, want %v", c.lo, c.hi, p, set.Has(p), want)
			}
		}
		onlyIn(t, set, c.lo, c.hi)
	}
}

// Enough sockets that a dump spans many datagrams.
func TestPortsMultipart(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.CheckFDLeak(t)
	const n = 3000
	for i := range n {
		family := unix.AF_INET
		if i%2 == 1 {
			family = unix.AF_INET6
		}
		testutil.Socket(t, family, unix.SOCK_DGRAM, 30000+i, false)
	}
	set := mustPorts(t, unix.IPPROTO_UDP, 1, 65535)
	for i := range n {
		if !set.Has(uint16(30000 + i)) {
			t.Fatalf("port %d not listed", 30000+i)
		}
	}
	some := mustPorts(t, unix.IPPROTO_UDP, 31000, 31099)
	count := 0
	for p := 0; p <= 0xffff; p++ {
		if some.Has(uint16(p)) {
			count++
		}
	}
	if count != 100 {
		t.Errorf("filter 31000-31099: %d ports listed, want 100", count)
	}
	onlyIn(t, some, 31000, 31099)
}

func TestOnlyTimeWait(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.CheckFDLeak(t)
	check := func(port uint16, want bool) {
		t.Helper()
		got, err := OnlyTimeWait(port)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("OnlyTimeWait(%d) = %v, want %v", port, got, want)
		}
	}
	check(24400, false) // nothing there

	timeWait(t, unix.AF_INET, 24401, 24402)
	timeWait(t, unix.AF_INET6, 24403, 24404)
	check(24402, true)
	check(24404, true)
	check(24401, false) // the passive side leaves nothing

	// A listener joins the TIME_WAIT entries (SO_REUSEADDR lets it).
	ln := testutil.Socket(t, unix.AF_INET6, unix.SOCK_STREAM, 24402, true)
	if err := unix.Listen(ln, 1); err != nil {
		t.Fatal(err)
	}
	check(24402, false)
	testutil.CloseFD(ln)
	check(24402, true)

	// A listener, a connection: no TIME_WAIT at all.
	ln4 := testutil.ListenTCP(t, unix.AF_INET, 24405)
	check(24405, false)
	testutil.ConnectTCP(t, unix.AF_INET, ln4, 24405, 24406)
	check(24406, false)
	check(24405, false)

	// UDP sockets do not count.
	testutil.Socket(t, unix.AF_INET, unix.SOCK_DGRAM, 24407, false)
	check(24407, false)
}

func TestPortsErrors(t *testing.T) {
	testutil.CheckFDLeak(t)
	if _, err := Ports(1, 1, 65535); err == nil {
		t.Error("Ports(ICMP) succeeded")
	}
	if _, err := Ports(unix.IPPROTO_TCP, 200, 100); err == nil {
		t.Error("Ports(tcp, 200, 100) succeeded")
	}
	err := &unavailableError{unix.EPROTONOSUPPORT}
	if !errors.Is(err, errors.ErrUnsupported) || !errors.Is(err, unix.EPROTONOSUPPORT) {
		t.Errorf("%v does not match ErrUnsupported and its cause", err)
	}
}

func TestPortsConcurrent(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.CheckFDLeak(t)
	testutil.ListenTCP(t, unix.AF_INET, 24501)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				set, err := Ports(unix.IPPROTO_TCP, 24000, 25000)
				if err != nil {
					t.Error(err)
					return
				}
				if !set.Has(24501) {
					t.Error("port 24501 not listed")
					return
				}
			}
		})
	}
	wg.Wait()
}
