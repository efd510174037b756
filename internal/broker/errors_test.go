//go:build linux

package broker_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/testbroker"
	"github.com/portres/portres/internal/testutil"
	"golang.org/x/sys/unix"
)

// socketFD makes a socket for the error table; closed at test end.
func socketFD(t *testing.T, af, typ, proto int) int {
	t.Helper()
	fd, err := unix.Socket(af, typ|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// TestErrorCodes provokes every Winsock code of docs/MODEL.md the runtime
// broker can return, and checks the Go equivalents match too.
func TestErrorCodes(t *testing.T) {
	b := testbroker.Start(t, nil)
	c := b.Dial(t)
	ctx := context.Background()
	tcp, err := c.Acquire(ctx, portres.TCP, 47000, 4)
	if err != nil {
		t.Fatal(err)
	}
	udp, err := c.Acquire(ctx, portres.UDP, 47000, 1)
	if err != nil {
		t.Fatal(err)
	}
	inUse, err := net.Listen("tcp", "127.0.0.1:47100")
	if err != nil {
		t.Fatal(err)
	}
	defer inUse.Close()
	r, w, _ := os.Pipe()
	defer r.Close()
	defer w.Close()
	bound := socketFD(t, unix.AF_INET, unix.SOCK_STREAM, 0)
	unix.Bind(bound, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	pc, err := udp.ListenPacket(ctx, "udp", ":0") // the only port: exhausted
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ln, err := tcp.Listen(ctx, "tcp", ":47001")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	persistent, err := c.CreatePersistent(ctx, portres.TCP, 47200, 2)
	if err != nil {
		t.Fatal(err)
	}

	tcpSock := func() int { return socketFD(t, unix.AF_INET6, unix.SOCK_STREAM, 0) }
	cases := []struct {
		name string
		do   func() error
		code portres.Errno
		goes error  // a Go equivalent errors.Is must match
		msg  string // a fragment the message must contain
	}{
		{"zero count", func() error { _, err := c.Acquire(ctx, portres.TCP, 47300, 0); return err }, portres.WSAEINVAL, syscall.EINVAL, "1 to 65535"},
		{"past 65535", func() error { _, err := c.Acquire(ctx, portres.TCP, 65530, 10); return err }, portres.WSAEINVAL, os.ErrInvalid, "past port 65535"},
		{"not tcp or udp", func() error { _, err := c.Acquire(ctx, portres.Proto(1), 47300, 1); return err }, portres.WSAEINVAL, syscall.EINVAL, "neither tcp"},
		{"overlap names owner", func() error { _, err := c.Acquire(ctx, portres.TCP, 47002, 5); return err }, portres.WSAEADDRINUSE, syscall.EADDRINUSE, "pid"},
		{"port in use", func() error { _, err := c.Acquire(ctx, portres.TCP, 47099, 3); return err }, portres.WSAEADDRINUSE, syscall.EADDRINUSE, "port 47100 is in use"},
		{"overlap persistent", func() error { _, err := c.Acquire(ctx, portres.TCP, 47201, 1); return err }, portres.WSAEADDRINUSE, syscall.EADDRINUSE, "persistent"},
		{"unknown token", func() error { _, err := c.BindFD(ctx, 12345, tcpSock(), netip.Addr{}, 0); return err }, portres.WSAEINVAL, syscall.EINVAL, "no reservation"},
		{"release unknown", func() error { _, err := c.Release(ctx, 12345); return err }, portres.WSAEINVAL, syscall.EINVAL, "no reservation"},
		{"release persistent", func() error { return persistent.Release(ctx) }, portres.WSAEINVAL, syscall.EINVAL, "persistent delete"},
		{"not a socket", func() error { _, err := c.BindFD(ctx, tcp.Token(), int(r.Fd()), netip.Addr{}, 0); return err }, portres.WSAENOTSOCK, syscall.ENOTSOCK, "not a socket"},
		{"unix socket", func() error {
			_, err := c.BindFD(ctx, tcp.Token(), socketFD(t, unix.AF_UNIX, unix.SOCK_STREAM, 0), netip.Addr{}, 0)
			return err
		}, portres.WSAEOPNOTSUPP, syscall.EOPNOTSUPP, "not an IPv4 or IPv6"},
		{"raw socket", func() error {
			_, err := c.BindFD(ctx, tcp.Token(), socketFD(t, unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP), netip.Addr{}, 0)
			return err
		}, portres.WSAEOPNOTSUPP, syscall.EOPNOTSUPP, "neither TCP nor UDP"},
		{"udp socket, tcp block", func() error {
			_, err := c.BindFD(ctx, tcp.Token(), socketFD(t, unix.AF_INET, unix.SOCK_DGRAM, 0), netip.Addr{}, 0)
			return err
		}, portres.WSAEINVAL, syscall.EINVAL, "udp socket cannot be bound"},
		{"already bound", func() error { _, err := c.BindFD(ctx, tcp.Token(), bound, netip.Addr{}, 0); return err }, portres.WSAEINVAL, syscall.EINVAL, "already bound"},
		{"port outside block", func() error { _, err := c.BindFD(ctx, tcp.Token(), tcpSock(), netip.Addr{}, 47010); return err }, portres.WSAEINVAL, syscall.EINVAL, "outside"},
		{"port already bound", func() error { _, err := c.BindFD(ctx, tcp.Token(), tcpSock(), netip.Addr{}, 47001); return err }, portres.WSAEADDRINUSE, syscall.EADDRINUSE, "already bound"},
		{"v6 address on v4 socket", func() error {
			_, err := c.BindFD(ctx, tcp.Token(), socketFD(t, unix.AF_INET, unix.SOCK_STREAM, 0), netip.MustParseAddr("::1"), 0)
			return err
		}, portres.WSAEINVAL, syscall.EINVAL, "IPv6 address"},
		{"exhausted", func() error { _, err := udp.ListenPacket(ctx, "udp", ":0"); return err }, portres.WSAENOBUFS, syscall.ENOBUFS, "every port"},
		{"cancelled before sending", func() error {
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			_, err := c.Acquire(cctx, portres.TCP, 47300, 1)
			return err
		}, portres.WSA_OPERATION_ABORTED, context.Canceled, "cancelled"},
		{"fleet lease, no fleet", func() error { _, err := c.AcquireFleet(ctx, portres.TCP, 0, 1); return err }, portres.WSAEOPNOTSUPP, syscall.EOPNOTSUPP, "not a member of a fleet"},
		{"fleet create, no fleet", func() error { _, err := c.CreateFleetPersistent(ctx, portres.TCP, 47400, 1); return err }, portres.WSAEOPNOTSUPP, syscall.EOPNOTSUPP, "portresd --etcd"},
		{"fleet view, no fleet", func() error { _, err := c.ShowFleet(ctx); return err }, portres.WSAEOPNOTSUPP, syscall.EOPNOTSUPP, "not a member of a fleet"},
		{"broker down", func() error { _, err := portres.Dial(ctx, b.Config.Socket+".nothing"); return err }, portres.WSAENETDOWN, syscall.ENETDOWN, "portresd running"},
		{"closed client", func() error {
			c2 := b.Dial(t)
			c2.Close()
			_, err := c2.Show(ctx)
			return err
		}, portres.WSA_OPERATION_ABORTED, net.ErrClosed, "closed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			var pe *portres.Error
			if !errors.As(err, &pe) {
				t.Fatalf("got %v (%T), want a *portres.Error", err, err)
			}
			if pe.Code != tc.code || !errors.Is(err, tc.code) {
				t.Errorf("code %v, want %v: %v", pe.Code, tc.code, err)
			}
			if !errors.Is(err, tc.goes) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.goes)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("message %q lacks %q", err.Error(), tc.msg)
			}
		})
	}
}

