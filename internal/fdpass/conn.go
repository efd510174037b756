//go:build linux

package fdpass

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Conn is a connected SOCK_SEQPACKET socket driven by blocking system
// calls: a goroutine waiting in Recv sleeps in the kernel and its thread
// runs again as soon as a datagram arrives, with no trip through the Go
// runtime's network poller (docs/KERNEL.md: 14 µs a round trip, against 58 µs
// for a server parked in the poller). Send and Recv may run at once from
// two goroutines. Shutdown wakes every call blocked on the socket; Close
// must come only after Send and Recv have returned, since the
// descriptor's number can be reused at once; Shutdown and Close may be
// called from any goroutine, in any order, more than once.
type Conn struct {
	fd     int
	closed atomic.Bool
	mu     sync.Mutex // orders Shutdown and Close
	done   bool       // closed, under mu
}

// NewConn takes over fd, a connected SOCK_SEQPACKET socket, and puts it
// in blocking mode.
func NewConn(fd int) (*Conn, error) {
	if err := unix.SetNonblock(fd, false); err != nil {
		return nil, fmt.Errorf("fdpass: %w", err)
	}
	return &Conn{fd: fd}, nil
}

// Dial connects to the SOCK_SEQPACKET socket at path.
func Dial(path string) (*Conn, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	for {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("connect %s: %w", path, err)
	}
	return &Conn{fd: fd}, nil
}

// Fd is the socket's descriptor, for getsockopt and epoll; the Conn keeps
// owning it.
func (c *Conn) Fd() int { return c.fd }

// Send writes msg as one datagram, with the descriptors fds (may be none)
// attached. The caller keeps owning fds.
func (c *Conn) Send(msg []byte, fds ...int) error {
	return c.send(msg, fds, 0)
}

// SendNow is Send failing with EAGAIN instead of blocking when the
// peer's socket buffer is full.
func (c *Conn) SendNow(msg []byte, fds ...int) error {
	return c.send(msg, fds, unix.MSG_DONTWAIT)
}

func (c *Conn) send(msg []byte, fds []int, flags int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	for {
		err := unix.Sendmsg(c.fd, msg, oob, nil, flags|unix.MSG_NOSIGNAL)
		if err != unix.EINTR {
			return c.err(err)
		}
	}
}

// RecvNow is Recv failing with EAGAIN instead of blocking when no
// datagram waits.
func (c *Conn) RecvNow(buf []byte) (int, []int, error) {
	return c.recv(buf, unix.MSG_DONTWAIT)
}

// Recv reads one datagram into buf and returns its length and the
// descriptors it carried (close-on-exec), which the caller owns. A
// length of 0 with no error is the end of the stream: the peer closed,
// or Shutdown was called. On error no descriptor is left open.
func (c *Conn) Recv(buf []byte) (int, []int, error) {
	return c.recv(buf, 0)
}

// RecvWait is Recv giving up with ErrTimeout when nothing arrives
// within d.
func (c *Conn) RecvWait(buf []byte, d time.Duration) (int, []int, error) {
	fds := []unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int(d.Milliseconds()))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, nil, c.err(err)
		}
		if n == 0 {
			return 0, nil, ErrTimeout
		}
		return c.recv(buf, unix.MSG_DONTWAIT)
	}
}

// ErrTimeout is returned by RecvWait when nothing arrived in time.
var ErrTimeout = errors.New("fdpass: timed out")

func (c *Conn) recv(buf []byte, flags int) (int, []int, error) {
	oobp := oobPool.Get().(*[]byte)
	defer oobPool.Put(oobp)
	oob := *oobp
	for {
		n, oobn, rflags, _, err := unix.Recvmsg(c.fd, buf, oob, flags|unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, nil, c.err(err)
		}
		files, perr := parseRights(oob[:oobn])
		if perr == nil && rflags&(unix.MSG_CTRUNC|unix.MSG_TRUNC) != 0 {
			perr = fmt.Errorf("%w (flags %#x)", ErrTruncated, rflags)
		}
		if perr != nil {
			for _, fd := range files {
				unix.Close(fd)
			}
			return n, nil, perr
		}
		return n, files, nil
	}
}

