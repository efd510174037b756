//go:build linux

package broker

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/fdpass"
	"github.com/portres/portres/internal/wire"
	"golang.org/x/sys/unix"
)

// session is one client connection.
type session struct {
	b *Broker
	// fleetLeases counts the session's fleet leases: while it has any, a
	// release may wait for etcd, so it goes to the session's worker.
	fleetLeases atomic.Int32
	conn        *fdpass.Conn // blocking system calls: a request wakes its reader directly
	peer        *peer
	ctx         context.Context // done when the connection ends
	cancel      context.CancelFunc
	queue       chan job
	admin       bool               // root or the admin group: exempt from per-user limits
	use         *usage             // the peer uid's usage (shared by its sessions)
	resvs       map[*resv]struct{} // runtime reservations acquired here; guarded by b.mu
	loop        *loop              // reads its requests
	id          uint64             // its key in loop

	mu        sync.Mutex
	paused    bool // the loop stopped reading it: its queue was full
	ended     bool // the loop no longer serves it
	curID     uint32
	curCancel context.CancelFunc
	busy      int             // requests queued for or running on the worker
	queued    map[uint32]bool // request IDs waiting in queue; true = cancelled
}

type job struct {
	req      *wire.Request
	fds      []int
	out      []*wire.Response // instead of a request: answers for the worker to send
	paced    bool             // the uid's request rate was charged already
	admitted bool             // holds a slot of the fair queue already
}

// sessionQueue is how many requests of one connection may wait for the
// worker; the reader stops reading (and the kernel's socket buffer fills)
// past it. Each may carry a descriptor, counted against the budget.
const sessionQueue = 8

func (b *Broker) startSession(c *fdpass.Conn) {
	p, err := peerOf(c.Fd())
	if err != nil {
		b.rlog.Log(0, slog.LevelWarn, "refusing client without credentials", "err", err)
		c.Close()
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &session{b: b, conn: c, peer: p, ctx: ctx, cancel: cancel, admin: b.mayAdmin(p),
		queue: make(chan job, sessionQueue), queued: map[uint32]bool{}, resvs: map[*resv]struct{}{}}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		c.Close()
		cancel()
		return
	}
	if resp := b.admitLocked(s); resp != nil {
		b.mu.Unlock()
		cancel()
		b.metrics.observeRefused(resp.Code)
		b.rlog.Log(p.uid, slog.LevelWarn, "connection refused", "pid", p.pid, "code", portres.Errno(resp.Code).Name(), "why", resp.Msg)
		s.send(resp) // ID 0: the answer to whatever the client asks first
		c.Close()
		return
	}
	b.sessions[s] = struct{}{}
	b.wg.Add(1)
	l := b.loops[b.nextLoop%len(b.loops)]
	b.nextLoop++
	s.loop = l
	b.mu.Unlock()
	if b.debug {
		b.log.Debug("client connected", "pid", p.pid, "uid", p.uid, "cmd", p.cmd)
	}
	go s.work()
	if err := l.add(s); err != nil {
		b.log.Warn("cannot serve a client", "pid", p.pid, "err", err)
		cancel()
		close(s.queue)
	}
}

// admitLocked checks a new connection against its uid's connection limit
// and the descriptor budget, and charges it. Caller holds b.mu.
func (b *Broker) admitLocked(s *session) *wire.Response {
	u, resp := b.admitConnLocked(s.peer.uid, s.admin, "another connection")
	s.use = u
	return resp
}

// leaveConnLocked gives back what admitConnLocked took for a connection
// of uid, whose usage is u. Caller holds b.mu.
func (b *Broker) leaveConnLocked(u *usage, uid uint32) {
	u.conns--
	b.forgetUserLocked(uid)
	b.fds.Add(-1)
}

// admitConnLocked lets a connection of uid in, a session's or a
// portserver client's, against the per-user connection limit and the
// descriptor budget, and counts it (leaveConnLocked undoes it). Caller
// holds b.mu.
func (b *Broker) admitConnLocked(uid uint32, admin bool, what string) (*usage, *wire.Response) {
	u := b.userLocked(uid)
	if lim := b.cfg.Limits.UserConnections; !admin && lim >= 0 && u.conns >= lim {
		b.forgetUserLocked(uid)
		return nil, quotaError(uid, "connections", u.conns, 1, lim, "user-connections")
	}
	if resp := b.takeFDs(1, admin, "%s", what); resp != nil {
		b.forgetUserLocked(uid)
		return nil, resp
	}
	u.conns++
	return u, nil
}

// inlineFDs is the most sockets a request served by the reader may
// carry (16 binds: well under a millisecond); a bind of more goes to
// the session's worker.
const inlineFDs = 16

// inlineAcquire is the largest acquire served by the reader: placeholders
// for it take well under a millisecond to bind.
const inlineAcquire = 16

