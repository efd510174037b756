//go:build linux

package testutil

import (
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// Raw-syscall sockets for tests: no SO_REUSEADDR unless asked, no
// netpoller, each closed when the test ends unless CloseFD closed it
// before (never twice: a stale close could hit a reused number and hide
// a leak from CheckFDLeak).

// live maps each tracked fd to the closed flag of its cleanup.
var live sync.Map

// track closes fd when the test ends unless CloseFD did before, and
// returns the flag CloseFD sets.
func track(t testing.TB, fd int) *bool {
	closed := new(bool)
	live.Store(fd, closed)
	t.Cleanup(func() {
		if !*closed {
			CloseFD(fd)
		}
	})
	return closed
}

// CloseFD closes a socket made by Socket, ListenTCP or ConnectTCP now.
func CloseFD(fd int) {
	if v, ok := live.LoadAndDelete(fd); ok {
		*v.(*bool) = true
	}
	unix.Close(fd)
}

// Sockaddr is port on the unspecified address of family, or on its
// loopback address if loopback.
func Sockaddr(family, port int, loopback bool) unix.Sockaddr {
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

// Socket makes a socket of family and typ, bound to port unless it is
// negative, with SO_REUSEADDR if reuse; it is closed when the test ends.
func Socket(t testing.TB, family, typ, port int, reuse bool) int {
	t.Helper()
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	track(t, fd)
	if reuse {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			t.Fatal(err)
		}
	}
	if port >= 0 {
		if err := unix.Bind(fd, Sockaddr(family, port, false)); err != nil {
			t.Fatalf("bind family %d type %d port %d: %v", family, typ, port, err)
		}
	}
	return fd
}

// ListenTCP makes a TCP listener of family on port.
func ListenTCP(t testing.TB, family, port int) int {
	t.Helper()
	fd := Socket(t, family, unix.SOCK_STREAM, port, false)
	if err := unix.Listen(fd, 4096); err != nil {
		t.Fatal(err)
	}
	return fd
}

// ConnectTCP connects a client bound to cport (0: any) to the listener
// ln on lport over loopback and returns the client and accepted fds. At
// the end of the test the client closes first, so the TIME_WAIT entry
// lands on its port, not on the listener's.
func ConnectTCP(t testing.TB, family, ln, lport, cport int) (client, server int) {
	t.Helper()
	client = Socket(t, family, unix.SOCK_STREAM, cport, cport != 0)
	if err := unix.Connect(client, Sockaddr(family, lport, true)); err != nil {
		t.Fatalf("connect to port %d: %v", lport, err)
	}
	server, _, err := unix.Accept4(ln, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	track(t, server)
	v, _ := live.Load(client)
	clientClosed := v.(*bool)
	t.Cleanup(func() {
		if !*clientClosed {
			CloseFD(client)
		}
	})
	return client, server
}
