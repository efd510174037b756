//go:build linux

// Package portrestest gives tests ports that no other test, process or
// parallel test binary can take: listeners bound on reserved ports, and
// reserved port numbers for servers a test starts itself (a database, an
// HTTP server in a subprocess). Everything a test takes is released when
// it ends (t.Cleanup).
//
//	ln := portrestest.Listen(t, "tcp")             // a listener nobody else can take the port of
//	port := portrestest.Port(t, portres.TCP)       // a port for `etcd --listen-client-urls`
//	ports := portrestest.Ports(t, portres.UDP, 3)  // three in a row
//
// It needs no setup: it uses the broker at $PORTRES_SOCKET, or the
// system's or the user's portresd if one runs, and otherwise starts a
// broker of its own for the user (this test binary, re-executed
// detached), which every test process of the user shares and which exits
// by itself after a minute without clients. That broker changes nothing
// of the host's (no kernel list, no eBPF: placeholder sockets hold the
// ports) and places ports outside the kernel's ephemeral range
// (net.ipv4.ip_local_port_range), where the kernel never hands ports out
// by itself, as HashiCorp's freeport does: a port from Port stays free
// until the test's server binds it. $PORTRESTEST_RANGE=LO-HI places them
// there instead.
package portrestest

import (
	"context"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/portres/portres"
)

var shared struct {
	once sync.Once
	c    *portres.Client
	err  error
}

// Client is the connection to the broker that this test process's
// reservations live on, shared by its tests (a reservation still ends
// with the test that took it). It fails t if no broker can be reached or
// started.
func Client(t testing.TB) *portres.Client {
	t.Helper()
	shared.once.Do(func() { shared.c, shared.err = connect() })
	if shared.err != nil {
		t.Fatalf("portrestest: %v", shared.err)
	}
	return shared.c
}

// Listen returns a listener ("tcp", "tcp4" or "tcp6") on a port reserved
// for the test, bound through the broker: no other process can bind the
// port while the test runs. It is closed, and the port released, when
// the test ends.
func Listen(t testing.TB, network string) net.Listener {
	t.Helper()
	ctx := context.Background()
	ln, r, err := Client(t).Listen(ctx, network, addrFor(network))
	if err != nil {
		t.Fatalf("portrestest: listen: %v", err)
	}
	t.Cleanup(func() {
		ln.Close()
		r.Release(context.Background())
	})
	return ln
}

// ListenPacket is Listen for UDP ("udp", "udp4" or "udp6").
func ListenPacket(t testing.TB, network string) net.PacketConn {
	t.Helper()
	ctx := context.Background()
	pc, r, err := Client(t).ListenPacket(ctx, network, addrFor(network))
	if err != nil {
		t.Fatalf("portrestest: listen: %v", err)
	}
	t.Cleanup(func() {
		pc.Close()
		r.Release(context.Background())
	})
	return pc
}

// Port returns a port of proto reserved for the test, for a server the
// test starts itself and that binds it with a plain bind(). Until then
// nothing else gets it: not another test, not another portres client,
// and not the kernel's automatic assignment. It is released when the
// test ends.
func Port(t testing.TB, proto portres.Proto) uint16 {
	t.Helper()
	return Ports(t, proto, 1)[0]
}

// Ports is Port for n consecutive ports.
func Ports(t testing.TB, proto portres.Proto, n int) []uint16 {
	t.Helper()
	if n < 1 || n > 65535 {
		t.Fatalf("portrestest: Ports(%d)", n)
	}
	r, err := Client(t).AcquireDelegated(context.Background(), proto, 0, uint16(n))
	if err != nil {
		t.Fatalf("portrestest: %d %s ports: %v", n, proto, err)
	}
	t.Cleanup(func() { r.Release(context.Background()) })
	return r.Ports()
}

// addrFor is the address to listen on for network: loopback, as tests
// want, in the network's family.
func addrFor(network string) string {
	if network == "tcp6" || network == "udp6" {
		return "[::1]:0"
	}
	return "127.0.0.1:0"
}

// connect dials the broker to use, starting one if there is none.
func connect() (*portres.Client, error) {
	ctx := context.Background()
	if os.Getenv("PORTRES_SOCKET") != "" {
		return portres.Dial(ctx, "")
	}
	if c, err := portres.Dial(ctx, ""); err == nil {
		return c, nil // the system's or the user's portresd
	}
	sock, err := socketPath()
	if err != nil {
		return nil, err
	}
	var last error
	for try := 0; try < 4; try++ {
		// Start one; if other processes of the user start one at the same
		// moment, the broker's lock keeps one of them and the others exit.
		if err := startBroker(sock); err != nil {
			return nil, err
		}
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			c, err := portres.Dial(ctx, sock)
			if err == nil {
				return c, nil
			}
			last = err
		}
	}
	return nil, last
}
