package winsock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/testbroker"
	"github.com/portres/portres/internal/testutil"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { testutil.Main(m) }

func init() {
	testutil.Helpers["winsock-steal"] = helperSteal
}

// helperSteal runs in another process (possibly as another user): it
// tries ASSOCIATE and RELEASE of TOKEN on a TCP socket and prints the
// Winsock code of each.
func helperSteal(args []string) int {
	tok, _ := strconv.ParseUint(args[0], 10, 64)
	s, err := NewSocket(AF_INET, SOCK_STREAM, IPPROTO_TCP)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	defer s.Close()
	in := tokenBytes(tok)
	_, err = s.WSAIoctl(SIO_ASSOCIATE_PORT_RESERVATION, in, nil, nil, nil)
	fmt.Println("associate", uint32(ErrorCode(err)))
	_, err = s.WSAIoctl(SIO_RELEASE_PORT_RESERVATION, in, nil, nil, nil)
	fmt.Println("release", uint32(ErrorCode(err)))
	return 0
}

// checkFDs fails t if it leaks descriptors: sockets, broker connections
// or placeholders. The runtime's poller is started first, so that its own
// descriptors do not count.
func checkFDs(t *testing.T) {
	t.Helper()
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		ln.Close()
	}
	testutil.CheckFDLeak(t)
}

// broker starts a broker for t and points the package at it.
func broker(t *testing.T) *testbroker.Broker {
	t.Helper()
	b := testbroker.Start(t, nil)
	SetBrokerSocket(b.Config.Socket)
	t.Cleanup(func() {
		WSACleanup()
		SetBrokerSocket("")
	})
	return b
}

// socket opens a socket closed at the end of the test.
func socket(t *testing.T, af, typ, proto int) *Socket {
	t.Helper()
	s, err := NewSocket(af, typ, proto)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func rangeBytes(start, count uint16) []byte {
	b, _ := INET_PORT_RANGE{StartPort: Htons(start), NumberOfPorts: count}.MarshalBinary()
	return b
}

func tokenBytes(tok uint64) []byte {
	b, _ := INET_PORT_RESERVATION_TOKEN{Token: tok}.MarshalBinary()
	return b
}

// acquire acquires a block synchronously on s and returns what it got.
func acquire(t *testing.T, s *Socket, start, count uint16) INET_PORT_RESERVATION_INSTANCE {
	t.Helper()
	out := make([]byte, SizeofInetPortReservationInstance)
	n, err := s.WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION, rangeBytes(start, count), out, nil, nil)
	if err != nil || n != SizeofInetPortReservationInstance {
		t.Fatalf("ACQUIRE %d+%d: %d bytes, %v", start, count, n, err)
	}
	var inst INET_PORT_RESERVATION_INSTANCE
	inst.UnmarshalBinary(out)
	return inst
}

// wantCode fails t unless err carries code, matching both the Winsock
// value and its Go equivalent.
func wantCode(t *testing.T, what string, err error, code Errno) {
	t.Helper()
	if !errors.Is(err, code) || ErrorCode(err) != code {
		t.Errorf("%s: %v, want %s", what, err, code.Name())
		return
	}
	if se := code.Syscall(); se != 0 && !errors.Is(err, se) {
		t.Errorf("%s: %v does not match %v", what, err, se)
	}
}

// waitEmpty waits until the broker lists no reservation and every port
// given can be bound by a foreign program: a reservation still being
// placed (or unwound) is not listed, but holds its ports.
func waitEmpty(t *testing.T, b *testbroker.Broker, ports ...uint16) {
	t.Helper()
	c := b.Dial(t)
	deadline := time.Now().Add(5 * time.Second)
	for {
		infos, err := c.Show(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var busy []uint16
		for _, p := range ports {
			if rawBind(p) != nil {
				busy = append(busy, p)
			}
		}
		if len(infos) == 0 && len(busy) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the broker still holds %+v; ports %v not bindable", infos, busy)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// show returns the reservations the broker lists.
func show(t *testing.T, b *testbroker.Broker) []portres.Info {
	t.Helper()
	infos, err := b.Dial(t).Show(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return infos
}

// rawBind binds a plain TCP socket to port on [::] (dual stack) and
// closes it, like a program that knows nothing of portres.
func rawBind(port uint16) error {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Bind(fd, &unix.SockaddrInet6{Port: int(port)})
}

// pipeFD returns the read end of a pipe, closed at the end of the test
// unless taken over.
func pipeFD(t *testing.T) int {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(p[1]) })
	return p[0]
}

var netipAny4 = netip.AddrPortFrom(netip.IPv4Unspecified(), 0)

func stringsContains(s, sub string) bool { return strings.Contains(s, sub) }

func errorsIsSyscall(err error, errno syscall.Errno) bool { return errors.Is(err, errno) }
