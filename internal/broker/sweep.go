//go:build linux

package broker

import (
	"errors"
	"log/slog"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/enforce"
	"github.com/portres/portres/internal/sockdiag"
	"github.com/portres/portres/internal/wire"
	"golang.org/x/sys/unix"
)

// sweeper periodically finds bound ports whose sockets are gone and makes
// them free again (with their placeholder back, for runtime blocks).
func (b *Broker) sweeper() {
	defer b.wg.Done()
	t := time.NewTicker(b.cfg.Sweep)
	defer t.Stop()
	idleSince := time.Now()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			if b.cfg.IdleExit > 0 {
				b.mu.Lock()
				busy := len(b.sessions) > 0 || len(b.orphans) > 0 || len(b.pidOwned) > 0
				b.mu.Unlock()
				if busy {
					idleSince = time.Now()
				} else if time.Since(idleSince) >= b.cfg.IdleExit {
					b.log.Info("idle: no client and no runtime reservation", "for", time.Since(idleSince).Round(time.Millisecond))
					b.ln.Shutdown() // Serve returns; Run closes the broker
					return
				}
			}
			b.readPrivStart()
			b.expireOrphans()
			b.expirePidOwned()
			b.flushRuntime()
			if b.listDirty.Swap(false) {
				b.applySysctlLogged("lazy removal")
			}
			b.sweep(false)
			b.rlog.Flush()
		}
	}
}

// tables is one read of the kernel's socket tables: the local ports of
// TCP and UDP sockets, and the take sequence number (b.takeSeq) before
// they were read, so that a port taken after the read is never freed on
// the strength of it.
type tables struct {
	seq    uint64
	at     time.Time
	lo, hi uint16 // the port range read
	ports  map[portres.Proto]*enforce.PortSet
}

// span is a range of ports, empty when lo > hi.
type span struct{ lo, hi uint16 }

// add widens s to cover port.
func (s *span) add(port uint16) {
	if s.lo > s.hi {
		s.lo, s.hi = port, port
		return
	}
	s.lo, s.hi = min(s.lo, port), max(s.hi, port)
}

var emptySpan = span{lo: 65535, hi: 0}

// readTables reads the socket tables of proto in [lo, hi], once, without
// the lock.
func (b *Broker) readTables(protos []portres.Proto, lo, hi uint16) (*tables, error) {
	b.mu.Lock()
	t := &tables{seq: b.takeSeq, at: time.Now(), lo: lo, hi: hi, ports: map[portres.Proto]*enforce.PortSet{}}
	b.mu.Unlock()
	return b.readTablesSince(t, protos)
}

// readTablesSince fills t (seq and range set) with one read per protocol.
func (b *Broker) readTablesSince(t *tables, protos []portres.Proto) (*tables, error) {
	lo, hi := t.lo, t.hi
	for _, proto := range protos {
		set, err := enforce.InUseRange(uint8(proto), lo, hi)
		b.metrics.observeTableRead()
		if err != nil {
			return nil, err
		}
		t.ports[proto] = set
	}
	return t, nil
}

