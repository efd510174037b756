//go:build linux

package broker

import (
	"errors"
	"log/slog"
	"runtime"
	"sync"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/fdpass"
	"github.com/portres/portres/internal/wire"
	"golang.org/x/sys/unix"
)

// A loop reads the requests of the sessions given to it, from one OS
// thread blocked in epoll_wait: one wake-up brings every session with a
// request waiting, each served in turn, so under load many requests cost
// one wake-up instead of one thread each (a thread per connection
// blocked in recvmsg costs a context switch per request, and the Go
// runtime more as connections grow: BenchmarkPath). Short requests are
// served on the loop's thread when their session has nothing queued
// (and, for unprivileged uids, their rate allows it at once and the fair
// queue has a slot free); the others are queued for the session's
// worker, in order. Cancels are acted on at once. Answers go out without
// blocking; a client that does not read them has the rest sent by its
// worker, so no client can stall a loop.
type loop struct {
	b    *Broker
	epfd int
	wake int // eventfd: Close wants the loop to end its sessions and return
	buf  []byte

	mu   sync.Mutex
	byID map[uint64]*session
	next uint64
}

// wakeID is the event data of the loop's eventfd.
const wakeID = 0

func newLoop(b *Broker) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN}); err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return nil, err
	}
	return &loop{b: b, epfd: epfd, wake: wake, buf: make([]byte, wire.MaxMessage), byID: map[uint64]*session{}, next: wakeID + 1}, nil
}

// add starts serving s (whose loop is l).
func (l *loop) add(s *session) error {
	l.mu.Lock()
	s.id = l.next
	l.next++
	l.byID[s.id] = s
	l.mu.Unlock()
	if err := l.watch(s); err != nil {
		// Not served: the caller ends s (closes its queue), so the
		// loop must not end it again (stop).
		l.mu.Lock()
		delete(l.byID, s.id)
		l.mu.Unlock()
		return err
	}
	return nil
}

// watch (re)arms s's socket: requests and hang-ups wake the loop.
func (l *loop) watch(s *session) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(s.id), Pad: int32(s.id >> 32)}
	return unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, s.conn.Fd(), &ev)
}

// run serves events until Close wakes it, then ends its sessions.
func (l *loop) run() {
	defer l.b.wg.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	events := make([]unix.EpollEvent, 64)
	for {
		n, err := unix.EpollWait(l.epfd, events, -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			l.b.log.Error("request loop: epoll_wait", "err", err)
			l.stop()
			return
		}
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if id == wakeID {
				l.stop()
				return
			}
			l.mu.Lock()
			s := l.byID[id]
			l.mu.Unlock()
			if s != nil {
				l.serve(s)
			}
		}
	}
}

// stop ends every session left and frees the loop's descriptors.
func (l *loop) stop() {
	l.mu.Lock()
	left := make([]*session, 0, len(l.byID))
	for _, s := range l.byID {
		left = append(left, s)
	}
	l.mu.Unlock()
	for _, s := range left {
		l.end(s)
	}
	unix.Close(l.epfd)
	unix.Close(l.wake)
}

// close asks the loop to end its sessions and return.
func (l *loop) close() {
	var one [8]byte
	one[0] = 1
	unix.Write(l.wake, one[:])
}

// serve reads and handles one request of s. The loop's epoll is level
// triggered, so a session with more waiting is reported again by the
// next epoll_wait, after every other ready session has had its turn: a
// flooding session cannot hold the loop, and the common case (a client
// waiting for its one answer) costs no second read that would only
// return EAGAIN.
func (l *loop) serve(s *session) {
	s.mu.Lock()
	full := len(s.queue) == cap(s.queue)
	if full {
		// Stop reading it until its worker catches up (resume); the
		// kernel's socket buffer holds the rest.
		s.paused = true
		unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, s.conn.Fd(), nil)
	}
	s.mu.Unlock()
	if full {
		return
	}
	n, fds, err := s.conn.RecvNow(l.buf)
	switch {
	case errors.Is(err, unix.EAGAIN):
		return
	case errors.Is(err, fdpass.ErrTruncated):
		s.reply(errf(portres.WSAEINVAL, "request or its descriptors were truncated: %v", err))
		return
	case err != nil || n == 0:
		closeAll(fds)
		l.end(s) // hang-up, or the broker is closing
		return
	}
	s.request(l.buf[:n], fds)
}

