//go:build linux

package enforce

import (
	"errors"
	"testing"

	"github.com/portres/portres/internal/testutil"
	"golang.org/x/sys/unix"
)

// bindOther tries an explicit bind of port as a foreign program would.
func bindOther(t *testing.T, af, typ int, reuse bool, port uint16) error {
	t.Helper()
	fd, err := unix.Socket(af, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if reuse {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}
	if af == unix.AF_INET {
		return unix.Bind(fd, &unix.SockaddrInet4{Port: int(port), Addr: [4]byte{127, 0, 0, 1}})
	}
	return unix.Bind(fd, &unix.SockaddrInet6{Port: int(port)})
}

func TestHoldBlocksForeignBinds(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.CheckFDLeak(t)
	for _, proto := range []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
		typ, _ := sockType(proto)
		const port = 23456
		fd, err := Hold(proto, port)
		if err != nil {
			t.Fatal(err)
		}
		for _, af := range []int{unix.AF_INET, unix.AF_INET6} {
			for _, reuse := range []bool{false, true} {
				if err := bindOther(t, af, typ, reuse, port); !errors.Is(err, unix.EADDRINUSE) {
					t.Errorf("%s af=%d reuse=%v: foreign bind = %v, want EADDRINUSE", protoName(proto), af, reuse, err)
				}
			}
		}
		if err := Probe(proto, port); !errors.Is(err, unix.EADDRINUSE) {
			t.Errorf("Probe of a held port = %v, want EADDRINUSE", err)
		}
		Unhold(fd)
		if err := Probe(proto, port); err != nil {
			t.Errorf("Probe after Unhold = %v", err)
		}
	}
	if _, err := Hold(1, 80); err == nil {
		t.Error("Hold(ICMP) succeeded")
	}
}
