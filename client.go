//go:build linux

package portres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"github.com/portres/portres/internal/fdpass"
	"github.com/portres/portres/internal/paths"
	"github.com/portres/portres/internal/wire"
	"golang.org/x/sys/unix"
)

// Client is a connection to the portresd broker. It plays the role of the
// Windows socket on which SIO_ACQUIRE_PORT_RESERVATION is issued: every
// runtime reservation acquired through a Client is released when the
// Client is closed or its process exits.
//
// A Client is safe for concurrent use; its requests are answered one at a
// time, in order. A call waiting for its turn gives up when its context
// ends.
type Client struct {
	conn *net.UnixConn
	path string

	turn   chan struct{} // holds a token while a request is in flight
	nextID uint32
	buf    []byte
	closed atomic.Bool
}

// DefaultSocketPath is where Dial looks for the broker when given "":
// $PORTRES_SOCKET, else /run/portres/portres.sock for root, else
// $XDG_RUNTIME_DIR/portres.sock if a per-user broker runs, else the
// system socket.
func DefaultSocketPath() string { return paths.ClientSocket() }

// Dial connects to the broker listening on path ("" = DefaultSocketPath).
func Dial(ctx context.Context, path string) (*Client, error) {
	if path == "" {
		path = DefaultSocketPath()
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unixpacket", path)
	if err != nil {
		return nil, &Error{Op: "dial", Code: WSAENETDOWN, Msg: fmt.Sprintf("is portresd running? %v", err), Err: err}
	}
	return &Client{conn: c.(*net.UnixConn), path: path, buf: make([]byte, wire.MaxMessage), turn: make(chan struct{}, 1)}, nil
}

// Close ends the connection; the broker releases every runtime
// reservation acquired on it. Pending calls fail with
// WSA_OPERATION_ABORTED.
func (c *Client) Close() error {
	c.closed.Store(true)
	return c.conn.Close()
}

// SocketPath is the broker socket the client is connected to.
func (c *Client) SocketPath() string { return c.path }

// do sends req (with fd attached if >= 0) and returns the answers.
// Cancelling ctx asks the broker to abort the request; the call then
// still waits for the broker's final answer, so client and broker agree on
// what happened, and returns WSA_OPERATION_ABORTED.
func (c *Client) do(ctx context.Context, req *wire.Request, fd int) ([]*wire.Response, error) {
	if err := ctx.Err(); err != nil {
		return nil, &Error{Op: req.Op.String(), Code: WSA_OPERATION_ABORTED, Msg: "cancelled before it was sent", Err: err}
	}
	select { // wait for our turn, or give up when ctx ends first
	case c.turn <- struct{}{}:
	case <-ctx.Done():
		return nil, &Error{Op: req.Op.String(), Code: WSA_OPERATION_ABORTED, Msg: "cancelled while waiting for another request on this client", Err: ctx.Err()}
	}
	defer func() { <-c.turn }()
	c.nextID++
	req.ID = c.nextID
	msg := wire.AppendRequest(c.buf[:0], req)
	var err error
	if fd >= 0 {
		err = fdpass.Send(c.conn, msg, fd)
	} else {
		err = fdpass.Send(c.conn, msg)
	}
	if err != nil {
		if e := c.refusal(req); e != nil {
			return nil, e
		}
		return nil, c.connError(req.Op, err)
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		// Wake the reader; it sends the cancel and keeps waiting.
		c.conn.SetReadDeadline(time.Unix(1, 0))
		close(fired)
	})
	defer func() {
		if !stop() {
			// The hook ran, or is running: wait for it, then undo its
			// deadline so it cannot poison the next request.
			<-fired
			c.conn.SetReadDeadline(time.Time{})
		}
	}()
	var out []*wire.Response
	cancelSent := false
	for {
		n, fds, err := fdpass.Recv(c.conn, c.buf)
		closeFDs(fds)
		if err != nil && errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil && !cancelSent {
			cancelSent = true
			c.conn.SetReadDeadline(time.Time{})
			cancel := wire.AppendRequest(nil, &wire.Request{Op: wire.OpCancel, Target: req.ID})
			if err := fdpass.Send(c.conn, cancel); err != nil {
				return nil, c.connError(req.Op, err)
			}
			continue
		}
		if err != nil {
			if errors.Is(err, unix.ECONNRESET) {
				if e := c.refusal(req); e != nil {
					return nil, e
				}
			}
			return nil, c.connError(req.Op, err)
		}
		if n == 0 {
			return nil, c.connError(req.Op, errors.New("broker closed the connection"))
		}
		resp, err := wire.DecodeResponse(c.buf[:n])
		if err != nil {
			return nil, &Error{Op: req.Op.String(), Code: WSAEINVAL, Msg: "bad answer from broker", Err: err}
		}
		if resp.ID != req.ID && resp.ID != 0 {
			continue // answer to an earlier, abandoned request
		}
		out = append(out, resp)
		if resp.Flags&wire.More == 0 {
			break
		}
	}
	last := out[len(out)-1]
	if last.Code != 0 {
		e := errorFrom(req, last)
		if Errno(last.Code) == WSA_OPERATION_ABORTED && ctx.Err() != nil {
			e.Err = ctx.Err()
		}
		return out, e
	}
	return out, nil
}

