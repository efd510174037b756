package winsock

import (
	"fmt"
	"syscall"
	"testing"

	"github.com/portres/portres"
	"golang.org/x/sys/unix"
)

var reservationCodes = []uint32{SIO_ACQUIRE_PORT_RESERVATION, SIO_RELEASE_PORT_RESERVATION, SIO_ASSOCIATE_PORT_RESERVATION}

func TestConstants(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uint32
	}{
		{"SIO_ACQUIRE_PORT_RESERVATION", SIO_ACQUIRE_PORT_RESERVATION, 0x98000064},
		{"SIO_RELEASE_PORT_RESERVATION", SIO_RELEASE_PORT_RESERVATION, 0x98000065},
		{"SIO_ASSOCIATE_PORT_RESERVATION", SIO_ASSOCIATE_PORT_RESERVATION, 0x98000066},
		{"SIO_FLUSH", SIO_FLUSH, 0x28000004},
		{"AF_INET6", AF_INET6, 10},
		{"WSA_IO_INCOMPLETE", uint32(WSA_IO_INCOMPLETE), 996},
	} {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
	if WSAEINVAL != portres.WSAEINVAL || WSA_IO_PENDING != portres.WSA_IO_PENDING || WSAENOBUFS != portres.WSAENOBUFS {
		t.Error("the codes are not portres's")
	}
}

// Everything here fails before the broker is asked, so no broker runs.
func TestUnknownControlCode(t *testing.T) {
	s := socket(t, AF_INET, SOCK_STREAM, IPPROTO_TCP)
	for _, code := range []uint32{0, 0x98000067, 0x98000063, 0x88000064} {
		n, err := s.WSAIoctl(code, rangeBytes(0, 1), make([]byte, 16), nil, nil)
		wantCode(t, "unknown code", err, WSAEINVAL)
		if n != 0 {
			t.Errorf("code %#x: bytesReturned = %d", code, n)
		}
	}
}

// TestInputBuffer: a NULL input buffer, or one smaller than the
// structure the code reads (cbInBuffer too small), is WSAEFAULT, as
// WSAIoctl's reference says; nothing reaches a broker (none runs here)
// and bytesReturned stays 0.
func TestInputBuffer(t *testing.T) {
	s := socket(t, AF_INET, SOCK_DGRAM, IPPROTO_UDP)
	out := map[uint32][]byte{SIO_ACQUIRE_PORT_RESERVATION: make([]byte, 16)}
	size := map[uint32]int{SIO_ACQUIRE_PORT_RESERVATION: SizeofInetPortRange,
		SIO_RELEASE_PORT_RESERVATION: SizeofInetPortReservationToken, SIO_ASSOCIATE_PORT_RESERVATION: SizeofInetPortReservationToken}
	for _, code := range reservationCodes {
		for _, in := range [][]byte{nil, {}, make([]byte, 1), make([]byte, size[code]-1)} {
			n, err := s.WSAIoctl(code, in, out[code], nil, nil)
			wantCode(t, fmt.Sprintf("%s with a %d-byte input buffer (nil: %t)", ioctlName(code), len(in), in == nil), err, WSAEFAULT)
			if n != 0 {
				t.Errorf("%s: bytesReturned = %d, want 0", ioctlName(code), n)
			}
		}
	}
	if _, err := s.WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION, make([]byte, 3), out[SIO_ACQUIRE_PORT_RESERVATION], nil, nil); !stringsContains(err.Error(), "too small (cbInBuffer): INET_PORT_RANGE needs 4") {
		t.Errorf("the error does not say what is too small: %v", err)
	}
	for _, code := range reservationCodes[1:] {
		_, err := s.WSAIoctl(code, tokenBytes(INVALID_PORT_RESERVATION_TOKEN), nil, nil, nil)
		wantCode(t, ioctlName(code)+" of INVALID_PORT_RESERVATION_TOKEN", err, WSAEINVAL)
	}
}

func TestAcquireOutputTooSmall(t *testing.T) {
	s := socket(t, AF_INET, SOCK_STREAM, IPPROTO_TCP)
	for _, out := range [][]byte{nil, make([]byte, 8), make([]byte, 15)} {
		n, err := s.WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION, rangeBytes(40000, 1), out, nil, nil)
		wantCode(t, "ACQUIRE with a short output buffer", err, WSAEINVAL)
		if n != 0 {
			t.Errorf("%d-byte output: bytesReturned = %d, want 0", len(out), n)
		}
	}
}

