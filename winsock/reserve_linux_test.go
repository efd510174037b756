package winsock

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/testutil"
	"golang.org/x/sys/unix"
)

func TestAcquireRelease(t *testing.T) {
	checkFDs(t)
	b := broker(t)
	s := socket(t, AF_INET, SOCK_STREAM, IPPROTO_TCP)
	out := bytes.Repeat([]byte{0xFF}, 20)
	n, err := s.WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION, rangeBytes(40000, 10), out, nil, nil)
	if err != nil || n != 16 {
		t.Fatalf("ACQUIRE: %d bytes, %v; want 16", n, err)
	}
	if !bytes.Equal(out[:4], []byte{0x9c, 0x40, 10, 0}) || !bytes.Equal(out[4:8], []byte{0, 0, 0, 0}) || !bytes.Equal(out[16:], []byte{0xFF, 0xFF, 0xFF, 0xFF}) {
		t.Errorf("output % x: want 9c 40 0a 00, zero padding, bytes past 16 untouched", out)
	}
	var inst INET_PORT_RESERVATION_INSTANCE
	inst.UnmarshalBinary(out)
	infos := show(t, b)
	if len(infos) != 1 || infos[0].Start != 40000 || infos[0].Count != 10 || infos[0].Token != inst.Token.Token || !infos[0].Mine || infos[0].Proto != portres.TCP {
		t.Fatalf("broker shows %+v, want tcp 40000+10 token %#x", infos, inst.Token.Token)
	}
	if err := rawBind(40005); err != syscall.EADDRINUSE {
		t.Errorf("a foreign bind of a reserved port: %v, want EADDRINUSE", err)
	}
	n, err = s.WSAIoctl(SIO_RELEASE_PORT_RESERVATION, tokenBytes(inst.Token.Token), nil, nil, nil)
	if err != nil || n != 0 {
		t.Fatalf("RELEASE: %d bytes, %v; want 0 bytes (no output buffer)", n, err)
	}
	waitEmpty(t, b)
	if err := rawBind(40005); err != nil {
		t.Errorf("bind after release: %v", err)
	}
	_, err = s.WSAIoctl(SIO_RELEASE_PORT_RESERVATION, tokenBytes(inst.Token.Token), nil, nil, nil)
	wantCode(t, "second RELEASE", err, WSAEINVAL)
}

func TestAcquireWildcardAndIPv6(t *testing.T) {
	b := broker(t)
	s := socket(t, AF_INET6, SOCK_DGRAM, 0)
	inst := acquire(t, s, 0, 4)
	start := Ntohs(inst.Reservation.StartPort)
	if start == 0 || inst.Reservation.NumberOfPorts != 4 || inst.Token.Token == INVALID_PORT_RESERVATION_TOKEN {
		t.Fatalf("got %+v", inst)
	}
	lo, count, err := b.Dial(t).DynamicPortRange(context.Background(), portres.UDP)
	if err != nil {
		t.Fatal(err)
	}
	if start < lo || int(start)+4 > int(lo)+int(count) {
		t.Errorf("wildcard block at %d, outside the dynamic range %d+%d", start, lo, count)
	}
	if infos := show(t, b); len(infos) != 1 || infos[0].Proto != portres.UDP {
		t.Errorf("broker shows %+v, want one UDP block", infos)
	}
}

func TestAcquireConflict(t *testing.T) {
	broker(t)
	s1 := socket(t, AF_INET, SOCK_DGRAM, IPPROTO_UDP)
	s2 := socket(t, AF_INET6, SOCK_DGRAM, IPPROTO_UDP)
	acquire(t, s1, 41000, 10)
	n, err := s2.WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION, rangeBytes(41009, 5), make([]byte, 16), nil, nil)
	wantCode(t, "overlapping ACQUIRE", err, WSAEADDRINUSE)
	if n != 0 {
		t.Errorf("bytesReturned = %d", n)
	}
	_, err = s2.WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION, rangeBytes(41000, 0), make([]byte, 16), nil, nil)
	wantCode(t, "ACQUIRE of 0 ports", err, WSAEINVAL)
}

func TestReservationLivesAsLongAsTheSocket(t *testing.T) {
	checkFDs(t)
	b := broker(t)
	s := socket(t, AF_INET, SOCK_STREAM, IPPROTO_TCP)
	acquire(t, s, 42000, 3)
	acquire(t, s, 42100, 3)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	waitEmpty(t, b)
	for _, p := range []uint16{42000, 42102} {
		if err := rawBind(p); err != nil {
			t.Errorf("bind of %d after closesocket: %v", p, err)
		}
	}
}

