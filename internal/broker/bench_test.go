package broker_test

import (
	"context"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/fdpass"
	"github.com/portres/portres/internal/testbroker"
	"github.com/portres/portres/internal/testutil"
	"golang.org/x/sys/unix"
)

// BenchmarkBroker measures the broker's operations beside the physical
// floor measured first in the same run (SPEC §9): raw SOCK_SEQPACKET round
// trips, the same through net.UnixConn, one carrying an fd, and a raw
// socket+bind+close. Broker results report "x-rtt", their cost in units
// of the net.UnixConn round trip, the transport the client uses.
//
//	go test -run '^$' -bench Broker ./internal/broker
func BenchmarkBroker(b *testing.B) {
	var rtt time.Duration
	perOp := func(b *testing.B) time.Duration { return b.Elapsed() / time.Duration(b.N) }
	b.Run("floor/seqpacket-raw", func(b *testing.B) { benchSeqpacketRaw(b) })
	b.Run("floor/seqpacket-netconn", func(b *testing.B) {
		benchSeqpacketConn(b, false)
		rtt = perOp(b)
	})
	b.Run("floor/seqpacket-fd", func(b *testing.B) { benchSeqpacketConn(b, true) })
	b.Run("floor/socket-bind-close", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			fd, _ := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err := unix.Bind(fd, &unix.SockaddrInet6{}); err != nil {
				b.Fatal(err)
			}
			unix.Close(fd)
		}
	})
	ratio := func(b *testing.B) {
		if rtt > 0 {
			b.ReportMetric(float64(perOp(b))/float64(rtt), "x-rtt")
		}
	}
	tb := testbroker.Start(b, nil)
	c := tb.Dial(b)
	ctx := context.Background()
	b.Run("broker/acquire-release/specific", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			r, err := c.Acquire(ctx, portres.TCP, 50000, 1)
			if err != nil {
				b.Fatal(err)
			}
			if err := r.Release(ctx); err != nil {
				b.Fatal(err)
			}
		}
		ratio(b)
	})
	b.Run("broker/acquire", func(b *testing.B) {
		// Release happens off the clock.
		for i := 0; i < b.N; i++ {
			r, err := c.Acquire(ctx, portres.TCP, 50000, 1)
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			r.Release(ctx)
			b.StartTimer()
		}
		ratio(b)
	})
	b.Run("broker/release", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			r, err := c.Acquire(ctx, portres.TCP, 50000, 1)
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if err := r.Release(ctx); err != nil {
				b.Fatal(err)
			}
		}
		ratio(b)
	})
	b.Run("broker/acquire-release/wildcard", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			r, err := c.Acquire(ctx, portres.UDP, 0, 1)
			if err != nil {
				b.Fatal(err)
			}
			if err := r.Release(ctx); err != nil {
				b.Fatal(err)
			}
		}
		ratio(b)
	})
	b.Run("broker/acquire-release/bpf", func(b *testing.B) {
		// bpf mode: the block is guarded and also written to
		// ip_local_reserved_ports (with its bookkeeping) on both ends.
		cg, _ := testutil.Cgroup(b)
		bb := testbroker.Start(b, func(c *broker.Config) { c.Enforce = broker.EnforceBPF; c.Cgroup = cg })
		if bb.Enforcement() != broker.EnforceBPF {
			b.Skip("the eBPF bind guard did not load here")
		}
		bc := bb.Dial(b)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			r, err := bc.Acquire(ctx, portres.TCP, 50500, 1)
			if err != nil {
				b.Fatal(err)
			}
			if err := r.Release(ctx); err != nil {
				b.Fatal(err)
			}
		}
		ratio(b)
	})
	r, err := c.Acquire(ctx, portres.TCP, 51000, 100)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("broker/brokered-bind", func(b *testing.B) {
		// socket, pass it, broker binds, reply, close: the SPEC's
		// "brokered bind" floor row, done through the product.
		for i := 0; i < b.N; i++ {
			fd, _ := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if _, err := c.BindFD(ctx, r.Token(), fd, netip.Addr{}, 0); err != nil {
				b.Fatal(err)
			}
			unix.Close(fd)
			if i%50 == 49 {
				// Let the sweep put placeholders back on closed ports.
				b.StopTimer()
				waitFree(b, c, r.Token())
				b.StartTimer()
			}
		}
		ratio(b)
	})
}

// waitFree waits until no port of token is bound.
func waitFree(b *testing.B, c *portres.Client, token uint64) {
	for {
		infos, err := c.Show(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		free := true
		for _, i := range infos {
			if i.Token == token && len(i.Bound) > 0 {
				free = false
			}
		}
		if free {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func seqpacketPair(b *testing.B) (int, int) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	return fds[0], fds[1]
}

// benchSeqpacketRaw: 8-byte ping-pong with blocking read/write syscalls.
func benchSeqpacketRaw(b *testing.B) {
	x, y := seqpacketPair(b)
	defer unix.Close(x)
	go func() {
		runtime.LockOSThread()
		buf := make([]byte, 8)
		for {
			n, err := unix.Read(y, buf)
			if err != nil || n == 0 {
				unix.Close(y)
				return
			}
			unix.Write(y, buf[:n])
		}
	}()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	buf := make([]byte, 8)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		unix.Write(x, buf)
		unix.Read(x, buf)
	}
}

// benchSeqpacketConn: the same through net.UnixConn on both sides, the
// way client and broker talk; withFD passes a descriptor each way out.
func benchSeqpacketConn(b *testing.B, withFD bool) {
	x, y := seqpacketPair(b)
	cx, cy := fileConn(b, x), fileConn(b, y)
	defer cx.Close()
	go func() {
		defer cy.Close()
		buf := make([]byte, 64)
		for {
			n, fds, err := fdpass.Recv(cy, buf)
			for _, fd := range fds {
				unix.Close(fd)
			}
			if err != nil || n == 0 {
				return
			}
			fdpass.Send(cy, buf[:n])
		}
	}()
	buf := make([]byte, 64)
	f, _ := os.Open(os.DevNull)
	defer f.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if withFD {
			fdpass.Send(cx, buf[:8], int(f.Fd()))
		} else {
			fdpass.Send(cx, buf[:8])
		}
		fdpass.Recv(cx, buf)
	}
}

func fileConn(b *testing.B, fd int) *net.UnixConn {
	f := os.NewFile(uintptr(fd), "seqpacket")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		b.Fatal(err)
	}
	return c.(*net.UnixConn)
}
