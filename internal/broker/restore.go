//go:build linux

package broker

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/enforce"
	"github.com/portres/portres/internal/pool"
	"github.com/portres/portres/internal/store"
	"github.com/portres/portres/internal/wire"
	"golang.org/x/sys/unix"
)

// Live restore. Every runtime reservation is recorded in the runtime
// file (store.Runtime, beside the socket) when its acquire succeeds and
// cleared when it ends, so a broker that restarts or crashed finds them
// again. While it is down the kernel keeps enforcing them: the pinned
// eBPF guard and ip_local_reserved_ports outlive it (placeholders do not:
// in hold mode only automatic assignment stays closed meanwhile). At
// start-up each recorded block whose owner (pid and process start time)
// still runs is reserved again, with its token, before the socket is
// served; the ports its owner's sockets hold are marked bound; the
// guard's map is reconciled to exactly these blocks. The blocks wait
// Config.RestoreGrace for their owner to reconnect and reclaim them by
// token (OpReclaim); the ones not reclaimed by then, and the ones whose
// owner exits meanwhile, are released.

// restore re-reserves the runtime blocks the runtime file records.
// Caller: New, before the socket is served and before anything else runs.
func (b *Broker) restore() error {
	if b.cfg.Runtime == "-" {
		return nil
	}
	rt, recs, err := store.OpenRuntime(b.cfg.Runtime, bootID(), b.netns)
	if err != nil {
		return fmt.Errorf("portresd: runtime state: %w", err)
	}
	b.runtime = rt
	if len(recs) == 0 {
		return nil
	}
	deadline := time.Now().Add(b.cfg.RestoreGrace)
	var delegated [2]*enforce.PortSet // TCP, UDP: read once, if a delegated block needs it
	var kept, dropped int
	// Newest first: a block released just before a crash may still be
	// recorded (its slot is cleared after the pool lets it go), and its
	// ports may have been taken again since; the later block wins.
	slots := slices.Collect(maps.Keys(recs))
	slices.SortFunc(slots, func(a, b store.RuntimeSlot) int { return cmp.Compare(recs[b].Created, recs[a].Created) })
	for _, slot := range slots {
		rec := recs[slot]
		rv, why := b.restoreOne(slot, rec, deadline)
		if rv == nil {
			dropped++
			rt.Clear(slot)
			b.log.Info("runtime reservation not restored", "proto", portres.Proto(rec.Proto), "block", pool.Block{Start: rec.Start, Count: rec.Count}.String(),
				"pid", rec.PID, "why", why)
			continue
		}
		kept++
		b.markRestoredBound(rv, &delegated)
	}
	b.log.Info("runtime reservations restored; their owners have until the grace period ends to reclaim them",
		"restored", kept, "released", dropped, "grace", b.cfg.RestoreGrace, "runtime_state", b.cfg.Runtime)
	return nil
}

// restoreOne reserves rec's block again for its owner, if the owner is
// still the process that acquired it. It returns nil and why not
// otherwise.
func (b *Broker) restoreOne(slot store.RuntimeSlot, rec store.RuntimeRecord, deadline time.Time) (*resv, string) {
	proto := portres.Proto(rec.Proto)
	pl := b.pools[proto]
	if pl == nil {
		return nil, fmt.Sprintf("unknown protocol %d", rec.Proto)
	}
	if st, err := readStartTime(rec.PID); err != nil || st != rec.StartTime {
		return nil, "its owner exited while the broker was down"
	}
	owner := &peer{pid: rec.PID, uid: rec.UID, gid: rec.GID, id: rec.StartTime, cmd: rec.Command, grps: groups(rec.PID)}
	if c := command(rec.PID); c != "" {
		owner.cmd = c
	}
	delegated := rec.Flags&store.RuntimeDelegated != 0
	rv := &resv{proto: proto, kind: wire.KindRuntime, owner: owner, admin: rec.Flags&store.RuntimeAdmin != 0,
		delegated: delegated, guarded: b.guard != nil && !delegated, created: time.Unix(0, rec.Created),
		slot: slot, orphaned: deadline, pidOwned: rec.Flags&store.RuntimePidOwned != 0}
	if _, taken := b.byToken[pool.Token(rec.Token)]; taken {
		return nil, "its token is taken"
	}
	r, err := pl.Reserve(pool.Block{Start: rec.Start, Count: rec.Count}, pool.Token(rec.Token), rv)
	if err != nil {
		return nil, err.Error()
	}
	rv.r = r
	b.byToken[r.Token] = rv
	if rv.pidOwned {
		rv.orphaned = time.Time{} // its owner is its process: nothing to reclaim
		b.pidOwned[rv] = struct{}{}
	} else {
		b.orphans[rv] = struct{}{}
	}
	// Charged whatever the limits say now: it was within them when taken.
	u := b.userLocked(owner.uid)
	u.resvs++
	u.ports += int(rec.Count)
	rv.charged = int(rec.Count)
	if rv.holds() {
		b.fds.Add(int64(rec.Count))
		rv.holders = make([]int32, rec.Count)
		for i := range rv.holders {
			rv.holders[i] = -1
		}
	}
	if rec.Flags&store.RuntimeNotExcluded == 0 || rv.chunked() {
		b.coverOf(rv).Add(rv.listed())
		rv.admitted = true
	}
	return rv, ""
}

