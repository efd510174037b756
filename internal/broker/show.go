package broker

import (
	"sort"

	"github.com/portres/portres/internal/wire"
)

// show lists every reservation. Tokens appear only where the asker may
// use them: its own runtime reservations, and persistent ones if it may
// consume persistent reservations. The answer is split into datagrams of
// at most wire.MaxMessage bytes.
func (b *Broker) show(s *session) []*wire.Response {
	b.sweep() // so "bound" is current
	b.noteDelegatedBinds()
	admin := b.mayAdmin(s.peer)
	b.mu.Lock()
	entries := make([]wire.Entry, 0, len(b.byToken))
	for _, rv := range b.byToken {
		if rv.pending {
			continue
		}
		blk := rv.block()
		e := wire.Entry{Proto: uint8(rv.proto), Kind: rv.kind, Start: blk.Start, Count: blk.Count, Bound: rv.r.Bound()}
		switch rv.kind {
		case wire.KindRuntime:
			e.PID, e.UID, e.Command = rv.owner.pid, rv.owner.uid, rv.owner.cmd
			if rv.delegated {
				e.Flags |= wire.EntryDelegated
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
		entries = append(entries, e)
	}
	b.mu.Unlock()
	sort.Slice(entries, func(i, j int) bool {
		if entries[i].Proto != entries[j].Proto {
			return entries[i].Proto < entries[j].Proto
		}
		return entries[i].Start < entries[j].Start
	})
	var out []*wire.Response
	cur := &wire.Response{}
	size := wire.ResponseSize(cur)
	for _, e := range entries {
		n := wire.EntrySize(&e)
		if len(cur.Entries) > 0 && size+n > wire.MaxMessage {
			cur.Flags |= wire.More
			out = append(out, cur)
			cur, size = &wire.Response{}, wire.ResponseSize(cur)
		}
		cur.Entries = append(cur.Entries, e)
		size += n
	}
	return append(out, cur)
}
