//go:build linux

package portres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
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
// When the broker restarts (or crashes and is started again) it keeps
// the runtime reservations for a grace period; the Client notices the
// hang-up at once, reconnects by itself and reclaims its reservations by
// token, so tokens, Listen, Release and friends keep working. Calls made
// meanwhile wait for the reconnection, up to SetReconnectWait or their
// context. A reservation
// that cannot be reclaimed is reported (OnRestart) and its token fails
// with an error wrapping ErrReservationLost, never silently.
//
// A Client is safe for concurrent use; its requests are answered one at a
// time, in order. A call waiting for its turn gives up when its context
// ends.
type Client struct {
	path string

	turn   chan struct{} // holds a token while a request (or a reconnection) is in flight
	nextID uint32
	buf    []byte
	closed atomic.Bool

	mu        sync.Mutex
	conn      *fdpass.Conn
	gen       uint64        // counts connections made, from 1; a failure names the one it saw
	redial    chan struct{} // closed when the running reconnection ends; nil when none runs
	stopWatch func()        // ends the hang-up watch of conn
	held      map[uint64]*Reservation
	releasing map[uint64]bool // tokens with a release in flight
	lost      map[uint64]error
	onRestart func(Restart)
	// reconnectWait bounds how long a call waits for a lost broker.
	reconnectWait time.Duration
}

// DefaultReconnectWait is how long a call waits for the broker to come
// back when it finds the connection lost (SetReconnectWait).
const DefaultReconnectWait = 5 * time.Second

// Restart is what a Client found when it reconnected after losing the
// broker (it restarted, or crashed and was started again): the runtime
// reservations it took back, and the ones it could not.
type Restart struct {
	Kept []*Reservation
	Lost []LostReservation
}

// LostReservation is a runtime reservation a Client could not take back
// after the broker restarted, and why (an error wrapping
// ErrReservationLost).
type LostReservation struct {
	Reservation *Reservation
	Err         error
}

// ErrReservationLost is wrapped by the errors of calls that use a runtime
// reservation the client could not reclaim after the broker restarted
// (the broker was started without live restore, or its owner came back
// after the grace period).
var ErrReservationLost = errors.New("reservation lost when the broker restarted")

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
	conn, err := dial(ctx, path)
	if err != nil {
		return nil, err
	}
	c := &Client{conn: conn, gen: 1, path: path, buf: make([]byte, wire.MaxMessage), turn: make(chan struct{}, 1),
		held: map[uint64]*Reservation{}, releasing: map[uint64]bool{}, lost: map[uint64]error{}, reconnectWait: DefaultReconnectWait}
	c.watch()
	return c, nil
}

// dial connects to the broker. The connection is driven by blocking
// system calls (fdpass.Conn): a call's answer wakes its thread directly.
func dial(ctx context.Context, path string) (*fdpass.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, &Error{Op: "dial", Code: WSA_OPERATION_ABORTED, Msg: "cancelled before it was made", Err: err}
	}
	conn, err := fdpass.Dial(path)
	if err != nil {
		return nil, &Error{Op: "dial", Code: WSAENETDOWN, Msg: fmt.Sprintf("is portresd running? %v", err), Err: err}
	}
	return conn, nil
}

// watch starts watching the current connection for the broker's hang-up:
// a client holding reservations then reconnects at once. Caller holds
// c.mu or owns c exclusively.
func (c *Client) watch() {
	gen := c.gen
	c.stopWatch = watchHangup(c.conn.Fd(), func() {
		c.mu.Lock()
		idle := len(c.held) == 0
		c.mu.Unlock()
		if !idle { // without reservations, the next call reconnects
			c.reconnect(gen)
		}
	})
}

// OnRestart sets fn to be called, from another goroutine, each time the
// client has reconnected to a restarted broker, with what it kept and
// what it lost. nil stops the calls.
func (c *Client) OnRestart(fn func(Restart)) {
	c.mu.Lock()
	c.onRestart = fn
	c.mu.Unlock()
}

