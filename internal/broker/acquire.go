//go:build linux

package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/enforce"
	"github.com/portres/portres/internal/pool"
	"github.com/portres/portres/internal/wire"
	"golang.org/x/sys/unix"
)

// maxPlacements bounds how often a wildcard acquire tries a block whose
// ports turned out to be in use by sockets outside portres. After
// freshPlacements such blocks (one bind each) it reads the socket tables
// of the dynamic range (milliseconds on a busy host) and skips every port
// in use there; the read serves every wildcard acquire of the protocol for
// a second (placeHint), from its first clash on. Only sockets bound since,
// and bound-only TCP sockets, which the tables do not list, can make a
// placement fail again.
const (
	maxPlacements   = 64
	freshPlacements = 8
	hintAge         = time.Second
)

// placeHint is a recent read of a protocol's socket tables over the
// dynamic range, for wildcard placement.
type placeHint struct {
	at     time.Time
	lo, hi uint16
	busy   *enforce.PortSet
}

// busyPorts returns the ports of proto's dynamic range [lo, hi] in use by
// sockets: a recent read if there is one, else a new read if fresh, else
// nil.
func (b *Broker) busyPorts(proto portres.Proto, lo, hi uint16, fresh bool) *enforce.PortSet {
	slot := &b.hints[0]
	if proto == portres.UDP {
		slot = &b.hints[1]
	}
	if h := slot.Load(); h != nil && h.lo == lo && h.hi == hi && time.Since(h.at) < hintAge {
		return h.busy
	}
	if !fresh {
		return nil
	}
	busy, err := enforce.InUseRange(uint8(proto), lo, hi)
	b.metrics.observeTableRead()
	if err != nil {
		return nil // one port at a time, then
	}
	slot.Store(&placeHint{at: time.Now(), lo: lo, hi: hi, busy: busy})
	return busy
}

// acquire reserves a runtime block for s and binds its placeholders.
func (b *Broker) acquire(ctx context.Context, s *session, req *wire.Request) *wire.Response {
	return b.acquireFor(ctx, s, s.peer, s.admin, req)
}

// acquireFor reserves a runtime block owned by owner (admin: root or the
// admin group), ending with the session s, or, with s nil, with owner's
// process (the portserver's blocks).
func (b *Broker) acquireFor(ctx context.Context, s *session, owner *peer, admin bool, req *wire.Request) *wire.Response {
	return b.acquireBlock(ctx, s, owner, admin, req, nil)
}

// bindTarget is the client's socket that a one-request acquire and bind
// binds, last, to a port of the new block: want, or its first port for
// 0.
type bindTarget struct {
	fd     int
	sa     unix.Sockaddr
	want   uint16 // the port asked for; 0: the block's first
	port   uint16 // the port of this placement's block (enforceNew)
	cookie uint64 // the socket's, once bound
	// holds: the socket's bind claims the port as a placeholder's would:
	// dual-stack on [::], no SO_REUSEADDR or SO_REUSEPORT, so that it
	// fails wherever any other socket has the port (placeholderLike).
	holds bool
}

// first reports whether to (nil: none) is bound first, in place of the
// placeholder of rv's one port: rv is held and to claims the port as a
// placeholder would.
func (to *bindTarget) first(rv *resv) bool {
	return to != nil && to.holds && rv.holds() && rv.block().Count == 1
}

// placeholderLike reports whether binding fd to sa claims the whole
// port, as a placeholder does: an IPv6 socket that is not IPv6-only, on
// the unspecified address, without address or port sharing. Any other
// bind can succeed beside a socket on another address or sharing the
// port, so it cannot prove the port free.
func placeholderLike(fd int, sa unix.Sockaddr) bool {
	a, ok := sa.(*unix.SockaddrInet6)
	if !ok || a.Addr != ([16]byte{}) {
		return false
	}
	for _, opt := range [][2]int{{unix.IPPROTO_IPV6, unix.IPV6_V6ONLY}, {unix.SOL_SOCKET, unix.SO_REUSEADDR}, {unix.SOL_SOCKET, unix.SO_REUSEPORT}} {
		if v, err := unix.GetsockoptInt(fd, opt[0], opt[1]); err != nil || v != 0 {
			return false
		}
	}
	return true
}