// resume reads s again once its worker has room (serve paused it).
// Caller holds s.mu.
func (l *loop) resumeLocked(s *session) {
	if s.paused && !s.ended {
		s.paused = false
		l.watch(s)
	}
}

// end stops serving s: its worker finishes what is queued and ends the
// session.
func (l *loop) end(s *session) {
	l.mu.Lock()
	_, ok := l.byID[s.id]
	delete(l.byID, s.id)
	l.mu.Unlock()
	if !ok {
		return
	}
	s.mu.Lock()
	s.ended = true
	if !s.paused {
		unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, s.conn.Fd(), nil)
	}
	s.mu.Unlock()
	s.cancel()
	close(s.queue)
}

// request handles one datagram of s: a cancel at once, a short request
// on the loop's thread if nothing of s waits and nothing would make the
// thread wait, anything else on s's worker.
func (s *session) request(msg []byte, fds []int) {
	if len(fds) > 0 {
		if resp := s.takePassed(len(fds)); resp != nil {
			closeAll(fds)
			resp.ID = requestID(msg)
			s.reply(resp)
			return
		}
	}
	req, err := wire.DecodeRequest(msg)
	if err != nil {
		s.closeFDs(fds)
		s.b.rlog.Log(s.peer.uid, slog.LevelWarn, "malformed request", "pid", s.peer.pid, "err", err)
		r := errf(portres.WSAEINVAL, "%v", err)
		r.ID = requestID(msg)
		s.reply(r)
		return
	}
	if req.Op == wire.OpCancel {
		s.closeFDs(fds)
		s.cancelRequest(req.Target)
		return
	}
	j := job{req: req, fds: fds}
	s.mu.Lock()
	inline := s.busy == 0 && short(req) && len(fds) <= inlineFDs && !(req.Op == wire.OpRelease && s.fleetLeases.Load() > 0) && s.admitNow(&j)
	if !inline {
		s.busy++
		s.queued[req.ID] = false
	}
	s.mu.Unlock()
	if !inline {
		s.queue <- j // never blocks: serve reads only while there is room
		return
	}
	s.reply(s.runInline(j)...)
}

// requestID is the id of the request in msg, read before (or without)
// decoding it; 0 if msg is too short or not a request.
func requestID(msg []byte) uint32 {
	if len(msg) >= 10 && msg[0] == wire.Magic {
		return uint32(msg[6]) | uint32(msg[7])<<8 | uint32(msg[8])<<16 | uint32(msg[9])<<24
	}
	return 0
}

// admitNow reports whether j may be served at once on the loop's thread:
// the uid's request rate allows it without waiting (admins are not
// paced) and the fair queue has a slot free; j then holds both. Caller
// holds s.mu.
func (s *session) admitNow(j *job) bool {
	if !s.admin && s.use.rate != nil {
		r := s.use.rate.Reserve()
		if !r.OK() || r.Delay() > 0 {
			r.Cancel()
			return false
		}
		j.paced = true
	}
	if !s.b.fair.tryEnter(s.peer.uid, s.slotLimit()) {
		return false // the rate token is spent: the worker does not pace it again
	}
	j.admitted = true
	return true
}

// reply sends answers from the loop, in order: without blocking where it
// can; once the client is not reading, its worker sends the rest,
// blocking, before anything else of the session.
func (s *session) reply(rs ...*wire.Response) {
	for i, r := range rs {
		if !s.tryReply(r) {
			s.mu.Lock()
			s.busy++
			s.mu.Unlock()
			s.queue <- job{out: rs[i:]}
			return
		}
	}
}

// tryReply sends r without blocking; false if the client's socket buffer
// is full (an error other than that drops the answer: the session ends
// with the connection).
func (s *session) tryReply(r *wire.Response) bool {
	err := s.conn.SendNow(wire.AppendResponse(nil, r))
	if errors.Is(err, unix.EAGAIN) {
		return false
	}
	if err != nil && s.ctx.Err() == nil && s.b.debug {
		s.b.log.Debug("reply failed", "pid", s.peer.pid, "err", err)
	}
	return true
}
