package sockdiag

import (
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Raw-syscall sockets for the tests: no SO_REUSEADDR unless asked, no
// netpoller, each closed when the test ends unless closeFD closed it
// before (never twice: a stale close could hit a reused number and hide
// a leak from testutil.CheckFDLeak).

// live maps each tracked fd to the closed flag of its cleanup.
var live sync.Map

func track(t testing.TB, fd int) {
	closed := new(bool)
	live.Store(fd, closed)
	t.Cleanup(func() {
		if !*closed {
			closeFD(fd)
		}
	})
}

func closeFD(fd int) {
	if v, ok := live.LoadAndDelete(fd); ok {
		*v.(*bool) = true
	}
	unix.Close(fd)
}

func sockaddr(family, port int, loopback bool) unix.Sockaddr {
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

// socket makes a socket of family and typ, bound to port unless it is
// negative, with SO_REUSEADDR if reuse.
func socket(t testing.TB, family, typ, port int, reuse bool) int {
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
		if err := unix.Bind(fd, sockaddr(family, port, false)); err != nil {
			t.Fatalf("bind family %d type %d port %d: %v", family, typ, port, err)
		}
	}
	return fd
}

func listenTCP(t testing.TB, family, port int) int {
	t.Helper()
	fd := socket(t, family, unix.SOCK_STREAM, port, false)
	if err := unix.Listen(fd, 4096); err != nil {
		t.Fatal(err)
	}
	return fd
}

// connectTCP connects a client bound to cport (0: any) to the listener
// ln on lport over loopback and returns the client and accepted fds. At
// the end of the test the client closes first, so the TIME_WAIT entry
// lands on its port, not on the listener's.
func connectTCP(t testing.TB, family, ln, lport, cport int) (client, server int) {
	t.Helper()
	client = socket(t, family, unix.SOCK_STREAM, cport, cport != 0)
	if err := unix.Connect(client, sockaddr(family, lport, true)); err != nil {
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
			closeFD(client)
		}
	})
	return client, server
}

// timeWait leaves a TCP TIME_WAIT entry on cport: a client bound there
// connects to a listener on lport and closes first (the active close);
// the accepted side and the listener are closed after it.
func timeWait(t testing.TB, family, lport, cport int) {
	t.Helper()
	ln := listenTCP(t, family, lport)
	client, server := connectTCP(t, family, ln, lport, cport)
	closeFD(client)
	closeFD(server)
	closeFD(ln)
	deadline := time.Now().Add(3 * time.Second)
	for {
		tw, err := OnlyTimeWait(uint16(cport))
		if err != nil {
			t.Fatal(err)
		}
		if tw {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no TIME_WAIT entry on port %d", cport)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