// short reports whether req finishes quickly enough to be served on a
// request loop's thread, holding up the loop's other sessions (and its
// own cancels) meanwhile. Large and delegated acquires, show and the
// persistent and dynamic-range changes (which wait for the disk or the
// kernel list) go to the session's worker.
func short(req *wire.Request) bool {
	if req.Flags&wire.FlagFleet != 0 {
		return false // a round trip to etcd
	}
	switch req.Op {
	case wire.OpAssociate, wire.OpBind, wire.OpPersistentLookup, wire.OpDynamicShow, wire.OpReclaim:
		return true
	case wire.OpRelease:
		return true // unless the session holds fleet leases (the loop checks)
	case wire.OpAcquire:
		// A delegated block is listed in the kernel list exactly: its
		// acquire waits for a write of the list, which concurrent ones
		// share (group commit) from their workers.
		return req.Count <= inlineAcquire && req.Flags&wire.FlagDelegate == 0
	}
	return false
}

// cancelRequest aborts the running request id, or marks a queued one.
func (s *session) cancelRequest(id uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.curCancel != nil && s.curID == id {
		s.curCancel()
		return
	}
	if _, ok := s.queued[id]; ok {
		s.queued[id] = true
	}
}

// work executes queued requests in order, sending their answers, then
// releases everything the session acquired.
func (s *session) work() {
	defer s.b.wg.Done()
	for j := range s.queue {
		resps := j.out
		if j.req != nil {
			resps = s.run(j)
		}
		for _, r := range resps {
			s.send(r)
		}
		s.mu.Lock()
		s.busy--
		s.loop.resumeLocked(s)
		s.mu.Unlock()
	}
	s.b.endSession(s)
}

// run executes one request of the worker, which a cancel may abort while
// queued or running, and returns its answers.
func (s *session) run(j job) []*wire.Response {
	s.mu.Lock()
	cancelled := s.queued[j.req.ID]
	delete(s.queued, j.req.ID)
	ctx, cancel := context.WithCancel(s.ctx)
	s.curID, s.curCancel = j.req.ID, cancel
	s.mu.Unlock()
	resps := s.exec(ctx, j, cancelled)
	s.mu.Lock()
	s.curCancel = nil
	s.mu.Unlock()
	cancel()
	return resps
}

// runInline executes one request on the loop's thread and returns its
// answers. It was never queued, and no cancel of it can be read (the
// loop reads cancels) before it is done: it needs no cancel of its own.
func (s *session) runInline(j job) []*wire.Response {
	return s.exec(s.ctx, j, false)
}

// exec serves j (or answers that it was cancelled before it started),
// counts it, and closes the descriptors it carried.
func (s *session) exec(ctx context.Context, j job, cancelled bool) []*wire.Response {
	var resps []*wire.Response
	start := time.Now()
	if cancelled {
		resps = []*wire.Response{errf(portres.WSA_OPERATION_ABORTED, "cancelled before it started")}
		if j.admitted {
			s.b.fair.leave(s.peer.uid)
		}
	} else {
		resps = s.serve(ctx, j)
	}
	s.b.metrics.observe(j.req.Op, resps[len(resps)-1].Code, time.Since(start))
	s.closeFDs(j.fds)
	for _, r := range resps {
		r.ID = j.req.ID
	}
	return resps
}

// serve handles one request once the uid's request rate allows it (admins
// are not paced) and the fair queue gives the uid a turn.
func (s *session) serve(ctx context.Context, j job) []*wire.Response {
	if !s.admin && s.use.rate != nil && !j.paced {
		if err := s.use.rate.Wait(ctx); err != nil {
			return []*wire.Response{errf(portres.WSA_OPERATION_ABORTED, "cancelled while paced to the per-user request rate")}
		}
	}
	if !j.admitted && !s.b.fair.enter(ctx, s.peer.uid, s.slotLimit()) {
		return []*wire.Response{errf(portres.WSA_OPERATION_ABORTED, "cancelled while waiting for its turn")}
	}
	defer s.b.fair.leave(s.peer.uid)
	return s.b.handle(ctx, s, j.req, j.fds)
}

// slotLimit is how many slots of the fair queue s's uid may hold: all
// but one for unprivileged uids, so a slot is always left to others.
func (s *session) slotLimit() int {
	if s.admin {
		return inService
	}
	return max(1, inService-1)
}

// closeFDs closes descriptors the client passed and returns them to the
// budget.
func (s *session) closeFDs(fds []int) {
	if len(fds) > 0 {
		closeAll(fds)
		s.b.fds.Add(-int64(len(fds)))
		s.use.passed.Add(-int64(len(fds)))
	}
}

// userPassed is how many passed descriptors the requests of one
// unprivileged uid may hold in the broker at once (all its connections:
// each queues up to sessionQueue requests of up to fdpass.MaxFDs
// sockets), so that no uid takes the descriptor budget from the others.
const userPassed = 4 * fdpass.MaxFDs