// SetReconnectWait sets how long a call that finds the broker gone waits
// for it to come back (default DefaultReconnectWait) before it fails with
// WSAENETDOWN; its context can end the wait sooner. 0 fails at once. The
// client keeps reconnecting in the background as long as it holds
// reservations, whatever the calls do.
func (c *Client) SetReconnectWait(d time.Duration) {
	c.mu.Lock()
	c.reconnectWait = d
	c.mu.Unlock()
}

// Close ends the connection; the broker releases every runtime
// reservation acquired on it. When no call is in progress Close returns
// once the broker has released them (it waits for the broker to close
// its end, at most 5 s), so the ports are free when it returns, as after
// Windows' closesocket. Pending calls fail with WSA_OPERATION_ABORTED.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	c.mu.Lock()
	c.stopWatch()
	clear(c.held)
	c.mu.Unlock()
	select {
	case c.turn <- struct{}{}: // no call in progress
		c.mu.Lock()
		conn := c.conn
		c.mu.Unlock()
		conn.Drain(5 * time.Second)
	default:
		c.mu.Lock()
		c.conn.Shutdown() // wakes a call waiting for its answer
		c.mu.Unlock()
		c.turn <- struct{}{} // no call uses the connection any more
	}
	defer func() { <-c.turn }()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn.Close()
}

// SocketPath is the broker socket the client is connected to.
func (c *Client) SocketPath() string { return c.path }

// current is the connection in use and its generation.
func (c *Client) current() (*fdpass.Conn, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn, c.gen
}

// do sends req (with the descriptors fds attached) and returns the
// answers.
// Cancelling ctx asks the broker to abort the request; the call then
// still waits for the broker's final answer, so client and broker agree on
// what happened, and returns WSA_OPERATION_ABORTED. If the connection
// breaks (the broker restarted), do waits for the reconnection and sends
// req again where that is safe (see retry).
func (c *Client) do(ctx context.Context, req *wire.Request, fds ...int) ([]*wire.Response, error) {
	if req.Op == wire.OpRelease {
		// A release the broker did before it went, but did not answer,
		// is not a loss when the client reconnects.
		c.mu.Lock()
		c.releasing[req.Token] = true
		c.mu.Unlock()
		defer func() {
			c.mu.Lock()
			delete(c.releasing, req.Token)
			c.mu.Unlock()
		}()
	}
	for {
		if e := c.lostError(req); e != nil {
			return nil, e
		}
		out, gen, err := c.doOnce(ctx, req, fds)
		if gen == 0 {
			return out, err
		}
		// The connection broke: wait for the next one, a while.
		c.mu.Lock()
		wait := c.reconnectWait
		c.mu.Unlock()
		timer := time.NewTimer(wait)
		select {
		case <-c.reconnect(gen):
			timer.Stop()
		case <-ctx.Done():
			timer.Stop()
			return nil, &Error{Op: req.Op.String(), Code: WSAENETDOWN, Msg: "lost the connection to portresd; still reconnecting when the call's context ended", Err: ctx.Err()}
		case <-timer.C:
			return nil, &Error{Op: req.Op.String(), Code: WSAENETDOWN,
				Msg: fmt.Sprintf("lost the connection to portresd, and it has not come back within %v (the client keeps trying while it holds reservations)", wait)}
		}
		if c.closed.Load() {
			return nil, c.connError(req.Op, net.ErrClosed)
		}
		if out, done, err := c.afterRestart(req, fds); done {
			return out, err
		}
	}
}

