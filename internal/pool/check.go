package pool

import (
	"errors"
	"fmt"
)

// Check verifies the pool's internal invariants and returns an error
// describing every violation found, or nil: reservations are valid,
// non-overlapping blocks with unique non-zero tokens, the indexes by token
// and by start agree, the port bitmap and its search tree match the
// reservations, and each reservation's bound-port count matches its
// bitmap. It costs O(65536 + n + total bound bitmap size) and is meant for
// tests and debugging, in the spirit of bbolt's Tx.Check.
func (p *Pool) Check() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("pool: check: "+format, args...))
	}
	if checkDynamic(p.dynLo, p.dynHi) != nil {
		bad("dynamic range %d-%d", p.dynLo, p.dynHi)
	}
	if p.cursor < p.dynLo || p.cursor > p.dynHi {
		bad("cursor %d outside dynamic range %d-%d", p.cursor, p.dynLo, p.dynHi)
	}
	if len(p.byStart) != len(p.byToken) {
		bad("%d reservations by start, %d by token", len(p.byStart), len(p.byToken))
	}
	var want occupancy
	want.init()
	prevEnd := 0
	n := 0
	for s := p.starts.nextSet(0); s >= 0; s = p.starts.nextSet(s + 1) {
		n++
		r := p.byStart[uint16(s)]
		if r == nil {
			bad("start bit %d without a reservation", s)
			continue
		}
		b := r.Block
		if err := b.Valid(); err != nil {
			bad("reservation %v: %v", r, err)
			continue
		}
		if int(b.Start) != s {
			bad("reservation %v indexed at start %d", r, s)
		}
		if int(b.Start) <= prevEnd {
			bad("reservation %v overlaps the previous one (ending at %d)", r, prevEnd)
		}
		prevEnd = b.End()
		if r.Token == 0 || p.byToken[r.Token] != r {
			bad("reservation %v not indexed by its token", r)
		}
		want.mark(int(b.Start), b.End(), true)
		if err := r.check(); err != nil {
			errs = append(errs, err)
		}
	}
	if n != len(p.byStart) {
		bad("%d start bits, %d reservations by start", n, len(p.byStart))
	}
	if want != p.occ {
		bad("port bitmap or search tree does not match the reservations")
	}
	if err := p.starts.check(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// check verifies a reservation's bound-port bookkeeping.
func (r *Reservation) check() error {
	n := 0
	for i := 0; i < int(r.Block.Count); i++ {
		if r.bound.test(i) {
			n++
		}
	}
	if n != r.nbound {
		return fmt.Errorf("pool: check: reservation %v: %d bound ports counted, %d recorded", r, n, r.nbound)
	}
	if r.next < 0 || (r.next >= int(r.Block.Count) && r.next != 0) {
		return fmt.Errorf("pool: check: reservation %v: next-fit offset %d", r, r.next)
	}
	return r.bound.check()
}

// check verifies the summary level and padding of a bitset.
func (b *bitset) check() error {
	for w, x := range b.words {
		if hasNonzero := b.nonzero[w>>6]&(1<<(w&63)) != 0; hasNonzero != (x != 0) {
			return fmt.Errorf("pool: check: bitset word %d: nonzero bit %v for %#x", w, hasNonzero, x)
		}
		if isFull := b.full[w>>6]&(1<<(w&63)) != 0; isFull != (x == ^uint64(0)) {
			return fmt.Errorf("pool: check: bitset word %d: full bit %v for %#x", w, isFull, x)
		}
	}
	if r := b.n % 64; r != 0 {
		if pad := ^uint64(0) << r; b.words[len(b.words)-1]&pad != pad {
			return fmt.Errorf("pool: check: bitset padding cleared")
		}
	}
	for k := range b.nonzero {
		// Summary bits past the last word must stay clear.
		if valid := len(b.words) - k*64; valid < 64 && (b.nonzero[k]|b.full[k])>>valid != 0 {
			return fmt.Errorf("pool: check: bitset summary bits past the end")
		}
	}
	return nil
}