// sweep re-checks every bound port of every reservation against one read
// of the socket tables per protocol, and returns that read (nil if it
// failed). A port with a socket in the tables stays bound. Otherwise a
// persistent or delegated port is free again, unless taken since the
// read; a runtime port is free again once a placeholder can be bound on
// it (a bound-only TCP socket is in no table, so the bind is what
// decides). The lock is held for one chunk of reservations at a time.
// Only one sweep runs at a time.
//
// The periodic sweep reads only the range of ports bound anywhere (on a
// busy host most sockets lie elsewhere, and what the kernel copies out is
// the sweep's main cost); full reads the whole port space, as show needs
// to see what delegated processes bound.
func (b *Broker) sweep(full bool) *tables {
	b.sweepMu.Lock()
	defer b.sweepMu.Unlock()
	start := time.Now()
	b.mu.Lock()
	t := &tables{seq: b.takeSeq, at: start, lo: 1, hi: 65535, ports: map[portres.Proto]*enforce.PortSet{}}
	protos := []portres.Proto{portres.TCP, portres.UDP}
	if !full {
		// Every port bound now was taken since the last sweep began or
		// was seen bound by it: b.bound covers them all.
		protos = protos[:0]
		r := emptySpan
		for _, proto := range []portres.Proto{portres.TCP, portres.UDP} {
			if sp := b.bound[proto]; sp.lo <= sp.hi {
				protos = append(protos, proto)
				r.add(sp.lo)
				r.add(sp.hi)
			}
		}
		t.lo, t.hi = r.lo, r.hi
	}
	b.bound = map[portres.Proto]span{}
	b.mu.Unlock()
	seen := map[portres.Proto]span{}
	defer func() {
		// What the walk saw bound stays covered for the next sweep, with
		// what was taken meanwhile (takeLocked widened b.bound).
		b.mu.Lock()
		for proto, sp := range seen {
			cur, ok := b.bound[proto]
			if !ok {
				cur = emptySpan
			}
			cur.add(sp.lo)
			cur.add(sp.hi)
			b.bound[proto] = cur
		}
		b.mu.Unlock()
	}()
	if len(protos) == 0 {
		return nil
	}
	if _, err := b.readTablesSince(t, protos); err != nil {
		b.rlog.Log(0, slog.LevelWarn, "sweep: reading socket tables", "err", err)
		// Keep every bound port covered for the next try.
		b.walk(func(rv *resv) { noteBound(seen, rv) })
		return nil
	}
	b.walk(func(rv *resv) {
		if !rv.pending && rv.r.NumBound() > 0 {
			b.recheckLocked(rv, rv.r.Bound(), t)
			noteBound(seen, rv)
		}
	})
	b.metrics.observeSweep(time.Since(start))
	return t
}

// noteBound widens seen[rv.proto] to cover rv's bound ports.
func noteBound(seen map[portres.Proto]span, rv *resv) {
	if rv.r.NumBound() == 0 {
		return
	}
	sp, ok := seen[rv.proto]
	if !ok {
		sp = emptySpan
	}
	for _, p := range rv.r.Bound() {
		sp.add(p)
	}
	seen[rv.proto] = sp
}

// recheckByBind is the most bound ports a recheck binds on one by one.
const recheckByBind = 16