// markRestoredBound finds which ports of rv, just restored, its owner's
// sockets hold, and marks them bound; the free ones of a held block get
// their placeholder back. A guarded or held port is probed by binding it
// (the probe passes the guard; a bound-only TCP socket shows in no
// table); a delegated one is looked up in the socket tables, read once
// per protocol, since binding it could fail the bind of the process it
// was handed to.
func (b *Broker) markRestoredBound(rv *resv, tables *[2]*enforce.PortSet) {
	blk := rv.block()
	if rv.delegated {
		i := protoIndex(rv.proto)
		if tables[i] == nil {
			set, err := enforce.InUse(uint8(rv.proto))
			if err != nil {
				b.log.Warn("restore: reading socket tables", "proto", rv.proto, "err", err)
				set = &enforce.PortSet{}
			}
			tables[i] = set
		}
		for p := int(blk.Start); p <= blk.End(); p++ {
			if tables[i].Has(uint16(p)) {
				b.takeLocked(rv, uint16(p))
			}
		}
		return
	}
	for i := 0; i < int(blk.Count); i++ {
		port := blk.Start + uint16(i)
		fd, err := enforce.HoldAllowed(uint8(rv.proto), port, b.guardOf(rv))
		switch {
		case err == nil && rv.holds():
			rv.holders[i] = int32(fd)
		case err == nil:
			enforce.Unhold(fd)
		case errors.Is(err, unix.EADDRINUSE):
			b.takeLocked(rv, port) // its owner's socket, most likely
		default:
			b.log.Warn("restore: probing a restored port", "proto", rv.proto, "port", port, "err", err)
		}
	}
}

// reconcileGuard makes the guard's map exactly the guarded runtime
// blocks (restored ones, at start-up): ports of blocks released while
// the broker was down are let go, in one write.
func (b *Broker) reconcileGuard() error {
	if b.guard == nil {
		return nil
	}
	var tcp, udp enforce.Bitmap
	for _, rv := range b.byToken {
		if rv.guarded {
			m := &tcp
			if rv.proto == portres.UDP {
				m = &udp
			}
			blk := rv.block()
			m.Set(blk.Start, uint16(blk.End()))
		}
	}
	return b.guard.Reconcile(&tcp, &udp)
}

// record writes rv, a runtime reservation just acquired, to the runtime
// file, so that it survives a restart of the broker.
func (b *Broker) record(rv *resv) {
	if b.runtime == nil {
		return
	}
	rec := store.RuntimeRecord{Token: uint64(rv.r.Token), Proto: uint8(rv.proto), Start: rv.r.Block.Start, Count: rv.r.Block.Count,
		PID: rv.owner.pid, UID: rv.owner.uid, GID: rv.owner.gid, StartTime: rv.owner.id, Created: rv.created.UnixNano(), Command: rv.owner.cmd}
	if rv.delegated {
		rec.Flags |= store.RuntimeDelegated
	}
	if rv.admin {
		rec.Flags |= store.RuntimeAdmin
	}
	if rv.pidOwned {
		rec.Flags |= store.RuntimePidOwned
	}
	if rv.excluded() && !rv.admitted {
		rec.Flags |= store.RuntimeNotExcluded
	}
	slot, err := b.runtime.Put(&rec)
	if err != nil {
		b.rlog.Log(0, slog.LevelWarn, "degraded: a runtime reservation will not survive a restart of the broker", "proto", rv.proto, "block", rv.block().String(), "err", err)
		return
	}
	b.mu.Lock()
	rv.slot = slot
	b.mu.Unlock()
}

