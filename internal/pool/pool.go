package pool

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
)

// Pool is one protocol's port space, ports 1..65535, and the reservations
// carved out of it. Create it with New. It is not safe for concurrent use:
// the broker locks around it.
type Pool struct {
	dynLo, dynHi uint16
	cursor       uint16 // next-fit position for wildcard placement

	occ     occupancy // ports covered by some reservation; port 0 always set
	starts  bitset    // bit p: a reservation starts at port p
	byStart map[uint16]*Reservation
	byToken map[Token]*Reservation

	rnd  [256]byte // buffered crypto/rand output for tokens
	nrnd int       // bytes of rnd already used
}

// New returns an empty pool whose dynamic (ephemeral) range, where wildcard
// blocks are placed, is [dynLo, dynHi]. It returns an error wrapping
// ErrInvalid if dynLo is 0 or dynLo > dynHi.
//
// The pool applies no policy to the range beyond that (Windows demands at
// least 255 ports starting at 1025 or above; that check is the caller's).
func New(dynLo, dynHi uint16) (*Pool, error) {
	if err := checkDynamic(dynLo, dynHi); err != nil {
		return nil, err
	}
	p := &Pool{
		dynLo:   dynLo,
		dynHi:   dynHi,
		cursor:  dynLo,
		starts:  makeBitset(numPorts, nil),
		byStart: make(map[uint16]*Reservation),
		byToken: make(map[Token]*Reservation),
		nrnd:    len(Pool{}.rnd),
	}
	p.occ.init()
	return p, nil
}

func checkDynamic(lo, hi uint16) error {
	if lo == 0 || lo > hi {
		return fmt.Errorf("pool: dynamic port range %d-%d: %w", lo, hi, ErrInvalid)
	}
	return nil
}

// Dynamic returns the dynamic port range, inclusive.
func (p *Pool) Dynamic() (lo, hi uint16) { return p.dynLo, p.dynHi }

// SetDynamic changes the dynamic port range to [lo, hi]. It only affects
// where future wildcard blocks are placed: existing reservations stay
// where they are, inside the range or not. It returns an error wrapping
// ErrInvalid if lo is 0 or lo > hi.
func (p *Pool) SetDynamic(lo, hi uint16) error {
	if err := checkDynamic(lo, hi); err != nil {
		return err
	}
	p.dynLo, p.dynHi = lo, hi
	if p.cursor < lo || p.cursor > hi {
		p.cursor = lo
	}
	return nil
}

// Reserve records a reservation of block b with token tok on behalf of
// owner, and returns it.
//
// If b.Start != 0 the block is taken as given. If b.Start == 0 (wildcard)
// the pool places a block of b.Count ports inside the dynamic range,
// next-fit: it takes the first free block starting at or after a cursor
// that moves past every wildcard block placed, wrapping around to the
// bottom of the range once. Released ports are thus not handed out again
// until the rest of the range has been, and placement stays predictable
// (the lowest fitting block above the cursor).
//
// If tok is 0 the pool draws a fresh random non-zero token, unique in the
// pool, from crypto/rand; otherwise it uses tok (persistent reservations
// keep their token across restarts).
//
// Returns an error wrapping ErrInvalid if b.Count is 0, a specific block
// runs past port 65535, or tok is already in use; ErrNoSpace if no
// wildcard block of that size fits in the dynamic range; and an
// *OverlapError (wrapping ErrOverlap) naming the lowest reservation that
// overlaps a specific block.
func (p *Pool) Reserve(b Block, tok Token, owner any) (*Reservation, error) {
	wildcard := b.Start == 0
	if wildcard {
		if b.Count == 0 {
			return nil, fmt.Errorf("pool: wildcard block of 0 ports: %w", ErrInvalid)
		}
	} else if err := b.Valid(); err != nil {
		return nil, err
	}
	if tok != 0 && p.byToken[tok] != nil {
		return nil, fmt.Errorf("pool: token %#x already in use: %w", uint64(tok), ErrInvalid)
	}
	if wildcard {
		s, ok := p.FindFree(b.Count, p.dynLo, p.dynHi, p.cursor)
		if !ok {
			return nil, fmt.Errorf("pool: %d ports in dynamic range %d-%d: %w", b.Count, p.dynLo, p.dynHi, ErrNoSpace)
		}
		b.Start = s
	} else if r := p.firstOverlap(b); r != nil {
		return nil, &OverlapError{Block: b, With: r}
	}
	if tok == 0 {
		tok = p.newToken()
	}
	r := newReservation(b, tok, owner)
	p.occ.mark(int(b.Start), b.End(), true)
	p.starts.set(int(b.Start))
	p.byStart[b.Start] = r
	p.byToken[tok] = r
	if wildcard {
		if next := b.End() + 1; next <= int(p.dynHi) {
			p.cursor = uint16(next)
		} else {
			p.cursor = p.dynLo
		}
	}
	return r, nil
}