func TestReleaseFromAnotherSocket(t *testing.T) {
	b := broker(t)
	s1 := socket(t, AF_INET, SOCK_STREAM, IPPROTO_TCP)
	s2 := socket(t, AF_INET6, SOCK_STREAM, IPPROTO_TCP)
	inst := acquire(t, s1, 42200, 2)
	if _, err := s2.WSAIoctl(SIO_RELEASE_PORT_RESERVATION, tokenBytes(inst.Token.Token), nil, nil, nil); err != nil {
		t.Fatalf("RELEASE on another socket of the process: %v", err)
	}
	waitEmpty(t, b)
}

func TestAssociateAndBind(t *testing.T) {
	checkFDs(t)
	broker(t)
	s := socket(t, AF_INET, SOCK_STREAM, IPPROTO_TCP)
	tok := tokenBytes(acquire(t, s, 42300, 2).Token.Token)
	associated := func(af int) *Socket {
		t.Helper()
		c := socket(t, af, SOCK_STREAM, IPPROTO_TCP)
		if n, err := c.WSAIoctl(SIO_ASSOCIATE_PORT_RESERVATION, tok, nil, nil, nil); err != nil || n != 0 {
			t.Fatalf("ASSOCIATE: %d bytes, %v", n, err)
		}
		return c
	}
	c1 := associated(AF_INET)
	if err := c1.Bind(netipAny4); err != nil {
		t.Fatal(err)
	}
	a1, err := c1.Getsockname()
	if err != nil || a1.Port() < 42300 || a1.Port() > 42301 || !a1.Addr().IsUnspecified() {
		t.Fatalf("bound to %v, %v; want a port of 42300-42301", a1, err)
	}
	other := uint16(42300 + 42301 - int(a1.Port()))
	c2 := associated(AF_INET6)
	outside := associated(AF_INET6)
	wantCode(t, "bind outside the block", outside.Bind(netip.AddrPortFrom(netip.IPv6Unspecified(), 42302)), WSAEINVAL)
	if err := c2.Bind(netip.AddrPortFrom(netip.IPv6Loopback(), other)); err != nil {
		t.Fatalf("explicit bind of %d: %v", other, err)
	}
	if a2, _ := c2.Getsockname(); a2 != netip.AddrPortFrom(netip.IPv6Loopback(), other) {
		t.Errorf("bound to %v", a2)
	}
	wantCode(t, "bind of an exhausted block", associated(AF_INET).Bind(netipAny4), WSAENOBUFS)
	// The socket is bound now: ASSOCIATE comes too late.
	_, err = c1.WSAIoctl(SIO_ASSOCIATE_PORT_RESERVATION, tok, nil, nil, nil)
	wantCode(t, "ASSOCIATE of a bound socket", err, WSAEINVAL)
}

func TestAssociateErrors(t *testing.T) {
	b := broker(t)
	s := socket(t, AF_INET, SOCK_STREAM, IPPROTO_TCP)
	tcp := acquire(t, s, 42400, 2).Token.Token
	udpSock := socket(t, AF_INET, SOCK_DGRAM, IPPROTO_UDP)
	_, err := udpSock.WSAIoctl(SIO_ASSOCIATE_PORT_RESERVATION, tokenBytes(tcp), nil, nil, nil)
	wantCode(t, "UDP socket, TCP reservation", err, WSAEINVAL)
	_, err = udpSock.WSAIoctl(SIO_ASSOCIATE_PORT_RESERVATION, tokenBytes(tcp^0x5a5a), nil, nil, nil)
	wantCode(t, "unknown token", err, WSAEINVAL)

	// Another process may neither use nor release this process's token.
	env := []string{"PORTRES_SOCKET=" + b.Config.Socket}
	p := testutil.StartHelper(t, "winsock-steal", env, fmt.Sprint(tcp))
	for _, want := range []string{"associate 10013", "release 10013"} {
		if got := p.Line(5 * time.Second); got != want {
			t.Errorf("other process: %q, want %q", got, want)
		}
	}
	p.Wait()

	// A persistent token: root may consume it, nobody may not.
	r, err := b.Dial(t).CreatePersistent(context.Background(), portres.TCP, 42500, 2)
	if err != nil {
		t.Fatal(err)
	}
	p = testutil.StartHelperAs(t, &syscall.Credential{Uid: 65534, Gid: 65534}, "winsock-steal", env, fmt.Sprint(r.Token()))
	if got := p.Line(5 * time.Second); got != "associate 10013" {
		t.Errorf("persistent token as nobody: %q, want WSAEACCES", got)
	}
	p.Wait()
	c := socket(t, AF_INET, SOCK_STREAM, IPPROTO_TCP)
	if _, err := c.WSAIoctl(SIO_ASSOCIATE_PORT_RESERVATION, tokenBytes(r.Token()), nil, nil, nil); err != nil {
		t.Fatalf("persistent token as root: %v", err)
	}
	if err := c.Bind(netip.AddrPort{}); err != nil {
		t.Fatal(err)
	}
	if a, _ := c.Getsockname(); a.Port() != 42500 && a.Port() != 42501 {
		t.Errorf("bound to %v, want a port of the persistent block", a)
	}
}