// clientBindError is the failure of the bind of a client's socket in a
// one-request acquire and bind (not of a placeholder or probe).
type clientBindError struct{ err error }

func (e *clientBindError) Error() string { return e.err.Error() }
func (e *clientBindError) Unwrap() error { return e.err }

// acquireBlock is acquireFor; with to, it also binds that socket to a
// port of the new block, last (enforceNew), and the answer's Port is the
// bound port.
func (b *Broker) acquireBlock(ctx context.Context, s *session, owner *peer, admin bool, req *wire.Request, to *bindTarget) *wire.Response {
	proto, bad := checkBlock(req, false)
	if bad != nil {
		return bad
	}
	if req.Start != 0 && b.privileged(req.Start) && !b.mayBindPrivileged(owner) {
		return errf(portres.WSAEACCES, "%s ports below %d (net.ipv4.ip_unprivileged_port_start) need CAP_NET_BIND_SERVICE or the admin group; uid %d (%s) has neither",
			proto, b.privStart.Load(), owner.uid, owner)
	}
	delegate := req.Flags&wire.FlagDelegate != 0
	want := pool.Block{Start: req.Start, Count: req.Count}
	from := uint16(0)
	var busy *enforce.PortSet // the dynamic range's ports in use, once a placement met one
	for attempt := 0; ; attempt++ {
		rv := &resv{proto: proto, kind: wire.KindRuntime, owner: owner, sess: s, admin: admin, pidOwned: s == nil,
			delegated: delegate, guarded: b.guard != nil && !delegate, pending: true, created: time.Now(),
			fleetLease: req.Flags&wire.FlagFleet != 0}
		if resp := b.place(rv, want, from, busy); resp != nil {
			return resp
		}
		// A held block of the one port a client's socket takes, if that
		// socket claims the port as a placeholder would: it holds it from
		// the start, in place of a placeholder (so the port is never free
		// between the two), and nothing can fail after its bind: the
		// kernel list, best effort for held blocks, comes after.
		bindFirst := to.first(rv)
		if !rv.guarded && !bindFirst && (rv.excluded() || rv.holds() && b.sysctl != nil) {
			// Out of automatic assignment first, then check the ports are
			// free: the other order leaves a window for connect().
			// Placeholder-held blocks go in too, by chunks, where the
			// list may be written (best effort: their placeholders keep
			// them from automatic assignment anyway). Guarded blocks go
			// in with the guard (enforceNew).
			if resp := b.exclude(rv, portres.WSAENOBUFS); resp != nil {
				b.remove(rv)
				return resp
			}
		}
		port, err := b.enforceNew(ctx, rv, to)
		if err == nil && bindFirst && b.sysctl != nil {
			b.exclude(rv, portres.WSAENOBUFS) // never refuses a held block
		}
		var refused *refusal
		if errors.As(err, &refused) {
			b.discard(rv, "refused acquire")
			return refused.resp
		}
		if err == nil {
			b.mu.Lock()
			rv.pending = false
			bound := uint16(0)
			if to != nil {
				// Free: the block is new, and enforceNew bound the port
				// just now.
				var err error
				if bound, err = b.takeLocked(rv, to.port); err != nil {
					b.mu.Unlock()
					b.discard(rv, "failed acquire")
					b.log.Error("acquire and bind: the bound port is not free in its new block", "proto", proto, "port", to.port, "err", err)
					return errf(portres.WSAEINVAL, "acquire and bind of %s port %d: %v", proto, to.port, err)
				}
				b.boundSocketLocked(rv, bound, to.cookie)
			}
			b.mu.Unlock()
			b.record(rv)
			blk := rv.block()
			resp := &wire.Response{Token: uint64(rv.r.Token), Proto: uint8(proto), Start: blk.Start, Count: blk.Count, Port: bound}
			if rv.excluded() && !rv.admitted {
				resp.Flags |= wire.NotExcluded
			}
			if b.debug {
				b.log.Debug("acquired", "proto", proto, "block", blk.String(), "delegated", delegate, "pid", owner.pid, "uid", owner.uid)
			}
			return resp
		}
		blk := rv.block()
		b.discard(rv, "failed acquire")
		var cbe *clientBindError
		clientBind := errors.As(err, &cbe)
		switch {
		case clientBind && (want.Start != 0 || !errors.Is(err, unix.EADDRINUSE)):
			// The client's socket did not bind (another error, or its
			// port was taken in the moment its placeholder let it go).
			r := errf(bindErrno(err), "bind %s port %d: %v", proto, port, cbe.err)
			r.Port = port
			return r
		case ctx.Err() != nil:
			return errf(portres.WSA_OPERATION_ABORTED, "acquire of %s %s aborted: the request was cancelled or the connection closed", proto, blk)
		case errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE):
			return errf(portres.WSAEMFILE, "the broker ran out of file descriptors holding %s %s: %v", proto, blk, err)
		case !errors.Is(err, unix.EADDRINUSE):
			return errf(portres.WSAEINVAL, "holding %s %s: %v", proto, blk, err)
		case want.Start != 0:
			r := errf(portres.WSAEADDRINUSE, "%s port %d is in use by a socket outside portres", proto, port)
			r.Port = port
			return r
		case attempt+1 >= maxPlacements:
			return errf(portres.WSAEADDRINUSE, "no block of %d free %s ports found after %d placements", want.Count, proto, maxPlacements)
		}
		from = port + 1
		if busy == nil {
			b.mu.Lock()
			lo, hi := b.pools[proto].Dynamic()
			b.mu.Unlock()
			busy = b.busyPorts(proto, lo, hi, attempt+1 >= freshPlacements)
		}
	}
}