// oobPool holds control buffers for recv, room for MaxFDs descriptors:
// one per message would be an allocation on every request.
var oobPool = sync.Pool{New: func() any {
	b := make([]byte, unix.CmsgSpace(MaxFDs*4))
	return &b
}}

// err maps a failure after Close to ErrClosed.
func (c *Conn) err(err error) error {
	if err != nil && c.closed.Load() {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return err
}

// ErrClosed wraps the errors of calls on a closed Conn or Listener; it
// matches net.ErrClosed.
var ErrClosed = fmt.Errorf("fdpass: %w", net.ErrClosed)

// Shutdown ends the connection both ways: calls blocked on it return
// (Recv with end of stream, Send with EPIPE) and the peer sees it end.
// The descriptor stays open until Close.
func (c *Conn) Shutdown() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return nil
	}
	return unix.Shutdown(c.fd, unix.SHUT_RDWR)
}

// Drain shuts down the sending side and reads (discarding) until the
// peer closes its end or d passes: the broker closes a connection only
// after releasing what was acquired on it, so a client that drains
// before Close knows its reservations are gone.
func (c *Conn) Drain(d time.Duration) {
	c.mu.Lock()
	if c.done || unix.Shutdown(c.fd, unix.SHUT_WR) != nil {
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	buf := make([]byte, 64<<10) // the largest datagram the broker sends
	for deadline := time.Now().Add(d); time.Now().Before(deadline); {
		n, fds, err := c.RecvWait(buf, time.Until(deadline))
		for _, fd := range fds {
			unix.Close(fd)
		}
		if n == 0 || err != nil && !errors.Is(err, unix.EAGAIN) {
			return
		}
	}
}

// Close closes the socket. It is safe to call more than once.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed.Store(true)
	if c.done {
		return nil
	}
	c.done = true
	return unix.Close(c.fd)
}

// Listener is a listening SOCK_SEQPACKET socket whose Accept blocks in
// the kernel, like Conn's calls. Shutdown wakes a blocked Accept; Close
// must come after Accept returned. Shutdown and Close may be called
// from any goroutine, in any order, more than once.
type Listener struct {
	fd     int
	mu     sync.Mutex // orders Shutdown and Close: never a call on a closed number
	closed atomic.Bool
	done   bool // closed, under mu
}

// Listen binds a SOCK_SEQPACKET socket to path and listens on it.
func Listen(path string) (*Listener, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind %s: %w", path, err)
	}
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return &Listener{fd: fd}, nil
}

// Accept waits for a connection. After Shutdown or Close it returns an
// error wrapping ErrClosed.
func (l *Listener) Accept() (*Conn, error) {
	for {
		fd, _, err := unix.Accept4(l.fd, unix.SOCK_CLOEXEC)
		switch {
		case err == unix.EINTR || err == unix.ECONNABORTED:
			continue
		case err != nil && l.closed.Load():
			return nil, fmt.Errorf("%w: %w", ErrClosed, err)
		case err == unix.EINVAL:
			return nil, fmt.Errorf("%w: %w", ErrClosed, err) // shut down
		case err != nil:
			return nil, err
		}
		return &Conn{fd: fd}, nil
	}
}

// Shutdown stops the listener: a blocked Accept returns ErrClosed.
func (l *Listener) Shutdown() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed.Store(true)
	if l.done {
		return nil
	}
	return unix.Shutdown(l.fd, unix.SHUT_RDWR)
}

// Close closes the listening socket (not the path it is bound to).
func (l *Listener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed.Store(true)
	if l.done {
		return nil
	}
	l.done = true
	return unix.Close(l.fd)
}
