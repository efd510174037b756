//go:build linux

package sockdiag

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/portres/portres/internal/testutil"
	"golang.org/x/sys/unix"
)

// TestWatchDestroy: closing a bound socket is announced with its port
// and cookie at once, for TCP and UDP, IPv4 and IPv6.
func TestWatchDestroy(t *testing.T) {
	testutil.RequireRoot(t)
	for _, tc := range []struct {
		name      string
		proto     uint8
		typ, af   int
		sa        unix.Sockaddr
		listening bool
	}{
		{"tcp4 listener", unix.IPPROTO_TCP, unix.SOCK_STREAM, unix.AF_INET, &unix.SockaddrInet4{Port: 41001}, true},
		{"tcp6 listener", unix.IPPROTO_TCP, unix.SOCK_STREAM, unix.AF_INET6, &unix.SockaddrInet6{Port: 41002}, true},
		{"udp4", unix.IPPROTO_UDP, unix.SOCK_DGRAM, unix.AF_INET, &unix.SockaddrInet4{Port: 41003}, false},
		{"udp6", unix.IPPROTO_UDP, unix.SOCK_DGRAM, unix.AF_INET6, &unix.SockaddrInet6{Port: 41004}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := Watch(tc.proto)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			fd, err := unix.Socket(tc.af, tc.typ|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := unix.Bind(fd, tc.sa); err != nil {
				t.Fatal(err)
			}
			if tc.listening {
				unix.Listen(fd, 1)
			}
			port := uint16(0)
			switch a := tc.sa.(type) {
			case *unix.SockaddrInet4:
				port = uint16(a.Port)
			case *unix.SockaddrInet6:
				port = uint16(a.Port)
			}
			cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
			if err != nil {
				t.Fatal(err)
			}
			unix.Close(fd)
			deadline := time.Now().Add(3 * time.Second)
			for time.Now().Before(deadline) {
				ports, err := w.Next()
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range ports {
					if p.Port == port {
						if p.Cookie != cookie {
							t.Errorf("closing a %s on port %d: announced with cookie %#x, want %#x", tc.name, port, p.Cookie, cookie)
						}
						return
					}
				}
			}
			t.Errorf("closing a %s on port %d was not announced", tc.name, port)
		})
	}
	if _, err := Watch(1); err == nil {
		t.Error("Watch(ICMP) worked")
	}
	// Close ends a waiting Next.
	w, err := Watch(unix.IPPROTO_UDP)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := w.Next(); done <- err }()
	time.Sleep(20 * time.Millisecond)
	w.Close()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Next after Close: %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a waiting Next")
	}
}

// TestWatchPause: what is announced during a Pause waits in the socket:
// Drain returns it without waiting (or else Next); Close ends a Pause
// early.
func TestWatchPause(t *testing.T) {
	testutil.RequireRoot(t)
	w, err := Watch(unix.IPPROTO_UDP)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	paused := make(chan struct{})
	go func() { w.Pause(50 * time.Millisecond); close(paused) }()
	for _, port := range []int{41011, 41012} {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port}); err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
	}
	<-paused
	// Drain returns what waits without waiting; then nothing.
	time.Sleep(20 * time.Millisecond) // the kernel announces from a work queue
	drained, err := w.Drain()
	if err != nil {
		t.Fatal(err)
	}
	if again, err := w.Drain(); len(again) != 0 || err != nil {
		t.Errorf("a second Drain: %v %v, want nothing", again, err)
	}
	got := map[uint16]bool{}
	for _, c := range drained {
		got[c.Port] = true
	}
	for start := time.Now(); !(got[41011] && got[41012]); {
		ports, err := w.Next()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ports {
			got[p.Port] = true
		}
		if time.Since(start) > 3*time.Second {
			t.Fatalf("after the pause, announced: %v, want 41011 and 41012", got)
		}
	}
	start := time.Now()
	go func() { time.Sleep(20 * time.Millisecond); w.Close() }()
	w.Pause(10 * time.Second)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close ended a Pause after %v", d)
	}
}

// TestWatchFilterPorts: with the kernel-side filter, only sockets whose
// port is set in the shared bitmap are announced, and of those, where a
// cookie is set for the port, only that socket; clearing the bit stops
// them again. IPv4 and IPv6, TCP and UDP.
func TestWatchFilterPorts(t *testing.T) {
	testutil.RequireRoot(t)
	for _, proto := range []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
		w, err := Watch(proto)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		bits, cookies, err := w.FilterPorts()
		if err != nil {
			t.Fatalf("FilterPorts: %v", err)
		}
		typ := unix.SOCK_STREAM
		if proto == unix.IPPROTO_UDP {
			typ = unix.SOCK_DGRAM
		}
		// bindClose binds a socket on port and closes it; named, before
		// the close, sets the port's cookie to the socket's own (true)
		// or to another socket's (false).
		bindClose := func(af int, port uint16, named ...bool) uint64 {
			fd, err := unix.Socket(af, typ|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			var sa unix.Sockaddr = &unix.SockaddrInet4{Port: int(port)}
			if af == unix.AF_INET6 {
				sa = &unix.SockaddrInet6{Port: int(port)}
			}
			if err := unix.Bind(fd, sa); err != nil {
				t.Fatal(err)
			}
			cookie, _ := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
			if len(named) > 0 {
				if named[0] {
					cookies.Set(port, cookie)
				} else {
					cookies.Set(port, cookie+1) // never a live socket's: cookies grow
				}
			}
			unix.Close(fd)
			return cookie
		}
		const watched, other = 41200, 41201 // same bitmap word
		bits[watched/64].Or(1 << (watched % 64))
		got := make(chan []Closed, 16)
		go func() {
			for {
				ports, err := w.Next()
				if err != nil {
					close(got)
					return
				}
				got <- ports
			}
		}()
		for _, af := range []int{unix.AF_INET, unix.AF_INET6} {
			bindClose(af, other)
			bindClose(af, watched)
			select {
			case ports := <-got:
				if len(ports) != 1 || ports[0].Port != watched {
					t.Errorf("proto %d af %d: announced %v, want only %d", proto, af, ports, watched)
				}
			case <-time.After(3 * time.Second):
				t.Fatalf("proto %d af %d: closing a watched port was not announced", proto, af)
			}
		}
		// With a cookie for the port, only that socket's destroy comes.
		for _, af := range []int{unix.AF_INET, unix.AF_INET6} {
			bindClose(af, watched, false)
			mine := bindClose(af, watched, true)
			select {
			case ports := <-got:
				if len(ports) != 1 || ports[0].Port != watched || ports[0].Cookie != mine {
					t.Errorf("proto %d af %d: announced %v, want only the named socket (%#x) on %d", proto, af, ports, mine, watched)
				}
			case <-time.After(3 * time.Second):
				t.Fatalf("proto %d af %d: the named socket's destroy was not announced", proto, af)
			}
		}
		cookies.Set(watched, 0)
		bits[watched/64].And(^uint64(1 << (watched % 64)))
		bindClose(unix.AF_INET, watched)
		select {
		case ports := <-got:
			t.Errorf("proto %d: announced %v after its bit was cleared", proto, ports)
		case <-time.After(200 * time.Millisecond):
		}
		w.Close()
	}
}