// firstBusy returns the first port of blk that busy marks in use.
func firstBusy(busy *enforce.PortSet, blk pool.Block) (uint16, bool) {
	for p := int(blk.Start); p <= blk.End(); p++ {
		if busy.Has(uint16(p)) {
			return uint16(p), true
		}
	}
	return 0, false
}

// place reserves rv's block in the pool (pending) and indexes its token.
// from != 0 asks for a wildcard block at or after from; a wildcard block
// avoids the ports busy marks in use (busy may be nil).
func (b *Broker) place(rv *resv, want pool.Block, from uint16, busy *enforce.PortSet) *wire.Response {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errf(portres.WSAENETDOWN, "broker is shutting down")
	}
	p := b.pools[rv.proto]
	blk := want
	if want.Start == 0 {
		// Wildcard blocks stay in the dynamic range and never reach
		// below the first unprivileged port.
		dlo, hi := p.Dynamic()
		lo := uint16(min(max(uint32(dlo), b.privStart.Load()), 65535))
		if from != 0 || lo != dlo || busy != nil { // else the pool places it, next-fit
			if from < lo || from > hi {
				from = lo
			}
			start, ok := p.FindFree(want.Count, lo, hi, from)
			first := start
			for tries := 0; ok && busy != nil; tries++ {
				q, clash := firstBusy(busy, pool.Block{Start: start, Count: want.Count})
				if !clash {
					break
				}
				if tries > int(hi)-int(lo) {
					// Every candidate clashes: the tables may be stale;
					// let the bind decide.
					start = first
					break
				}
				next := q + 1
				if next > hi || next < lo {
					next = lo
				}
				start, ok = p.FindFree(want.Count, lo, hi, next)
			}
			if !ok || lo > hi {
				return errf(portres.WSAEADDRINUSE, "no free block of %d %s ports in the dynamic range %d-%d", want.Count, rv.proto, lo, hi)
			}
			blk.Start = start
		}
	}
	if !rv.fleetLease && b.inFleetRange(blk) {
		lo, hi := b.fleet.Range()
		return errf(portres.WSAEADDRINUSE, "%s %s overlaps the fleet range %d-%d, which only fleet leases take (acquire --fleet)", rv.proto, blk, lo, hi)
	}
	if resp := b.chargeLocked(rv, int(blk.Count)); resp != nil {
		return resp
	}
	r, err := b.reserveLocked(rv, blk)
	if err != nil {
		b.refundLocked(rv)
		return b.poolError(rv.proto, want, err)
	}
	if rv.sess != nil {
		rv.sess.resvs[rv] = struct{}{}
	} else if rv.pidOwned {
		b.pidOwned[rv] = struct{}{}
	}
	if rv.holds() {
		rv.holders = make([]int32, r.Block.Count)
		for i := range rv.holders {
			rv.holders[i] = -1
		}
	}
	return nil
}