// TestCancelLongAcquire: cancelling a context while the broker binds
// thousands of placeholders aborts the acquire and leaves nothing behind.
func TestCancelLongAcquire(t *testing.T) {
	b := testbroker.Start(t, nil)
	c := b.Dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Millisecond)
	defer cancel()
	_, err := c.Acquire(ctx, portres.TCP, 2000, 15000)
	if !errors.Is(err, portres.WSA_OPERATION_ABORTED) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled acquire: %v, want WSA_OPERATION_ABORTED wrapping the deadline", err)
	}
	if infos, err := c.Show(context.Background()); err != nil || len(infos) != 0 {
		t.Fatalf("after the abort Show = %+v, %v; want nothing", infos, err)
	}
	if _, err := c.Acquire(context.Background(), portres.TCP, 2000, 100); err != nil {
		t.Fatalf("the client is unusable after a cancel: %v", err)
	}
}

// TestFDExhaustion: running the broker out of descriptors is an error the
// client sees (WSAEMFILE), after which the broker still works.
func TestFDExhaustion(t *testing.T) {
	b := testbroker.Start(t, nil)
	c := b.Dial(t)
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	low := old
	low.Cur = uint64(testutil.OpenFDs(t) + 200)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	_, err := c.Acquire(context.Background(), portres.UDP, 10000, 1000)
	unix.Setrlimit(unix.RLIMIT_NOFILE, &old)
	if !errors.Is(err, portres.WSAEMFILE) || !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("acquire beyond RLIMIT_NOFILE: %v, want WSAEMFILE", err)
	}
	if infos, err := c.Show(context.Background()); err != nil || len(infos) != 0 {
		t.Fatalf("after EMFILE Show = %+v, %v; want nothing", infos, err)
	}
	if _, err := c.Acquire(context.Background(), portres.UDP, 10000, 1000); err != nil {
		t.Fatalf("acquire after the limit was restored: %v", err)
	}
}
