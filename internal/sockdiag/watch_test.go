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

// TestWatchDestroy: closing a bound socket is announced with its port at
// once, for TCP and UDP, IPv4 and IPv6.
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
			unix.Close(fd)
			deadline := time.Now().Add(3 * time.Second)
			for time.Now().Before(deadline) {
				ports, err := w.Next()
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range ports {
					if p == port {
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