func TestReleaseAssociateOutputMustBeEmpty(t *testing.T) {
	s := socket(t, AF_INET, SOCK_STREAM, IPPROTO_TCP)
	for _, code := range reservationCodes[1:] {
		for _, out := range [][]byte{make([]byte, 1), make([]byte, 16)} {
			n, err := s.WSAIoctl(code, tokenBytes(42), out, nil, nil)
			wantCode(t, ioctlName(code)+" with an output buffer", err, WSAEINVAL)
			if n != 0 {
				t.Errorf("bytesReturned = %d", n)
			}
		}
	}
}

func TestNeitherTCPNorUDP(t *testing.T) {
	cases := []struct {
		name          string
		af, typ, prot int
		root          bool
	}{
		{"AF_UNIX stream", AF_UNIX, SOCK_STREAM, 0, false},
		{"AF_UNIX datagram", AF_UNIX, SOCK_DGRAM, 0, false},
		{"raw UDP", AF_INET, SOCK_RAW, IPPROTO_UDP, true},
		{"IPv6 raw TCP", AF_INET6, SOCK_RAW, IPPROTO_TCP, true},
		{"netlink", unix.AF_NETLINK, SOCK_RAW, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := NewSocket(c.af, c.typ, c.prot)
			if err != nil && c.root && ErrorCode(err) == WSAEACCES {
				t.Skip("needs root:", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			out := map[uint32][]byte{SIO_ACQUIRE_PORT_RESERVATION: make([]byte, 16)}
			in := map[uint32][]byte{SIO_ACQUIRE_PORT_RESERVATION: rangeBytes(40000, 1)}
			for _, code := range reservationCodes {
				if in[code] == nil {
					in[code] = tokenBytes(42)
				}
				_, err := s.WSAIoctl(code, in[code], out[code], nil, nil)
				wantCode(t, ioctlName(code), err, WSAEOPNOTSUPP)
			}
		})
	}
}

func TestNotASocket(t *testing.T) {
	closed := socket(t, AF_INET, SOCK_STREAM, IPPROTO_TCP)
	if err := closed.Close(); err != nil {
		t.Fatal(err)
	}
	pipe := FromFD(uintptr(pipeFD(t)))
	defer pipe.Close()
	for name, s := range map[string]*Socket{"closed": closed, "zero": {}, "nil": nil, "pipe": pipe} {
		for _, code := range append(reservationCodes, SIO_FLUSH) {
			_, err := s.WSAIoctl(code, tokenBytes(42), nil, nil, nil)
			wantCode(t, name+" "+ioctlName(code), err, WSAENOTSOCK)
		}
		if name == "pipe" {
			continue // a descriptor, just not a socket: only WSAIoctl looks
		}
		wantCode(t, name+" Close", s.Close(), WSAENOTSOCK)
		wantCode(t, name+" Bind", s.Bind(netipAny4), WSAENOTSOCK)
		_, err := s.Getsockname()
		wantCode(t, name+" Getsockname", err, WSAENOTSOCK)
		wantCode(t, name+" SetNonblocking", s.SetNonblocking(true), WSAENOTSOCK)
		wantCode(t, name+" CancelIo", CancelIo(s), WSAENOTSOCK)
	}
	if !errorsIsSyscall(WSAENOTSOCK, syscall.ENOTSOCK) {
		t.Error("WSAENOTSOCK is not ENOTSOCK")
	}
}

func TestCompletionRoutineNeedsOverlapped(t *testing.T) {
	s := socket(t, AF_INET, SOCK_STREAM, IPPROTO_TCP)
	_, err := s.WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION, rangeBytes(40000, 1), make([]byte, 16), nil,
		func(error, uint32, *Overlapped, uint32) { t.Error("completion routine called") })
	wantCode(t, "completion routine without Overlapped", err, WSAEFAULT)
}

func TestSocketErrors(t *testing.T) {
	_, err := NewSocket(9999, SOCK_STREAM, 0)
	wantCode(t, "unknown family", err, WSAEAFNOSUPPORT)
	_, err = NewSocket(AF_INET, SOCK_STREAM, IPPROTO_UDP)
	wantCode(t, "UDP stream", err, WSAEPROTONOSUPPORT)
	if !errorsIsSyscall(err, syscall.EPROTONOSUPPORT) {
		t.Errorf("%v does not match EPROTONOSUPPORT", err)
	}
}
