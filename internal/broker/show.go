package broker

import (
	"github.com/portres/portres/internal/wire"
)

// show lists every reservation, in protocol and port order. Tokens appear
// only where the asker may use them: its own runtime reservations, and
// persistent ones if it may consume persistent reservations. The answer
// is split into datagrams of at most wire.MaxMessage bytes. It sweeps
// first, so "bound" is current, and reads the state a chunk at a time
// (walk), never holding the lock over all of it.
func (b *Broker) show(s *session) []*wire.Response {
	t := b.sweep(true)
	admin := b.mayAdmin(s.peer)
	var out []*wire.Response
	cur := &wire.Response{}
	size := wire.ResponseSize(cur)
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
			if rv.owner.same(s.peer) {
				e.Flags |= wire.EntryMine
				e.Token = uint64(rv.r.Token)
			}
		case wire.KindPersistent:
			e.UID = rv.uid
			if admin {
				e.Token = uint64(rv.r.Token)
			}
		}
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