// forgetLocked marks the runtime-file slots of reservations that ended
// (taken out of the state by removeLocked) for clearing by the next
// sweep, off the requests' path: a release costs no write and wakes
// nothing. Until then a crash leaves their records behind, and a restart
// restores them unclaimed for the grace period. Caller holds b.mu.
func (b *Broker) forgetLocked(rvs ...*resv) {
	if b.runtime == nil {
		return
	}
	for _, rv := range rvs {
		b.runtime.Release(rv.slot)
		rv.slot = 0
	}
}

// flushRuntime clears the runtime-file slots of ended reservations; the
// sweeper calls it.
func (b *Broker) flushRuntime() {
	if b.runtime == nil {
		return
	}
	if err := b.runtime.Flush(); err != nil {
		b.rlog.Log(0, slog.LevelWarn, "runtime state: clearing released reservations", "err", err)
	}
}

// reclaim gives s back a runtime reservation that the broker restored
// after a restart, if s's process is the one that acquired it: from now
// on it ends with s, as if it had been acquired on it.
func (b *Broker) reclaim(s *session, req *wire.Request) *wire.Response {
	b.mu.Lock()
	defer b.mu.Unlock()
	rv := b.byToken[pool.Token(req.Token)]
	switch {
	case req.Token == 0 || rv == nil || rv.pending:
		return errf(portres.WSAEINVAL, "reclaim: no reservation with token %#x: it was released, or its owner did not reclaim it within %v of the broker's restart", req.Token, b.cfg.RestoreGrace)
	case rv.kind != wire.KindRuntime:
		return rv.errf(portres.WSAEINVAL, "reclaim: token %#x is a persistent reservation: it needs no reclaiming", req.Token)
	case !rv.owner.same(s.peer):
		return rv.errf(portres.WSAEACCES, "reclaim: %s; only the acquiring process may reclaim it", rv.describe())
	case rv.sess == s:
	case rv.sess != nil:
		return rv.errf(portres.WSAEINVAL, "reclaim: %s is held by another connection of this process", rv.describe())
	default:
		delete(b.orphans, rv)
		rv.orphaned = time.Time{}
		rv.owner, rv.sess = s.peer, s
		s.resvs[rv] = struct{}{}
	}
	blk := rv.block()
	resp := &wire.Response{Token: req.Token, Proto: uint8(rv.proto), Start: blk.Start, Count: blk.Count}
	if rv.excluded() && !rv.admitted {
		resp.Flags |= wire.NotExcluded
	}
	return resp
}

// expireOrphans releases restored reservations whose grace period ended
// or whose owner exited. The sweeper calls it.
func (b *Broker) expireOrphans() {
	b.mu.Lock()
	if len(b.orphans) == 0 {
		b.mu.Unlock()
		return
	}
	now := time.Now()
	var gone []*resv
	var whys []string
	for rv := range b.orphans {
		why := ""
		if now.After(rv.orphaned) {
			why = fmt.Sprintf("its owner did not reclaim it within %v of the broker's restart", b.cfg.RestoreGrace)
		} else if st, err := readStartTime(rv.owner.pid); err != nil || st != rv.owner.id {
			why = "its owner exited before reclaiming it"
		}
		if why != "" {
			delete(b.orphans, rv)
			b.removeLocked(rv)
			b.forgetLocked(rv)
			gone, whys = append(gone, rv), append(whys, why)
		}
	}
	b.mu.Unlock()
	for i, rv := range gone {
		b.log.Info("restored reservation released", "proto", rv.proto, "block", rv.block().String(), "pid", rv.owner.pid, "why", whys[i])
		b.unlist(rv, "restored reservation released")
	}
}
