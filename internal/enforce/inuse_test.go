package enforce

import (
	"testing"

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