// reserveLocked reserves blk for rv in its protocol's pool with a token
// unique across both pools (each pool only guarantees its own), and
// indexes it. Caller holds b.mu.
func (b *Broker) reserveLocked(rv *resv, blk pool.Block) (*pool.Reservation, error) {
	p := b.pools[rv.proto]
	for {
		r, err := p.Reserve(blk, 0, rv)
		if err != nil {
			return nil, err
		}
		if _, taken := b.byToken[r.Token]; !taken {
			rv.r = r
			b.byToken[r.Token] = rv
			return r, nil
		}
		p.Release(r.Token) // drawn by the other pool too: draw again
	}
}

// heldBeforeGuard is the largest guarded block whose ports are checked
// by placeholders held until the guard keeps them (one descriptor each).
const heldBeforeGuard = 64

// lingerPlaceholders is how long those placeholders stay after the guard
// took the block. The guard checks a bind before the kernel gives it the
// port, not atomically with it: a foreign bind that passed the check
// just before the guard took the port, and was then preempted, could
// otherwise take the port once the placeholders close (TestChaos saw it
// happen 72 µs before an acquire returned). While a placeholder lingers
// such a bind fails; a bind of the block's owner closes its port's
// placeholder first.
const lingerPlaceholders = 250 * time.Millisecond

// lingerLocked keeps rv's placeholders (rv.lingering) for
// lingerPlaceholders; the linger reaper closes them. Caller holds b.mu.
func (b *Broker) lingerLocked(rv *resv) {
	rv.lingerUntil = time.Now().Add(lingerPlaceholders)
	b.lingerQ = append(b.lingerQ, rv)
}

// lingerReaper closes lingering placeholders once their time is up, in
// batches (one timer per block cost the broker a goroutine wake-up and a
// lock per acquire), and all of them when the broker stops.
func (b *Broker) lingerReaper() {
	defer b.wg.Done()
	t := time.NewTicker(lingerPlaceholders / 5)
	defer t.Stop()
	for {
		var now time.Time
		select {
		case <-b.stop:
		case now = <-t.C:
		}
		b.mu.Lock()
		n := 0
		for n < len(b.lingerQ) && (now.IsZero() || now.After(b.lingerQ[n].lingerUntil)) {
			b.dropLingerLocked(b.lingerQ[n]) // the queue is in lingerUntil order
			n++
		}
		b.lingerQ = append(b.lingerQ[:0], b.lingerQ[n:]...)
		b.mu.Unlock()
		if now.IsZero() {
			return
		}
	}
}

// letGoLocked closes port's placeholder, held (hold mode) or lingering
// (bpf), which a socket of rv's owner is about to take. Caller holds
// b.mu (or owns rv, pending).
func (rv *resv) letGoLocked(port uint16) {
	if off := port - rv.block().Start; rv.holds() && rv.holders[off] >= 0 {
		enforce.Unhold(int(rv.holders[off]))
		rv.holders[off] = -1
	}
	if off := int(port) - int(rv.block().Start); rv.lingering != nil && off >= 0 && off < len(rv.lingering) && rv.lingering[off] >= 0 {
		enforce.Unhold(int(rv.lingering[off]))
		rv.lingering[off] = -1
	}
}

// dropLingerLocked closes rv's lingering placeholders, if any, and gives
// their descriptors back. Caller holds b.mu.
func (b *Broker) dropLingerLocked(rv *resv) {
	for _, fd := range rv.lingering {
		if fd >= 0 {
			enforce.Unhold(int(fd))
		}
	}
	b.fds.Add(-int64(len(rv.lingering))) // one descriptor per port was taken for them
	rv.lingering = nil
}