// firstOverlap returns the lowest reservation overlapping b, or nil.
func (p *Pool) firstOverlap(b Block) *Reservation {
	if r := p.Find(b.Start); r != nil {
		return r
	}
	if s := p.starts.nextSet(int(b.Start) + 1); s >= 0 && s <= b.End() {
		return p.byStart[uint16(s)]
	}
	return nil
}

// newToken returns a random non-zero token not used in the pool.
func (p *Pool) newToken() Token {
	for {
		if p.nrnd+8 > len(p.rnd) {
			_, _ = rand.Read(p.rnd[:]) // never fails (crypto/rand, Go >= 1.24)
			p.nrnd = 0
		}
		t := Token(binary.LittleEndian.Uint64(p.rnd[p.nrnd:]))
		p.nrnd += 8
		if t != 0 && p.byToken[t] == nil {
			return t
		}
	}
}

// FindFree returns the start of a free block of count ports lying inside
// [lo, hi], searching from `from` upward and then wrapping around to lo
// once: the lowest fitting start >= from if there is one, else the lowest
// fitting start >= lo. A `from` outside [lo, hi] means lo. It reports
// ok == false if no block fits, or if count is 0, lo is 0 or lo > hi. It
// does not reserve anything.
//
// The broker uses it to retry a wildcard placement past a port that a
// foreign process turned out to be using: FindFree, then Reserve of the
// specific block found.
func (p *Pool) FindFree(count uint16, lo, hi, from uint16) (start uint16, ok bool) {
	if count == 0 || lo == 0 || lo > hi {
		return 0, false
	}
	if from < lo || from > hi {
		from = lo
	}
	s := p.occ.findRun(int(count), int(from), int(hi))
	if s < 0 && from > lo {
		s = p.occ.findRun(int(count), int(lo), int(hi))
	}
	if s < 0 {
		return 0, false
	}
	return uint16(s), true
}

// Release removes the reservation with token tok and returns it, with its
// bound ports as they were. It returns an error wrapping ErrNotFound if no
// reservation has that token (token 0 included).
func (p *Pool) Release(tok Token) (*Reservation, error) {
	r := p.byToken[tok]
	if r == nil {
		return nil, fmt.Errorf("pool: token %#x: %w", uint64(tok), ErrNotFound)
	}
	delete(p.byToken, tok)
	delete(p.byStart, r.Block.Start)
	p.starts.clear(int(r.Block.Start))
	p.occ.mark(int(r.Block.Start), r.Block.End(), false)
	return r, nil
}

// Get returns the reservation with token tok, or nil.
func (p *Pool) Get(tok Token) *Reservation { return p.byToken[tok] }

// Find returns the reservation whose block contains port, or nil.
func (p *Pool) Find(port uint16) *Reservation {
	if port == 0 || !p.occ.test(int(port)) {
		return nil
	}
	s := p.starts.prevSet(int(port))
	if s < 0 {
		return nil
	}
	if r := p.byStart[uint16(s)]; r != nil && r.Block.Contains(port) {
		return r
	}
	return nil
}

// Overlapping returns every reservation that overlaps b, in ascending
// order of Start (nil if none).
func (p *Pool) Overlapping(b Block) []*Reservation {
	if b.Count == 0 {
		return nil
	}
	var out []*Reservation
	if r := p.Find(b.Start); r != nil {
		out = append(out, r)
	}
	end := min(b.End(), MaxPort)
	for s := p.starts.nextSet(int(b.Start) + 1); s >= 0 && s <= end; s = p.starts.nextSet(s + 1) {
		out = append(out, p.byStart[uint16(s)])
	}
	return out
}

// All returns every reservation in ascending order of Start.
func (p *Pool) All() []*Reservation {
	out := make([]*Reservation, 0, len(p.byToken))
	for s := p.starts.nextSet(0); s >= 0; s = p.starts.nextSet(s + 1) {
		out = append(out, p.byStart[uint16(s)])
	}
	return out
}

// After returns at most max reservations whose block starts at port or
// above, in ascending order of Start: a cursor for walking the pool a
// little at a time (the next call starts past the last one returned).
func (p *Pool) After(port uint16, max int) []*Reservation {
	var out []*Reservation
	for s := p.starts.nextSet(int(port)); s >= 0 && len(out) < max; s = p.starts.nextSet(s + 1) {
		out = append(out, p.byStart[uint16(s)])
	}
	return out
}

// Len returns the number of reservations.
func (p *Pool) Len() int { return len(p.byToken) }
