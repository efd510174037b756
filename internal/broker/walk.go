//go:build linux

package broker

import "github.com/portres/portres"

// walkChunk is how many reservations a walk visits per hold of b.mu.
const walkChunk = 128

// walk calls fn for every reservation, TCP then UDP, in port order,
// holding b.mu over at most walkChunk of them at a time: a request that
// needs the lock meanwhile waits for one chunk, never for the whole state.
// fn runs with b.mu held. Reservations made or removed during the walk
// may or may not be visited.
func (b *Broker) walk(fn func(rv *resv)) {
	for _, proto := range []portres.Proto{portres.TCP, portres.UDP} {
		for next := 0; next <= 65535; {
			b.mu.Lock()
			p := b.pools[proto]
			if p == nil {
				b.mu.Unlock()
				break
			}
			rs := p.After(uint16(next), walkChunk)
			for _, r := range rs {
				fn(r.Owner.(*resv))
			}
			b.mu.Unlock()
			if len(rs) < walkChunk {
				break
			}
			next = int(rs[len(rs)-1].Block.Start) + 1
		}
	}
}