// doOnce is one try of do. broke is the generation of the connection if
// that connection broke (out and err are then nil), else 0.
func (c *Client) doOnce(ctx context.Context, req *wire.Request, fds []int) (out []*wire.Response, broke uint64, err error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, &Error{Op: req.Op.String(), Code: WSA_OPERATION_ABORTED, Msg: "cancelled before it was sent", Err: err}
	}
	select { // wait for our turn, or give up when ctx ends first
	case c.turn <- struct{}{}:
	case <-ctx.Done():
		return nil, 0, &Error{Op: req.Op.String(), Code: WSA_OPERATION_ABORTED, Msg: "cancelled while waiting for another request on this client", Err: ctx.Err()}
	}
	defer func() { <-c.turn }()
	conn, gen := c.current()
	broken := func(cause error) ([]*wire.Response, uint64, error) {
		if c.closed.Load() || errors.Is(cause, fdpass.ErrClosed) {
			return nil, 0, c.connError(req.Op, cause)
		}
		return nil, gen, nil
	}
	c.nextID++
	req.ID = c.nextID
	msg := wire.AppendRequest(c.buf[:0], req)
	err = conn.Send(msg, fds...)
	if err != nil {
		if len(fds) > 0 && errors.Is(err, unix.EBADF) && !errors.Is(err, fdpass.ErrClosed) {
			// A descriptor the caller passed is not open: its mistake,
			// not a broken connection (which would be retried forever).
			return nil, 0, &Error{Op: req.Op.String(), Token: req.Token, Code: WSAENOTSOCK, Msg: fmt.Sprintf("a descriptor to pass is not open (%v)", fds), Err: err}
		}
		if e := c.refusal(conn, req); e != nil {
			return nil, 0, e
		}
		return broken(err)
	}
	fired := make(chan struct{})
	id := req.ID
	stop := context.AfterFunc(ctx, func() {
		// Ask the broker to abort; the reader keeps waiting for its
		// final answer.
		conn.Send(wire.AppendRequest(nil, &wire.Request{Op: wire.OpCancel, Target: id}))
		close(fired)
	})
	defer func() {
		if !stop() {
			<-fired // the hook ran, or is running: it used the connection
		}
	}()
	for {
		n, fds, err := conn.Recv(c.buf)
		closeFDs(fds)
		if err != nil {
			if errors.Is(err, unix.ECONNRESET) {
				if e := c.refusal(conn, req); e != nil {
					return nil, 0, e
				}
			}
			return broken(err)
		}
		if n == 0 {
			return broken(errors.New("broker closed the connection"))
		}
		resp, err := wire.DecodeResponse(c.buf[:n])
		if err != nil {
			return nil, 0, &Error{Op: req.Op.String(), Code: WSAEINVAL, Msg: "bad answer from broker", Err: err}
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
		return out, 0, e
	}
	c.track(req, last)
	return out, 0, nil
}

// track notes the runtime reservations the client holds, for reclaiming
// them after a restart of the broker.
func (c *Client) track(req *wire.Request, resp *wire.Response) {
	switch req.Op {
	case wire.OpAcquire:
		c.mu.Lock()
		c.held[resp.Token] = &Reservation{c: c, proto: Proto(resp.Proto), start: resp.Start, count: resp.Count, token: resp.Token,
			notExcluded: resp.Flags&wire.NotExcluded != 0, delegated: req.Flags&wire.FlagDelegate != 0}
		c.mu.Unlock()
	case wire.OpRelease:
		c.mu.Lock()
		delete(c.held, req.Token)
		c.mu.Unlock()
	}
}

// lostError is the error of a request on a reservation the client lost
// in a restart of the broker; nil for any other.
func (c *Client) lostError(req *wire.Request) *Error {
	if req.Token == 0 {
		return nil
	}
	switch req.Op {
	case wire.OpBind, wire.OpRelease, wire.OpAssociate:
	default:
		return nil
	}
	c.mu.Lock()
	why := c.lost[req.Token]
	c.mu.Unlock()
	if why == nil {
		return nil
	}
	return &Error{Op: req.Op.String(), Token: req.Token, Code: WSAEINVAL, Msg: why.Error(), Err: ErrReservationLost}
}