// refusal is an acquire's answer that ends it before its ports were all
// checked (the guard, the kernel list or the descriptor budget refused).
type refusal struct{ resp *wire.Response }

func (r *refusal) Error() string { return r.resp.Msg }

// enforceNew checks that every port of a new runtime block is free and
// keeps it so, then binds the client's socket of a one-request acquire
// and bind (to), last: a bound socket cannot be unbound, so a failure
// before it leaves it free for the next placement. A held block keeps a
// placeholder on each port (the one the client's socket takes is let go
// just before its bind; in a block of that one port, the socket is
// bound at once in its place). A guarded block of up to heldBeforeGuard ports
// is checked by placeholders bound before the guard and the kernel list
// take it and closed after: they find whatever is bound there already,
// keep the ports in between, and need no pass through the guard; a
// larger one is guarded and listed first, then probed port by port
// through the guard. A delegated block is probed. It stops early when
// ctx is done. On failure it returns the port that failed (an error
// wrapping *clientBindError if it was the client's socket's bind), or a
// *refusal.
func (b *Broker) enforceNew(ctx context.Context, rv *resv, to *bindTarget) (uint16, error) {
	blk := rv.block()
	proto := uint8(rv.proto)
	if to != nil {
		to.port = to.want
		if to.port == 0 {
			to.port = blk.Start
		}
	}
	early := rv.guarded && blk.Count <= heldBeforeGuard
	if rv.guarded && !early {
		if err := b.guardAndList(rv); err != nil {
			return 0, err
		}
	}
	if early {
		// Placeholders per offset, kept by rv (pending: nobody else
		// touches it) with their budget: a failure discards rv, which
		// closes them; success makes them linger.
		if resp := b.takeFDs(int(blk.Count), rv.admin, "checking %d %s ports", blk.Count, rv.proto); resp != nil {
			return 0, &refusal{resp}
		}
		rv.lingering = make([]int32, blk.Count)
		for i := range rv.lingering {
			rv.lingering[i] = -1
		}
	}
	for i := 0; i < int(blk.Count); i++ {
		if i&63 == 0 && ctx.Err() != nil {
			return 0, ctx.Err()
		}
		port := blk.Start + uint16(i)
		switch {
		case to.first(rv):
			// The client's socket holds the one port, from the start
			// (acquireBlock's bindFirst).
			return b.bindClient(ctx, rv, to)
		case rv.holds():
			fd, err := enforce.Hold(proto, port)
			if err != nil {
				return port, err
			}
			rv.holders[i] = int32(fd) // rv is pending: nobody else touches it
		case early:
			fd, err := enforce.Hold(proto, port)
			if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
				// Guarded already (an entry a crashed broker left, until
				// the restore reconciles the guard): a probe let through.
				fd, err = -1, enforce.ProbeAllowed(proto, port, b.guard)
			}
			if err != nil {
				return port, err
			}
			rv.lingering[i] = int32(fd)
		default:
			if err := enforce.ProbeAllowed(proto, port, b.guardOf(rv)); err != nil {
				return port, err
			}
		}
	}
	if early {
		if err := b.guardAndList(rv); err != nil {
			return 0, err
		}
		b.mu.Lock()
		b.lingerLocked(rv)
		b.mu.Unlock()
	}
	return b.bindClient(ctx, rv, to)
}

// guardAndList has the guard keep rv's block and lists it in the
// kernel's reserved ports; a failure is a *refusal.
func (b *Broker) guardAndList(rv *resv) error {
	blk := rv.block()
	if err := b.guard.Guard(uint8(rv.proto), blk.Start, uint16(blk.End())); err != nil {
		return &refusal{errf(portres.WSAEINVAL, "guarding %s %s: %v", rv.proto, blk, err)}
	}
	if resp := b.exclude(rv, portres.WSAENOBUFS); resp != nil {
		return &refusal{resp}
	}
	return nil
}

