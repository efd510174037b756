//go:build linux

package broker

import (
	"github.com/portres/portres/internal/enforce"
	"github.com/portres/portres/internal/wire"
)

// show lists every reservation, in protocol and port order. Tokens appear
// only where the asker may use them: its own runtime reservations, and
// persistent ones if it may consume persistent reservations. The answer
// is split into datagrams of at most wire.MaxMessage bytes. It sweeps
// first, so "bound" is current, and reads the state a chunk at a time
// (walk), never holding the lock over all of it.
func (b *Broker) show(s *session) []*wire.Response {
	var out []*wire.Response
	cur := &wire.Response{}
	size := wire.ResponseSize(cur)
	b.entries(s.peer, b.mayAdmin(s.peer), nil, func(e wire.Entry) {
		if n := wire.EntrySize(&e); len(cur.Entries) > 0 && size+n > wire.MaxMessage {
			cur.Flags |= wire.More
			out = append(out, cur)
			cur, size = &wire.Response{}, wire.ResponseSize(cur)
		}
		cur.Entries = append(cur.Entries, e)
		size += wire.EntrySize(&e)
	})
	return append(out, cur)
}

// entries calls fn for every reservation, in protocol and port order,
// after a sweep (so bound ports are current). Tokens are included only
// where asker (nil: nobody) may use them: its own runtime reservations,
// and persistent ones if admin. If inUse is not nil it receives the
// sweep's read of the socket tables (nil entries if it failed).
func (b *Broker) entries(asker *peer, admin bool, inUse *[2]*enforce.PortSet, fn func(wire.Entry)) {
	t := b.sweep(true)
	if inUse != nil && t != nil {
		inUse[0], inUse[1] = t.ports[6], t.ports[17]
	}
	b.entriesAsSwept(t, asker, admin, fn)
}

// entriesAsSwept is entries without a sweep of its own: bound ports as
// the last sweep (t, if not nil) and the binds since left them.
func (b *Broker) entriesAsSwept(t *tables, asker *peer, admin bool, fn func(wire.Entry)) {
	b.walk(func(rv *resv) {
		if rv.pending {
			return
		}
		if rv.delegated && t != nil {
			b.noteDelegatedLocked(rv, t)
		}
		blk := rv.block()
		e := wire.Entry{Proto: uint8(rv.proto), Kind: rv.kind, Start: blk.Start, Count: blk.Count, Bound: rv.r.Bound()}
		switch rv.kind {
		case wire.KindRuntime:
			e.PID, e.UID, e.Command = rv.owner.pid, rv.owner.uid, rv.owner.cmd
			if rv.delegated {
				e.Flags |= wire.EntryDelegated
			}
			if !rv.orphaned.IsZero() {
				e.Flags |= wire.EntryRestored
			}
			if asker != nil && rv.owner.same(asker) {
				e.Flags |= wire.EntryMine
				e.Token = uint64(rv.r.Token)
			}
		case wire.KindPersistent:
			e.UID = rv.uid
			if asker != nil && admin {
				e.Token = uint64(rv.r.Token)
			}
		}
		fn(e)
	})
}