func TestPlainBind(t *testing.T) {
	broker(t)
	s := socket(t, AF_INET, SOCK_STREAM, IPPROTO_TCP)
	acquire(t, s, 42600, 1)
	c := socket(t, AF_INET, SOCK_STREAM, IPPROTO_TCP)
	wantCode(t, "plain bind of a reserved port", c.Bind(netip.MustParseAddrPort("127.0.0.1:42600")), WSAEADDRINUSE)
	wantCode(t, "IPv6 address on an IPv4 socket", c.Bind(netip.MustParseAddrPort("[::1]:0")), WSAEFAULT)
	if err := c.Bind(netip.MustParseAddrPort("127.0.0.1:0")); err != nil {
		t.Fatal(err)
	}
	if a, err := c.Getsockname(); err != nil || a.Addr() != netip.MustParseAddr("127.0.0.1") || a.Port() == 0 {
		t.Errorf("bound to %v, %v", a, err)
	}
	u := socket(t, AF_UNIX, SOCK_STREAM, 0)
	wantCode(t, "IP address on a Unix socket", u.Bind(netipAny4), WSAEFAULT)
}

func TestNonblockingSocketStillBlocks(t *testing.T) {
	broker(t)
	s := socket(t, AF_INET, SOCK_STREAM, IPPROTO_TCP)
	if err := s.SetNonblocking(true); err != nil {
		t.Fatal(err)
	}
	if fl, _ := unix.FcntlInt(s.Fd(), unix.F_GETFL, 0); fl&unix.O_NONBLOCK == 0 {
		t.Fatal("O_NONBLOCK not set")
	}
	inst := acquire(t, s, 20000, 2000) // thousands of placeholders: not instant
	if inst.Reservation.NumberOfPorts != 2000 {
		t.Errorf("got %+v", inst)
	}
}

func TestBrokerUnreachable(t *testing.T) {
	SetBrokerSocket(t.TempDir() + "/none.sock")
	t.Cleanup(func() { SetBrokerSocket("") })
	s := socket(t, AF_INET, SOCK_STREAM, IPPROTO_TCP)
	_, err := s.WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION, rangeBytes(40000, 1), make([]byte, 16), nil, nil)
	wantCode(t, "ACQUIRE without a broker", err, WSAENETDOWN)
	if !strings.Contains(err.Error(), "SIO_ACQUIRE_PORT_RESERVATION") {
		t.Errorf("error %q does not name the call", err)
	}
}