// takePassed counts n descriptors passed with a request against the
// uid's share (admins have none) and the broker's budget; closeFDs gives
// them back.
func (s *session) takePassed(n int) *wire.Response {
	for {
		used := s.use.passed.Load()
		if !s.admin && used+int64(n) > userPassed {
			return errf(portres.WSAEDQUOT, "uid %d has %d passed sockets waiting in the broker; at most %d may wait at once", s.peer.uid, used, userPassed)
		}
		if s.use.passed.CompareAndSwap(used, used+int64(n)) {
			break
		}
	}
	if resp := s.b.takeFDs(n, s.admin, "a passed socket"); resp != nil {
		s.use.passed.Add(-int64(n))
		return resp
	}
	return nil
}

func (s *session) send(r *wire.Response) {
	if err := s.conn.Send(wire.AppendResponse(nil, r)); err != nil && s.ctx.Err() == nil {
		s.b.log.Debug("reply failed", "pid", s.peer.pid, "err", err)
	}
}

// endSession releases every runtime reservation acquired on s, unless
// the broker is shutting down with live restore: the next broker restores
// them then, and their owner reclaims them. The connection is closed
// last, so that a client that shut down its side and reads until
// end-of-file knows its reservations are gone (libportres's closesocket
// does, for Windows' synchronous release).
func (b *Broker) endSession(s *session) {
	defer s.conn.Close()
	b.mu.Lock()
	delete(b.sessions, s)
	keep := b.closed && b.runtime != nil
	gone := make([]*resv, 0, len(s.resvs))
	for rv := range s.resvs {
		if keep {
			continue
		}
		gone = append(gone, rv)
		b.removeLocked(rv)
		b.forgetLocked(rv)
	}
	b.leaveConnLocked(s.use, s.peer.uid)
	b.mu.Unlock()
	for _, rv := range gone {
		b.rlog.Log(s.peer.uid, slog.LevelInfo, "released on disconnect", "proto", rv.proto, "block", rv.block().String(), "pid", s.peer.pid)
	}
	for _, rv := range gone {
		if rv.admitted && !rv.chunked() {
			b.applySysctlLogged("disconnect") // one write takes them all
			return
		}
		b.unlist(rv, "disconnect")
	}
}

// handle executes one request and returns its answer(s).
func (b *Broker) handle(ctx context.Context, s *session, req *wire.Request, fds []int) []*wire.Response {
	takesFD := req.Op == wire.OpBind || req.Op == wire.OpAcquire && req.Flags&wire.FlagBind != 0
	if !takesFD && len(fds) > 0 {
		return one(errf(portres.WSAEINVAL, "%s takes no descriptor, got %d", req.Op, len(fds)))
	}
	switch req.Op {
	case wire.OpAcquire:
		if req.Flags&wire.FlagFleet != 0 {
			if req.Flags&(wire.FlagBind|wire.FlagDelegate) != 0 {
				return one(errf(portres.WSAEINVAL, "a fleet lease is acquired alone (no Bind or Delegate flag)"))
			}
			return one(b.acquireFleet(ctx, s, req))
		}
		if req.Flags&wire.FlagBind != 0 {
			return one(b.acquireBind(ctx, s, req, fds))
		}
		return one(b.acquire(ctx, s, req))
	case wire.OpRelease:
		return one(b.release(s, req))
	case wire.OpAssociate:
		return one(b.associate(s, req))
	case wire.OpBind:
		return b.bind(ctx, s, req, fds)
	case wire.OpShow:
		if req.Flags&wire.FlagFleet != 0 {
			return b.showFleet(ctx)
		}
		return b.show(s)
	case wire.OpPersistentCreate:
		if req.Flags&wire.FlagFleet != 0 {
			return one(b.createFleetPersistent(ctx, s, req))
		}
		return one(b.createPersistent(s, req))
	case wire.OpPersistentDelete:
		if req.Flags&wire.FlagFleet != 0 {
			return one(b.deleteFleetPersistent(ctx, s, req))
		}
		return one(b.deletePersistent(s, req))
	case wire.OpPersistentLookup:
		if req.Flags&wire.FlagFleet != 0 {
			return one(b.lookupFleetPersistent(req))
		}
		return one(b.lookupPersistent(req))
	case wire.OpDynamicShow:
		return one(b.dynamicShow(req))
	case wire.OpDynamicSet:
		return one(b.dynamicSet(s, req))
	case wire.OpStatus:
		return one(b.status())
	case wire.OpReclaim:
		return one(b.reclaim(s, req))
	}
	return one(errf(portres.WSAEINVAL, "unknown operation %d", req.Op))
}

func one(r *wire.Response) []*wire.Response { return []*wire.Response{r} }

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