// bindClient binds the client's socket of a one-request acquire and bind
// (none: nothing to do) to its port, whose placeholder (held blocks) it
// lets go just before, as a brokered bind does.
func (b *Broker) bindClient(ctx context.Context, rv *resv, to *bindTarget) (uint16, error) {
	if to == nil {
		return 0, nil
	}
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	b.mu.Lock()
	rv.letGoLocked(to.port)
	b.mu.Unlock()
	cookie, err := b.bindAllowed(rv, to.fd, to.sa, to.port)
	var ge *guardError
	switch {
	case errors.As(err, &ge):
		return 0, &refusal{errf(portres.WSAEINVAL, "letting %s port %d through the bind guard: %v", rv.proto, to.port, ge.err)}
	case err != nil:
		return to.port, fmt.Errorf("bind %s port %d: %w", rv.proto, to.port, &clientBindError{err})
	}
	to.cookie = cookie
	return 0, nil
}

// remove forgets rv, which failed before it was acquired.
func (b *Broker) remove(rv *resv) {
	b.mu.Lock()
	b.removeLocked(rv)
	b.mu.Unlock()
}

// discard forgets rv, which failed before it was acquired, and takes it
// out of the kernel list if it got in (why names the failure there).
func (b *Broker) discard(rv *resv, why string) {
	b.remove(rv)
	b.unlist(rv, why)
}

// guardOf is the bind guard that keeps rv's ports, nil if none does:
// the broker's own binds on them must be let through it.
func (b *Broker) guardOf(rv *resv) *enforce.BindGuard {
	if rv.guarded {
		return b.guard
	}
	return nil
}

// removeLocked forgets rv and closes its placeholders. Caller holds b.mu.
func (b *Broker) removeLocked(rv *resv) {
	if rv.r == nil {
		return
	}
	if _, err := b.pools[rv.proto].Release(rv.r.Token); err != nil {
		b.log.Error("pool release", "token", fmt.Sprintf("%#x", uint64(rv.r.Token)), "err", err)
	}
	delete(b.byToken, rv.r.Token)
	if rv.sess != nil {
		delete(rv.sess.resvs, rv)
		if rv.fleetTicket != 0 {
			rv.sess.fleetLeases.Add(-1)
		}
	}
	delete(b.orphans, rv)
	delete(b.pidOwned, rv)
	b.refundLocked(rv)
	if rv.admitted {
		b.exclMu.Lock()
		b.coverOf(rv).Remove(rv.listed())
		b.exclMu.Unlock()
	}
	rv.closeHolders()
	b.dropLingerLocked(rv)
	b.freeFleetLease(rv, false)
	if rv.guarded {
		blk := rv.block()
		if err := b.guard.Unguard(uint8(rv.proto), blk.Start, uint16(blk.End())); err != nil {
			b.log.Error("unguard", "proto", rv.proto, "block", blk.String(), "err", err)
		}
	}
}

// release ends a runtime reservation of the calling process. req.Proto
// 0 releases a reservation of either protocol; TCP or UDP releases only
// a reservation of that protocol (a Winsock RELEASE issued on a socket
// reaches only its protocol's pool): any other protocol is refused with
// WSAEINVAL and nothing is released. The check is made under the same
// lock as the release, so it costs no extra round trip and no other
// request sees the reservation half-checked.
func (b *Broker) release(s *session, req *wire.Request) *wire.Response {
	want := portres.Proto(req.Proto)
	if want != 0 && want != portres.TCP && want != portres.UDP {
		return errf(portres.WSAEINVAL, "release of reservation %#x: protocol %d is neither 0 (any), tcp (6) nor udp (17)", req.Token, req.Proto)
	}
	b.mu.Lock()
	rv, resp := b.ownedLocked(s, req.Token, "release")
	if resp != nil {
		b.mu.Unlock()
		return resp
	}
	if want != 0 && rv.proto != want {
		b.mu.Unlock()
		return rv.errf(portres.WSAEINVAL, "a %s socket cannot release the %s; nothing was released", want, rv.describe())
	}
	if rv.kind == wire.KindPersistent {
		b.mu.Unlock()
		return rv.errf(portres.WSAEINVAL, "token %#x is a persistent reservation: delete it with persistent delete", req.Token)
	}
	fleetLease := rv.fleetLease && !rv.fleetFreed.Swap(true)
	b.removeLocked(rv)
	b.forgetLocked(rv)
	b.mu.Unlock()
	if fleetLease { // fleet-wide free before the answer: a release is done when it returns
		rv.fleetFreed.Store(false)
		b.freeFleetLease(rv, true)
	}
	b.unlist(rv, "release")
	blk := rv.block()
	if b.debug {
		b.log.Debug("released", "proto", rv.proto, "block", blk.String(), "pid", s.peer.pid, "uid", s.peer.uid)
	}
	return &wire.Response{Token: req.Token, Proto: uint8(rv.proto), Start: blk.Start, Count: blk.Count}
}