// afterRestart decides, once the client has reconnected, what becomes of
// req, which was in flight when the connection broke: done reports that
// the call is over with out and err; otherwise it is sent again. What may
// have happened must not happen twice: a bind that took place is
// reported as done (the socket is bound), a release of a reservation the
// broker no longer has as done, and the changes of persistent state and
// of the dynamic range fail as not known to have happened.
func (c *Client) afterRestart(req *wire.Request, fds []int) (out []*wire.Response, done bool, err error) {
	switch req.Op {
	case wire.OpRelease:
		c.mu.Lock()
		_, held := c.held[req.Token]
		c.mu.Unlock()
		if !held { // released before the restart, or lost: gone either way
			delete(c.lost, req.Token)
			return []*wire.Response{{Token: req.Token}}, true, nil
		}
	case wire.OpBind:
		// The broker binds a request's sockets in order: those bound
		// are a prefix.
		for _, fd := range fds {
			port := boundPort(fd)
			if port == 0 {
				break
			}
			out = append(out, &wire.Response{Token: req.Token, Port: port})
		}
		switch {
		case len(out) == len(fds):
			return out, true, nil
		case len(out) > 0:
			return out, true, &Error{Op: "bind", Token: req.Token, Code: WSAENETDOWN,
				Msg: fmt.Sprintf("the broker restarted while binding: %d of %d sockets were bound", len(out), len(fds))}
		}
	case wire.OpAcquire:
		if req.Flags&wire.FlagBind != 0 && len(fds) == 1 && boundPort(fds[0]) != 0 {
			// Acquired and bound, but the answer with the token is lost;
			// the broker releases the block after its grace period.
			return nil, true, &Error{Op: "listen", Proto: Proto(req.Proto), Code: WSAENETDOWN,
				Msg: "the broker restarted after binding the socket but before answering: close it and listen again"}
		}
	case wire.OpPersistentCreate, wire.OpPersistentDelete, wire.OpDynamicSet:
		return nil, true, &Error{Op: req.Op.String(), Proto: Proto(req.Proto), Start: req.Start, Count: req.Count, Code: WSAENETDOWN,
			Msg: "the broker restarted before answering: whether the change was made is not known; look it up"}
	}
	return nil, false, nil
}

// boundPort is the local port fd is bound to, 0 if none.
func boundPort(fd int) uint16 {
	if fd < 0 {
		return 0
	}
	switch sa, _ := unix.Getsockname(fd); a := sa.(type) {
	case *unix.SockaddrInet4:
		return uint16(a.Port)
	case *unix.SockaddrInet6:
		return uint16(a.Port)
	}
	return 0
}

// reconnect starts reconnecting, unless the connection of generation gen
// was replaced already or a reconnection runs; the channel it returns is
// closed when the reconnection ends.
func (c *Client) reconnect(gen uint64) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen || c.closed.Load() {
		done := make(chan struct{})
		close(done)
		return done
	}
	if c.redial == nil {
		c.redial = make(chan struct{})
		go c.redialLoop(c.redial)
	}
	return c.redial
}

// redialLoop reconnects to the broker, as often as it takes, then
// reclaims every runtime reservation the client holds, takes the new
// connection into use and reports what it kept and lost. It holds the
// turn only from a connection's first reclaim to its taking into use:
// meanwhile calls find the old connection broken and wait for this one.
func (c *Client) redialLoop(done chan struct{}) {
	var report Restart
	defer func() {
		c.mu.Lock()
		c.redial = nil
		fn := c.onRestart
		c.mu.Unlock()
		close(done)
		if fn != nil && !c.closed.Load() {
			fn(report)
		}
	}()
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, 500*time.Millisecond) {
		if c.closed.Load() {
			return
		}
		if conn, err := dial(context.Background(), c.path); err == nil {
			if c.adopt(conn, &report) {
				return
			}
			conn.Close()
		}
		time.Sleep(wait)
	}
}

// adopt reclaims the client's reservations on conn, a new connection,
// and takes it into use, unless it turns out no good.
func (c *Client) adopt(conn *fdpass.Conn, report *Restart) bool {
	c.turn <- struct{}{}
	defer func() { <-c.turn }()
	r, err := c.reclaimAll(conn)
	if err != nil {
		return false
	}
	*report = r
	c.mu.Lock()
	c.stopWatch()
	old := c.conn
	c.conn = conn
	c.gen++
	if c.closed.Load() {
		conn.Close()
	} else {
		c.watch()
	}
	c.mu.Unlock()
	old.Close()
	return true
}