// TestBytesReturned: lpcbBytesReturned is the size of the data stored in
// the output buffer. ACQUIRE stores the 16-byte
// INET_PORT_RESERVATION_INSTANCE; RELEASE and ASSOCIATE have no output
// buffer (cbOutBuffer must be 0), so 0 is the only truthful value, and
// it is what they report, synchronously, through WSAGetOverlappedResult
// and to a completion routine.
func TestBytesReturned(t *testing.T) {
	broker(t)
	s := socket(t, AF_INET, SOCK_DGRAM, IPPROTO_UDP)
	c := socket(t, AF_INET, SOCK_DGRAM, IPPROTO_UDP)
	out := make([]byte, 16)
	n, err := s.WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION, rangeBytes(42700, 4), out, nil, nil)
	if err != nil || n != 16 {
		t.Fatalf("synchronous ACQUIRE: %d bytes, %v; want 16", n, err)
	}
	var inst INET_PORT_RESERVATION_INSTANCE
	inst.UnmarshalBinary(out)
	tok := tokenBytes(inst.Token.Token)
	if n, err := c.WSAIoctl(SIO_ASSOCIATE_PORT_RESERVATION, tok, nil, nil, nil); err != nil || n != 0 {
		t.Errorf("synchronous ASSOCIATE: %d bytes, %v; want 0", n, err)
	}
	if n, err := s.WSAIoctl(SIO_RELEASE_PORT_RESERVATION, tok, nil, nil, nil); err != nil || n != 0 {
		t.Errorf("synchronous RELEASE: %d bytes, %v; want 0", n, err)
	}

	// Overlapped, with WSAGetOverlappedResult.
	ov := &Overlapped{}
	overlapped := func(code uint32, sock *Socket, in, out []byte, want uint32) {
		t.Helper()
		if n, err := sock.WSAIoctl(code, in, out, ov, nil); err != WSA_IO_PENDING || n != 0 {
			t.Fatalf("overlapped %s: %d, %v; want 0, WSA_IO_PENDING", ioctlName(code), n, err)
		}
		if n, _, err := WSAGetOverlappedResult(sock, ov, true); err != nil || n != want {
			t.Errorf("overlapped %s: WSAGetOverlappedResult %d bytes, %v; want %d", ioctlName(code), n, err, want)
		}
	}
	overlapped(SIO_ACQUIRE_PORT_RESERVATION, s, rangeBytes(42710, 4), out, 16)
	inst.UnmarshalBinary(out)
	tok = tokenBytes(inst.Token.Token)
	overlapped(SIO_ASSOCIATE_PORT_RESERVATION, c, tok, nil, 0)
	overlapped(SIO_RELEASE_PORT_RESERVATION, s, tok, nil, 0)

	// Overlapped, with a completion routine.
	routine := func(code uint32, in, out []byte, want uint32) {
		t.Helper()
		got := make(chan uint32, 1)
		if _, err := s.WSAIoctl(code, in, out, ov, func(err error, n uint32, _ *Overlapped, _ uint32) {
			if err != nil {
				t.Errorf("completion of %s: %v", ioctlName(code), err)
			}
			got <- n
		}); err != WSA_IO_PENDING {
			t.Fatalf("%s with a completion routine: %v", ioctlName(code), err)
		}
		select {
		case n := <-got:
			if n != want {
				t.Errorf("%s: completion routine got %d bytes, want %d", ioctlName(code), n, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: completion routine not called", ioctlName(code))
		}
	}
	routine(SIO_ACQUIRE_PORT_RESERVATION, rangeBytes(42720, 4), out, 16)
	inst.UnmarshalBinary(out)
	tok = tokenBytes(inst.Token.Token)
	routine(SIO_ASSOCIATE_PORT_RESERVATION, tok, nil, 0)
	routine(SIO_RELEASE_PORT_RESERVATION, tok, nil, 0)
}

// TestReleaseChecksProtocol: SIO_RELEASE_PORT_RESERVATION reaches only
// its socket's protocol, as ASSOCIATE does: on a TCP socket it refuses a
// UDP reservation with WSAEINVAL and releases nothing; on a UDP socket
// (IPv4 or IPv6) it releases it.
func TestReleaseChecksProtocol(t *testing.T) {
	b := broker(t)
	udpSock := socket(t, AF_INET, SOCK_DGRAM, IPPROTO_UDP)
	inst := acquire(t, udpSock, 42800, 3)
	tok := tokenBytes(inst.Token.Token)
	for _, af := range []int{AF_INET, AF_INET6} {
		tcpSock := socket(t, af, SOCK_STREAM, IPPROTO_TCP)
		n, err := tcpSock.WSAIoctl(SIO_RELEASE_PORT_RESERVATION, tok, nil, nil, nil)
		wantCode(t, "RELEASE of a UDP reservation on a TCP socket", err, WSAEINVAL)
		if n != 0 {
			t.Errorf("bytesReturned = %d", n)
		}
		if err != nil && !strings.Contains(err.Error(), "a tcp socket cannot release the udp reservation 42800-42802") {
			t.Errorf("the error does not say what was refused: %v", err)
		}
		if infos := show(t, b); len(infos) != 1 || infos[0].Token != inst.Token.Token || infos[0].Proto != portres.UDP {
			t.Fatalf("after the refused RELEASE the broker lists %+v, want the UDP block intact", infos)
		}
	}
	// Still held: ASSOCIATE and bind on a UDP socket work.
	c := socket(t, AF_INET6, SOCK_DGRAM, IPPROTO_UDP)
	if _, err := c.WSAIoctl(SIO_ASSOCIATE_PORT_RESERVATION, tok, nil, nil, nil); err != nil {
		t.Fatalf("ASSOCIATE after the refused RELEASE: %v", err)
	}
	if err := c.Bind(netip.AddrPort{}); err != nil {
		t.Fatalf("bind after the refused RELEASE: %v", err)
	}
	// The same protocol releases it, from another UDP socket too.
	if n, err := c.WSAIoctl(SIO_RELEASE_PORT_RESERVATION, tok, nil, nil, nil); err != nil || n != 0 {
		t.Fatalf("RELEASE on a UDP socket: %d, %v", n, err)
	}
	waitEmpty(t, b)
}

// sockaddrIn is a sockaddr_in as C lays it out, with any family.
func sockaddrIn(family int, ip [4]byte, port uint16) []byte {
	b := make([]byte, SizeofSockaddrIn)
	hostOrder.PutUint16(b, uint16(family))
	b[2], b[3] = byte(port>>8), byte(port)
	copy(b[4:], ip[:])
	return b
}

// TestBindSockaddr: bind with a C socket address, by Windows' rules:
// shorter than a sockaddr_in, shorter than a sockaddr_in6 for AF_INET6
// (the documentation's sample passes a sockaddr_in for any family), or
// of another family than the socket's: WSAEFAULT. A good one binds, from
// the associated reservation if there is one.
func TestBindSockaddr(t *testing.T) {
	broker(t)
	s := socket(t, AF_INET, SOCK_DGRAM, IPPROTO_UDP)
	inst := acquire(t, s, 42900, 2)
	v6 := socket(t, AF_INET6, SOCK_DGRAM, IPPROTO_UDP)
	wantCode(t, "sockaddr_in of AF_INET6 on an IPv6 socket", v6.BindSockaddr(sockaddrIn(AF_INET6, [4]byte{}, 0)), WSAEFAULT)
	wantCode(t, "sockaddr_in of AF_INET on an IPv6 socket", v6.BindSockaddr(sockaddrIn(AF_INET, [4]byte{}, 0)), WSAEFAULT)
	wantCode(t, "15 bytes", s.BindSockaddr(sockaddrIn(AF_INET, [4]byte{}, 0)[:15]), WSAEFAULT)
	wantCode(t, "nil", s.BindSockaddr(nil), WSAEFAULT)
	if err := v6.BindSockaddr(sockaddrIn(AF_INET6, [4]byte{}, 0)); err == nil || !strings.Contains(err.Error(), "too short for its family AF_INET6") {
		t.Errorf("the error does not say why: %v", err)
	}
	if _, err := s.WSAIoctl(SIO_ASSOCIATE_PORT_RESERVATION, tokenBytes(inst.Token.Token), nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.BindSockaddr(sockaddrIn(AF_INET, [4]byte{127, 0, 0, 1}, 0)); err != nil {
		t.Fatalf("sockaddr_in, 127.0.0.1 port 0, associated: %v", err)
	}
	if a, _ := s.Getsockname(); a.Addr() != netip.MustParseAddr("127.0.0.1") || a.Port() < 42900 || a.Port() > 42901 {
		t.Errorf("bound to %v, want 127.0.0.1 and a port of 42900-42901", a)
	}
	// A sockaddr_in6 (28 bytes) on the IPv6 socket: ::1, port 42950.
	name := make([]byte, SizeofSockaddrIn6)
	hostOrder.PutUint16(name, AF_INET6)
	name[2], name[3] = 42950>>8, 42950&0xff
	name[23] = 1
	if err := v6.BindSockaddr(name); err != nil {
		t.Fatalf("sockaddr_in6 [::1]:42950: %v", err)
	}
	if a, _ := v6.Getsockname(); a != netip.MustParseAddrPort("[::1]:42950") {
		t.Errorf("bound to %v, want [::1]:42950", a)
	}
	closed := socket(t, AF_INET, SOCK_DGRAM, IPPROTO_UDP)
	closed.Close()
	wantCode(t, "closed socket", closed.BindSockaddr(sockaddrIn(AF_INET, [4]byte{}, 0)), WSAENOTSOCK)
}