// refusal returns the broker's reason for closing the connection, if it
// left one: a broker refusing a connection (a per-user limit, no
// descriptors left) answers once with ID 0 and closes, possibly before
// the first request could be sent.
func (c *Client) refusal(req *wire.Request) *Error {
	c.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	defer c.conn.SetReadDeadline(time.Time{})
	n, fds, err := fdpass.Recv(c.conn, c.buf)
	closeFDs(fds)
	if errors.Is(err, unix.ECONNRESET) {
		// The broker closed with our request unread: the kernel reports
		// that first (once), before the answer it left.
		n, fds, err = fdpass.Recv(c.conn, c.buf)
		closeFDs(fds)
	}
	if err != nil || n == 0 {
		return nil
	}
	resp, err := wire.DecodeResponse(c.buf[:n])
	if err != nil || resp.ID != 0 || resp.Code == 0 {
		return nil
	}
	return errorFrom(req, resp)
}

func (c *Client) connError(op wire.Op, err error) *Error {
	if c.closed.Load() || errors.Is(err, net.ErrClosed) {
		return &Error{Op: op.String(), Code: WSA_OPERATION_ABORTED, Msg: "the client was closed", Err: err}
	}
	return &Error{Op: op.String(), Code: WSAENETDOWN, Msg: "lost the connection to portresd", Err: err}
}

// errorFrom builds the Error for a failed answer.
func errorFrom(req *wire.Request, r *wire.Response) *Error {
	e := &Error{Op: req.Op.String(), Proto: Proto(req.Proto), Start: req.Start, Count: req.Count,
		Port: req.Port, Token: req.Token, Code: Errno(r.Code), Msg: r.Msg}
	if r.Count != 0 {
		e.Start, e.Count = r.Start, r.Count
	}
	if r.Port != 0 {
		e.Port = r.Port
	}
	return e
}

// one is do for requests with a single answer.
func (c *Client) one(ctx context.Context, req *wire.Request) (*wire.Response, error) {
	out, err := c.do(ctx, req, -1)
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// BindFD binds the unbound TCP or UDP socket fd to a port of the
// reservation token: port, or any free port of the block if port is 0, on
// the local address addr (invalid = the socket family's unspecified
// address). The caller keeps owning fd. It is the primitive under Listen,
// ListenPacket and Dialer, exported for code that makes its own sockets.
func (c *Client) BindFD(ctx context.Context, token uint64, fd int, addr netip.Addr, port uint16) (uint16, error) {
	out, err := c.do(ctx, &wire.Request{Op: wire.OpBind, Token: token, Addr: addr, Port: port}, fd)
	if err != nil {
		return 0, err
	}
	return out[0].Port, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