// recheck re-checks ports of rv (bound ones; every bound one if ports is
// nil) for a request that finds the block full or the wanted port bound.
// Announcements of destroyed sockets not read yet go first. A runtime
// block's port is free once a placeholder (or probe) binds on
// it, which a few binds find out sooner than a read of the socket tables
// (the kernel walks its whole connection hash for one, some hundred µs
// here); other blocks, and runtime ones with many ports bound, are
// checked against a read of the tables filtered to the block.
func (b *Broker) recheck(rv *resv, ports []uint16) {
	if rv.kind == wire.KindRuntime && !rv.delegated {
		b.drainClosed(rv.proto)
		b.mu.Lock()
		if ports == nil {
			ports = rv.r.Bound()
		}
		if len(ports) <= recheckByBind && b.byToken[rv.r.Token] == rv {
			for _, port := range ports {
				if rv.r.IsBound(port) {
					b.reholdLocked(rv, port)
				}
			}
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
	}
	blk := rv.block()
	t, err := b.readTables([]portres.Proto{rv.proto}, blk.Start, uint16(blk.End()))
	if err != nil {
		b.rlog.Log(0, slog.LevelWarn, "re-checking bound ports: reading socket tables", "proto", rv.proto, "err", err)
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.byToken[rv.r.Token] != rv {
		return
	}
	if ports == nil {
		ports = rv.r.Bound()
	}
	b.recheckLocked(rv, ports, t)
}

// recheckLocked frees the ports of rv whose sockets are gone according
// to t. Caller holds b.mu.
func (b *Broker) recheckLocked(rv *resv, ports []uint16, t *tables) {
	inuse := t.ports[rv.proto]
	for _, port := range ports {
		if !rv.r.IsBound(port) || inuse.Has(port) {
			continue
		}
		if rv.kind == wire.KindPersistent || rv.delegated {
			// Bound by other processes, whose bind a probe could make
			// fail: the tables decide, if they are newer than the take.
			if rv.lastTake <= t.seq {
				rv.r.Put(port)
			}
			continue
		}
		b.reholdLocked(rv, port)
	}
}

// reholdLocked frees port, bound from runtime block rv, if a placeholder
// can be bound on it now (the port's last socket is gone): in hold mode
// the placeholder stays; in bpf mode it is closed again (only the broker
// gets past the guard, so the probe took nothing from anyone). Caller
// holds b.mu.
func (b *Broker) reholdLocked(rv *resv, port uint16) {
	fd, err := enforce.HoldAllowed(uint8(rv.proto), port, b.guardOf(rv))
	switch {
	case err == nil && rv.holds():
		rv.r.Put(port)
		rv.holders[port-rv.block().Start] = int32(fd)
	case err == nil:
		enforce.Unhold(fd)
		rv.r.Put(port)
	case !errors.Is(err, unix.EADDRINUSE):
		b.rlog.Log(0, slog.LevelWarn, "sweep probe failed", "proto", rv.proto, "port", port, "err", err)
	}
}

// openWatchers starts watching destroyed TCP and UDP sockets (at New, so
// that the broker's descriptors are all open once it returns). Where the
// kernel's announcements are unavailable (a non-root broker) the sweeps
// alone notice closed sockets.
func (b *Broker) openWatchers() {
	for i, proto := range []portres.Proto{portres.TCP, portres.UDP} {
		w, err := sockdiag.Watch(uint8(proto))
		if err != nil {
			b.log.Info("closed sockets are noticed by sweeps only", "proto", proto, "err", err)
			continue
		}
		b.watchers[i] = w
		// Let the kernel drop the announcements of ports no runtime
		// block has bound (most of them: every placeholder, probe and
		// connection of the host), and of sockets other than the one
		// the broker bound on a port (its placeholder, closed for the
		// bind; connections a listener accepted), so that they wake
		// nobody: the same tests the watcher makes, on a bitmap and
		// cookies shared with the kernel.
		if m, cookies, err := w.FilterPorts(); err != nil {
			b.log.Info("every closed socket wakes the watcher", "proto", proto, "err", err)
		} else {
			for j := range m {
				m[j].Store(b.watched[i][j].Load())
			}
			b.marks[i], b.sockets[i] = m, cookies
		}
	}
}

// watchClosed re-holds bound runtime ports the moment their sockets are
// destroyed, as the kernel announces it (sock_diag destroy groups), so
// that nothing waits for the next sweep: the window in which another
// process could bind a port its owner just closed is one announcement
// and one bind long. It returns when the watcher is closed (Close).
func (b *Broker) watchClosed(proto portres.Proto, w *sockdiag.Watcher) {
	defer b.wg.Done()
	for {
		ports, err := w.Next()
		switch {
		case errors.Is(err, os.ErrClosed):
			return
		case errors.Is(err, unix.ENOBUFS):
			// Announcements were dropped (the broker fell behind): the
			// sweep catches up.
			b.rlog.Log(0, slog.LevelWarn, "watching closed sockets: announcements lost", "proto", proto, "err", err)
			continue
		case err != nil:
			b.log.Warn("closed sockets are noticed by sweeps only from now", "proto", proto, "err", err)
			return
		}
		b.applyClosed(proto, ports)
		if b.guard != nil {
			// The guard keeps a closed port from everyone else, so its
			// block need not have it back at once (a bind that finds the
			// block full re-checks it first): a batch per lazyWatch costs
			// one wake-up instead of one per closed socket.
			w.Pause(lazyWatch)
		}
	}
}

// lazyWatch is how long, in bpf mode, announcements of closed sockets
// gather before the watcher reads them.
const lazyWatch = 2 * time.Millisecond

// applyClosed frees the ports of runtime blocks whose socket the kernel
// announced destroyed. Only the destroy of the socket the broker bound
// there counts (its cookie; any, where the broker does not know it): the
// others are connections that socket accepted, or an earlier socket of
// the port announced late. A held block's port is held again at once
// (hold mode: a placeholder). A guarded one is free as soon as its
// socket is gone: the guard keeps it from everyone else, and what may
// linger on it (TIME_WAIT, accepted connections) makes the next bind
// there fail and mark it bound again, like a probe would.
func (b *Broker) applyClosed(proto portres.Proto, closed []sockdiag.Closed) {
	// Most announcements are of sockets that are none of the broker's
	// business (every TCP or UDP socket of the host where the kernel
	// does not filter them): look them up without the lock first.
	marks := b.boundMarks(proto)
	closed = slices.DeleteFunc(closed, func(c sockdiag.Closed) bool { return marks[c.Port/64].Load()&(1<<(c.Port%64)) == 0 })
	if len(closed) == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range closed {
		port := c.Port
		if r := b.pools[proto].Find(port); r != nil {
			if rv := r.Owner.(*resv); !rv.pending && rv.kind == wire.KindRuntime && !rv.delegated && rv.r.IsBound(port) {
				bound := rv.boundSocket(port)
				switch {
				case bound != 0 && c.Cookie != 0 && bound != c.Cookie:
					continue // the socket bound there is alive
				case bound != 0 && !rv.holds():
					rv.r.Put(port)
				default:
					b.reholdLocked(rv, port)
					if rv.r.IsBound(port) {
						// Still held by other sockets (connections its
						// listener accepted, TIME_WAIT): the destroy of
						// any of them may be the last.
						b.boundSocketLocked(rv, port, 0)
						continue
					}
				}
			}
		}
		marks[port/64].And(^(uint64(1) << (port % 64)))
	}
}

// drainClosed applies the announcements of destroyed sockets of proto
// not read yet: the watcher may be pausing (bpf mode) or behind.
func (b *Broker) drainClosed(proto portres.Proto) {
	i := protoIndex(proto)
	if w := b.watchers[i]; w != nil {
		if closed, _ := w.Drain(); len(closed) > 0 {
			b.applyClosed(proto, closed)
		}
	}
}

// boundSocketLocked notes that the socket with cookie (0: none known)
// is the one the broker bound on port of rv: only its destroy frees the
// port, and, where the kernel filters announcements, only its destroy
// is announced (while the port is marked). Caller holds b.mu (or owns
// rv, pending).
func (b *Broker) boundSocketLocked(rv *resv, port uint16, cookie uint64) {
	if rv.kind != wire.KindRuntime || rv.delegated {
		return // not watched: persistent and delegated ports are swept
	}
	rv.boundSocketLocked(port, cookie)
	i := protoIndex(rv.proto)
	if c := b.sockets[i]; c != nil {
		c.Set(port, cookie)
	}
}

// protoIndex is proto's index in the broker's per-protocol arrays
// (watchers, marks, sockets): TCP 0, UDP 1.
func protoIndex(proto portres.Proto) int {
	if proto == portres.UDP {
		return 1
	}
	return 0
}

// boundMarks is proto's bitmap of ports that may be bound in runtime
// blocks whose sockets the destroy watcher follows: set when a port is
// marked bound, cleared by the watcher (under b.mu) once it finds the
// port free. It never misses a bound port; a stale mark costs a lookup.
func (b *Broker) boundMarks(proto portres.Proto) *[1024]atomic.Uint64 {
	i := protoIndex(proto)
	if m := b.marks[i]; m != nil {
		return m
	}
	return &b.watched[i]
}

// takeLocked marks port (0: any free one) of rv bound, noting when for
// sweeps that read the socket tables before it. Caller holds b.mu.
func (b *Broker) takeLocked(rv *resv, port uint16) (uint16, error) {
	p, err := rv.r.Take(port)
	if err == nil {
		if rv.kind == wire.KindRuntime && !rv.delegated {
			b.boundMarks(rv.proto)[p/64].Or(1 << (p % 64))
		}
		b.boundSocketLocked(rv, p, 0) // until a bind names its socket
		b.takeSeq++
		rv.lastTake = b.takeSeq
		sp, ok := b.bound[rv.proto]
		if !ok {
			sp = emptySpan
		}
		sp.add(p)
		b.bound[rv.proto] = sp
	}
	return p, err
}

// noteDelegatedLocked marks the ports of a delegated block that are in
// use in t: the process they were handed to binds them itself, so the
// broker learns of it only from the kernel's socket tables. A later sweep
// frees them again once closed. Caller holds b.mu.
func (b *Broker) noteDelegatedLocked(rv *resv, t *tables) {
	inuse := t.ports[rv.proto]
	blk := rv.block()
	for p := int(blk.Start); p <= blk.End(); p++ {
		if port := uint16(p); inuse.Has(port) && !rv.r.IsBound(port) {
			b.takeLocked(rv, port)
		}
	}
}