// associate checks that s may consume the reservation and describes it.
func (b *Broker) associate(s *session, req *wire.Request) *wire.Response {
	b.mu.Lock()
	defer b.mu.Unlock()
	rv, resp := b.ownedLocked(s, req.Token, "associate")
	if resp != nil {
		return resp
	}
	blk := rv.block()
	return &wire.Response{Token: req.Token, Proto: uint8(rv.proto), Start: blk.Start, Count: blk.Count}
}

// ownedLocked finds token's reservation and checks that s may use it:
// runtime ones belong to the acquiring process, persistent ones to whoever
// may consume persistent reservations. Caller holds b.mu.
func (b *Broker) ownedLocked(s *session, token uint64, op string) (*resv, *wire.Response) {
	rv := b.byToken[pool.Token(token)]
	if token == 0 || rv == nil || rv.pending {
		return nil, errf(portres.WSAEINVAL, "no reservation with token %#x", token)
	}
	switch rv.kind {
	case wire.KindRuntime:
		if !rv.owner.same(s.peer) {
			return nil, rv.errf(portres.WSAEACCES, "%s: %s; only the acquiring process may %s it", op, rv.describe(), op)
		}
	case wire.KindPersistent:
		if !b.mayAdmin(s.peer) {
			return nil, rv.errf(portres.WSAEACCES, "%s: uid %d may not consume %s (root or the admin group only)", op, s.peer.uid, rv.describe())
		}
	}
	return rv, nil
}

// checkBlock validates a request's protocol and block. persistent
// requests need a specific start and answer ERROR_INVALID_PARAMETER.
func checkBlock(req *wire.Request, persistent bool) (portres.Proto, *wire.Response) {
	code := portres.WSAEINVAL
	if persistent {
		code = portres.ERROR_INVALID_PARAMETER
	}
	proto := portres.Proto(req.Proto)
	switch {
	case proto != portres.TCP && proto != portres.UDP:
		return 0, errf(code, "protocol %d is neither tcp (6) nor udp (17)", req.Proto)
	case req.Count == 0:
		return 0, errf(code, "number of ports must be 1 to 65535, got 0")
	case persistent && req.Start == 0:
		return 0, errf(code, "a persistent reservation needs a starting port (got 0)")
	case req.Start != 0 && int(req.Start)+int(req.Count)-1 > 65535:
		return 0, errf(code, "block %d-%d runs past port 65535", req.Start, int(req.Start)+int(req.Count)-1)
	}
	return proto, nil
}

// poolError maps an allocation failure to a response naming what is in
// the way.
func (b *Broker) poolError(proto portres.Proto, want pool.Block, err error) *wire.Response {
	var oe *pool.OverlapError
	switch {
	case errors.As(err, &oe):
		with, _ := oe.With.Owner.(*resv)
		desc := fmt.Sprintf("%s reservation %s", proto, oe.With.Block)
		if with != nil {
			desc = with.describe()
		}
		r := errf(portres.WSAEADDRINUSE, "%s %s overlaps %s", proto, want, desc)
		r.Start, r.Count = want.Start, want.Count
		return r
	case errors.Is(err, pool.ErrNoSpace):
		lo, hi := b.pools[proto].Dynamic()
		return errf(portres.WSAEADDRINUSE, "no free block of %d %s ports in the dynamic range %d-%d", want.Count, proto, lo, hi)
	}
	return errf(portres.WSAEINVAL, "%s %s: %v", proto, want, err)
}