// reclaimAll asks the broker on conn, a new connection, for each runtime
// reservation the client holds. An error means conn is no good (the
// broker went again, or refused the connection): try another.
func (c *Client) reclaimAll(conn *fdpass.Conn) (Restart, error) {
	c.mu.Lock()
	held := make([]*Reservation, 0, len(c.held))
	for _, r := range c.held {
		held = append(held, r)
	}
	c.mu.Unlock()
	var report Restart
	for _, r := range held {
		c.nextID++
		req := &wire.Request{Op: wire.OpReclaim, ID: c.nextID, Token: r.token}
		if err := conn.Send(wire.AppendRequest(c.buf[:0], req)); err != nil {
			return Restart{}, err
		}
		n, fds, err := conn.Recv(c.buf)
		closeFDs(fds)
		if err == nil && n == 0 {
			err = errors.New("broker closed the connection")
		}
		if err != nil {
			return Restart{}, err
		}
		resp, err := wire.DecodeResponse(c.buf[:n])
		if err != nil {
			return Restart{}, err
		}
		if resp.ID == 0 && resp.Code != 0 { // the connection was refused
			return Restart{}, errorFrom(req, resp)
		}
		if resp.Code == 0 {
			report.Kept = append(report.Kept, r)
			continue
		}
		c.mu.Lock()
		releasing := c.releasing[r.token]
		if releasing {
			delete(c.held, r.token) // released before the broker went
		}
		c.mu.Unlock()
		if releasing {
			continue
		}
		e := errorFrom(req, resp)
		e.Proto, e.Start, e.Count = r.proto, r.start, r.count
		e.Msg = "the broker restarted and did not give it back: " + e.Msg
		e.Err = ErrReservationLost
		report.Lost = append(report.Lost, LostReservation{Reservation: r, Err: e})
		c.mu.Lock()
		delete(c.held, r.token)
		c.lost[r.token] = e
		c.mu.Unlock()
	}
	return report, nil
}

// refusal returns the broker's reason for closing the connection, if it
// left one: a broker refusing a connection (a per-user limit, no
// descriptors left) answers once with ID 0 and closes, possibly before
// the first request could be sent.
func (c *Client) refusal(conn *fdpass.Conn, req *wire.Request) *Error {
	n, fds, err := conn.RecvWait(c.buf, 100*time.Millisecond)
	closeFDs(fds)
	if errors.Is(err, unix.ECONNRESET) {
		// The broker closed with our request unread: the kernel reports
		// that first (once), before the answer it left.
		n, fds, err = conn.RecvWait(c.buf, 100*time.Millisecond)
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
	if c.closed.Load() || errors.Is(err, net.ErrClosed) || errors.Is(err, fdpass.ErrClosed) {
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
	if r.Proto != 0 {
		e.Proto = Proto(r.Proto)
	}
	if r.Port != 0 {
		e.Port = r.Port
	}
	return e
}

// one is do for requests with a single answer.
func (c *Client) one(ctx context.Context, req *wire.Request) (*wire.Response, error) {
	out, err := c.do(ctx, req)
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

// MaxBindBatch is the most sockets one bind request carries; BindFDs
// sends more in several.
const MaxBindBatch = 64

// BindFDs binds the unbound sockets fds from reservation token in one
// round trip per MaxBindBatch of them, in order: to ports port, port+1,
// ... or, with port 0, each to any free port of the block. It returns
// the ports bound; on error, those of the sockets bound before the one
// that failed (the sockets after it stay unbound). Every socket of a
// batch is checked before any is bound.
func (c *Client) BindFDs(ctx context.Context, token uint64, fds []int, addr netip.Addr, port uint16) ([]uint16, error) {
	if port != 0 && int(port)+len(fds)-1 > 65535 {
		// Checked here, not only per request: the next request's port
		// would wrap to 0, which means any free port.
		return nil, &Error{Op: "bind", Token: token, Port: port, Code: WSAEINVAL,
			Msg: fmt.Sprintf("%d sockets from port %d run past port 65535", len(fds), port)}
	}
	ports := make([]uint16, 0, len(fds))
	for len(fds) > 0 {
		n := min(len(fds), MaxBindBatch)
		out, err := c.do(ctx, &wire.Request{Op: wire.OpBind, Token: token, Addr: addr, Port: port}, fds[:n]...)
		for _, r := range out {
			if r.Code == 0 {
				ports = append(ports, r.Port)
			}
		}
		if err != nil {
			return ports, err
		}
		fds = fds[n:]
		if port != 0 {
			port += uint16(n)
		}
	}
	return ports, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
