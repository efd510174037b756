//go:build linux

package broker_test

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/fdpass"
	"github.com/portres/portres/internal/testbroker"
	"github.com/portres/portres/internal/wire"
	"golang.org/x/sys/unix"
)

// rawConn is a connection that speaks bytes, not the client library.
func rawConn(t *testing.T, b *testbroker.Broker) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: b.Config.Socket, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func readResponse(t *testing.T, c *net.UnixConn) *wire.Response {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, wire.MaxMessage)
	n, fds, err := fdpass.Recv(c, buf)
	if err != nil || len(fds) != 0 {
		t.Fatalf("reading the answer: %v (%d fds)", err, len(fds))
	}
	r, err := wire.DecodeResponse(buf[:n])
	if err != nil {
		t.Fatalf("broker sent a malformed answer: %v", err)
	}
	return r
}

// TestMalformedMessages: garbage, truncated and ill-formed requests get a
// WSAEINVAL answer, the connection keeps working, passed descriptors are
// closed, and reservations on the connection are still released when it
// closes.
func TestMalformedMessages(t *testing.T) {
	b := testbroker.Start(t, nil)
	c := rawConn(t, b)
	acquire := wire.AppendRequest(nil, &wire.Request{ID: 1, Op: wire.OpAcquire, Proto: 6, Start: 48000, Count: 3})
	if err := fdpass.Send(c, acquire); err != nil {
		t.Fatal(err)
	}
	if r := readResponse(t, c); r.Code != 0 || r.Token == 0 {
		t.Fatalf("acquire: %+v", r)
	}
	before := countOpen(t, os.DevNull)
	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()
	good := wire.AppendRequest(nil, &wire.Request{ID: 7, Op: wire.OpRelease, Token: 1})
	bad := [][]byte{
		{0},
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		good[:len(good)-3],
		append(append([]byte{}, good...), 0xff),
		append([]byte{wire.Magic, 99}, good[2:]...),
		wire.AppendRequest(nil, &wire.Request{ID: 8, Op: wire.OpShow})[:5],
		make([]byte, wire.MaxMessage+100), // truncated datagram
	}
	for i, msg := range bad {
		if err := fdpass.Send(c, msg, int(devnull.Fd())); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if r := readResponse(t, c); r.Code != uint32(portres.WSAEINVAL) {
			t.Errorf("message %d: answer %+v, want WSAEINVAL", i, r)
		}
	}
	// Operations that take no descriptor refuse one; bind refuses more
	// than fdpass.MaxFDs (the message arrives truncated) and checks every
	// one it takes.
	show := wire.AppendRequest(nil, &wire.Request{ID: 9, Op: wire.OpShow})
	fdpass.Send(c, show, int(devnull.Fd()))
	if r := readResponse(t, c); r.Code != uint32(portres.WSAEINVAL) || r.ID != 9 {
		t.Errorf("show with an fd: %+v", r)
	}
	bind := wire.AppendRequest(nil, &wire.Request{ID: 10, Op: wire.OpBind, Token: 1})
	fdpass.Send(c, bind, int(devnull.Fd()), int(devnull.Fd()))
	if r := readResponse(t, c); r.Code != uint32(portres.WSAENOTSOCK) || r.ID != 10 || !strings.Contains(r.Msg, "socket 1 of 2") {
		t.Errorf("bind with two fds that are no sockets: %+v, want WSAENOTSOCK naming socket 1 of 2", r)
	}
	many := make([]int, fdpass.MaxFDs+1)
	for i := range many {
		many[i] = int(devnull.Fd())
	}
	fdpass.Send(c, bind, many...)
	if r := readResponse(t, c); r.Code != uint32(portres.WSAEINVAL) || !strings.Contains(r.Msg, "truncated") {
		t.Errorf("bind with %d fds: %+v, want WSAEINVAL (truncated)", len(many), r)
	}
	fdpass.Send(c, bind)
	if r := readResponse(t, c); r.Code != uint32(portres.WSAEINVAL) || r.ID != 10 {
		t.Errorf("bind without fd: %+v", r)
	}
	// The broker closed every descriptor it was sent: /dev/null is not
	// open in the broker (this process) more than once.
	if n := countOpen(t, os.DevNull); n != before+1 {
		t.Errorf("/dev/null open %d times: the broker leaked passed descriptors", n)
	}
	// The connection still works, then closing it releases its block.
	fdpass.Send(c, show)
	if r := readResponse(t, c); r.Code != 0 || len(r.Entries) != 1 {
		t.Fatalf("show after garbage: %+v", r)
	}
	c.Close()
	waitShow(t, b.Dial(t), func(i []portres.Info) bool { return len(i) == 0 })
	if _, err := b.Dial(t).Acquire(context.Background(), portres.TCP, 48000, 3); err != nil {
		t.Fatal(err)
	}
}

// countOpen counts this process's descriptors open on path.
func countOpen(t *testing.T, path string) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && target == path {
			n++
		}
	}
	return n
}

// TestEmptyDatagramEndsSession: a zero-length datagram reads as end of
// stream on SOCK_SEQPACKET; the broker treats it as a hang-up.
func TestEmptyDatagramEndsSession(t *testing.T) {
	b := testbroker.Start(t, nil)
	c := rawConn(t, b)
	fdpass.Send(c, wire.AppendRequest(nil, &wire.Request{ID: 1, Op: wire.OpAcquire, Proto: 17, Start: 48100, Count: 1}))
	readResponse(t, c)
	unix.Write(rawFD(t, c), nil)
	waitShow(t, b.Dial(t), func(i []portres.Info) bool { return len(i) == 0 })
}

func rawFD(t *testing.T, c *net.UnixConn) int {
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}
