package pool

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	seedFlag  = flag.Uint64("pool.seed", 0, "seed for TestSimulation (0: pick seeds from the clock)")
	stepsFlag = flag.Int("pool.steps", 20000, "operations per seed in TestSimulation")
)

// model is the naive reference: one slot per port naming the reservation
// that covers it, and linear scans for everything.
type model struct {
	owner        [numPorts]*mres
	byTok        map[Token]*mres
	dynLo, dynHi int
	cursor       int
}

type mres struct {
	start, count int
	tok          Token
	bound        []bool
	next         int
}

func (m *model) end(r *mres) int { return r.start + r.count - 1 }

// fits reports whether ports s..s+count-1 are free and lie in [lo, hi].
func (m *model) fits(s, count, lo, hi int) bool {
	if s < lo || s+count-1 > hi {
		return false
	}
	for p := s; p < s+count; p++ {
		if m.owner[p] != nil {
			return false
		}
	}
	return true
}

func (m *model) findFree(count, lo, hi, from int) int {
	if count == 0 || lo == 0 || lo > hi {
		return -1
	}
	if from < lo || from > hi {
		from = lo
	}
	for s := from; s <= hi; s++ {
		if m.fits(s, count, lo, hi) {
			return s
		}
	}
	for s := lo; s < from; s++ {
		if m.fits(s, count, lo, hi) {
			return s
		}
	}
	return -1
}

func (m *model) add(start, count int, tok Token) *mres {
	r := &mres{start: start, count: count, tok: tok, bound: make([]bool, count)}
	for p := start; p < start+count; p++ {
		m.owner[p] = r
	}
	m.byTok[tok] = r
	return r
}

func (m *model) remove(r *mres) {
	for p := r.start; p < r.start+r.count; p++ {
		m.owner[p] = nil
	}
	delete(m.byTok, r.tok)
}

func (m *model) sorted() []*mres {
	var out []*mres
	for p := 1; p < numPorts; p++ {
		if r := m.owner[p]; r != nil && r.start == p {
			out = append(out, r)
		}
	}
	return out
}

// TestSimulation runs random operations on a Pool and on the naive model
// and compares every result, in the style of bbolt's simulation test.
// Replay a failure with -pool.seed=N.
func TestSimulation(t *testing.T) {
	seeds := []uint64{*seedFlag}
	if *seedFlag == 0 {
		now := uint64(time.Now().UnixNano())
		seeds = []uint64{now, now + 1, now + 2}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Logf("seed %d (replay with -pool.seed=%d)", seed, seed)
			simulate(t, seed, *stepsFlag)
		})
	}
}

func simulate(t *testing.T, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	// Work in a window of the port space so that operations collide;
	// the window sometimes touches port 1 or port 65535.
	span := 500 + rng.IntN(4000)
	var base int
	switch rng.IntN(3) {
	case 0:
		base = 1
	case 1:
		base = numPorts - span
	default:
		base = 1 + rng.IntN(numPorts-span)
	}
	top := base + span - 1
	randPort := func() int { return base + rng.IntN(span) }
	randDyn := func() (int, int) {
		lo := randPort()
		return lo, lo + rng.IntN(top-lo+1)
	}
	randCount := func() int {
		switch rng.IntN(20) {
		case 0:
			return rng.IntN(numPorts) // huge, or 0
		case 1, 2:
			return 1 + rng.IntN(300)
		}
		return 1 + rng.IntN(20)
	}

	lo, hi := randDyn()
	p, err := New(uint16(lo), uint16(hi))
	if err != nil {
		t.Fatal(err)
	}
	m := &model{byTok: map[Token]*mres{}, dynLo: lo, dynHi: hi, cursor: lo}
	pick := func() *mres { // a random live reservation, or nil
		if len(m.byTok) == 0 {
			return nil
		}
		r := m.owner[randPort()]
		if r == nil {
			for _, r = range m.byTok { // random enough: map order
				break
			}
		}
		return r
	}
	fail := func(step int, format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d step %d: %s", seed, step, fmt.Sprintf(format, args...))
	}
	stats := map[string]int{} // outcomes, logged at the end
	wantErr := func(step int, what string, err, want error) {
		t.Helper()
		name, _, _ := strings.Cut(what, "(")
		if want == nil {
			stats[name+" ok"]++
		} else {
			stats[name+" "+want.Error()]++
		}
		if want == nil && err != nil || want != nil && !errors.Is(err, want) {
			fail(step, "%s: error %v, want %v", what, err, want)
		}
	}

	for step := range steps {
		switch op := rng.IntN(100); {
		case op < 25: // reserve a specific block
			start, count := randPort(), randCount()
			if rng.IntN(50) == 0 {
				start = 1
			}
			tok := Token(0)
			if rng.IntN(10) == 0 {
				tok = Token(1 + rng.IntN(50)) // small: collides now and then
			}
			what := fmt.Sprintf("Reserve(%d+%d, %d)", start, count, tok)
			r, err := p.Reserve(Block{uint16(start), uint16(count)}, tok, step)
			var want error
			var with *mres
			switch {
			case count == 0 || start+count-1 > MaxPort:
				want = ErrInvalid
			case tok != 0 && m.byTok[tok] != nil:
				want = ErrInvalid
			default:
				for q := start; q < start+count; q++ {
					if with = m.owner[q]; with != nil {
						want = ErrOverlap
						break
					}
				}
			}
			wantErr(step, what, err, want)
			if want == ErrOverlap {
				var oe *OverlapError
				if !errors.As(err, &oe) || oe.With.Token != with.tok || oe.Block != (Block{uint16(start), uint16(count)}) {
					fail(step, "%s: %v, want overlap with %d+%d", what, err, with.start, with.count)
				}
			}
			if want != nil {
				continue
			}
			if r.Block != (Block{uint16(start), uint16(count)}) || r.Owner != step || tok != 0 && r.Token != tok {
				fail(step, "%s = %v", what, r)
			}
			m.add(start, count, r.Token)

		case op < 45: // reserve a wildcard block
			count := randCount()
			if rng.IntN(2) == 0 {
				count = 1 + rng.IntN(8)
			}
			what := fmt.Sprintf("Reserve(0+%d)", count)
			r, err := p.Reserve(Block{0, uint16(count)}, 0, nil)
			s := m.findFree(count, m.dynLo, m.dynHi, m.cursor)
			switch {
			case count == 0:
				wantErr(step, what, err, ErrInvalid)
			case s < 0:
				wantErr(step, what, err, ErrNoSpace)
			default:
				wantErr(step, what, err, nil)
				if int(r.Block.Start) != s || int(r.Block.Count) != count {
					fail(step, "%s placed at %v, model says %d (dynamic %d-%d, cursor %d)", what, r.Block, s, m.dynLo, m.dynHi, m.cursor)
				}
				if int(r.Block.Start) < m.dynLo || r.Block.End() > m.dynHi {
					fail(step, "%s = %v outside dynamic range %d-%d", what, r.Block, m.dynLo, m.dynHi)
				}
				m.add(s, count, r.Token)
				if m.cursor = s + count; m.cursor > m.dynHi {
					m.cursor = m.dynLo
				}
			}

		case op < 60: // release
			mr := pick()
			tok := Token(rng.Uint64())
			if mr != nil && rng.IntN(10) != 0 {
				tok = mr.tok
			} else {
				mr = m.byTok[tok]
			}
			r, err := p.Release(tok)
			if mr == nil {
				wantErr(step, "Release", err, ErrNotFound)
				continue
			}
			wantErr(step, "Release", err, nil)
			if r.Token != tok || int(r.Block.Start) != mr.start {
				fail(step, "Release(%#x) = %v", tok, r)
			}
			m.remove(mr)

		case op < 90: // take 0, take p, put p
			mr := pick()
			if mr == nil {
				continue
			}
			r := p.Get(mr.tok)
			if r == nil {
				fail(step, "Get(%#x) = nil", mr.tok)
			}
			port := mr.start + rng.IntN(mr.count+2) - 1 // sometimes just outside
			switch rng.IntN(3) {
			case 0:
				got, err := r.Take(0)
				want := -1
				for i := range mr.count {
					if j := (mr.next + i) % mr.count; !mr.bound[j] {
						want = j
						break
					}
				}
				if want < 0 {
					wantErr(step, "Take(0)", err, ErrExhausted)
					continue
				}
				wantErr(step, "Take(0)", err, nil)
				if int(got) != mr.start+want {
					fail(step, "Take(0) on %v = %d, want %d", r.Block, got, mr.start+want)
				}
				mr.bound[want] = true
				mr.next = (want + 1) % mr.count
			case 1:
				if uint16(port) == 0 { // 0 or 65536: that would be Take(0)
					port = mr.start
				}
				got, err := r.Take(uint16(port))
				switch {
				case port < mr.start || port > m.end(mr):
					wantErr(step, "Take(p)", err, ErrOutside)
				case mr.bound[port-mr.start]:
					wantErr(step, "Take(p)", err, ErrBound)
				default:
					wantErr(step, "Take(p)", err, nil)
					if int(got) != port {
						fail(step, "Take(%d) = %d", port, got)
					}
					mr.bound[port-mr.start] = true
				}
			default:
				err := r.Put(uint16(port))
				switch {
				case uint16(port) == 0: // 0 or 65536
					wantErr(step, "Put(0)", err, ErrInvalid)
				case port < mr.start || port > m.end(mr):
					wantErr(step, "Put(p)", err, ErrOutside)
				case !mr.bound[port-mr.start]:
					wantErr(step, "Put(p)", err, ErrInvalid)
				default:
					wantErr(step, "Put(p)", err, nil)
					mr.bound[port-mr.start] = false
				}
			}

		case op < 93: // set the dynamic range
			lo, hi := randDyn()
			if rng.IntN(10) == 0 {
				lo, hi = hi+1, lo // invalid (or 1 port when equal+1... keep it simple)
			}
			err := p.SetDynamic(uint16(lo), uint16(hi))
			if lo == 0 || lo > hi {
				wantErr(step, "SetDynamic", err, ErrInvalid)
				continue
			}
			wantErr(step, "SetDynamic", err, nil)
			m.dynLo, m.dynHi = lo, hi
			if m.cursor < lo || m.cursor > hi {
				m.cursor = lo
			}

		default: // read-only queries
			count := randCount()
			qlo, qhi := randDyn()
			from := randPort()
			s, ok := p.FindFree(uint16(count), uint16(qlo), uint16(qhi), uint16(from))
			if want := m.findFree(count, qlo, qhi, from); ok != (want >= 0) || ok && int(s) != want {
				fail(step, "FindFree(%d, %d, %d, %d) = %d, %v; want %d", count, qlo, qhi, from, s, ok, want)
			}
			port := randPort()
			if got, want := p.Find(uint16(port)), m.owner[port]; (got == nil) != (want == nil) || got != nil && got.Token != want.tok {
				fail(step, "Find(%d) = %v, want %v", port, got, want)
			}
			b := Block{uint16(port), uint16(randCount())}
			var wantToks []Token
			for q := port; q <= min(b.End(), MaxPort); q++ {
				if r := m.owner[q]; r != nil && (len(wantToks) == 0 || wantToks[len(wantToks)-1] != r.tok) {
					wantToks = append(wantToks, r.tok)
				}
			}
			var gotToks []Token
			for _, r := range p.Overlapping(b) {
				gotToks = append(gotToks, r.Token)
			}
			if !slices.Equal(gotToks, wantToks) {
				fail(step, "Overlapping(%v) = %x, want %x", b, gotToks, wantToks)
			}
		}

		if step%500 == 0 || step == steps-1 {
			compare(t, seed, step, p, m)
		}
	}
	t.Logf("window %d-%d, %d reservations at the end; outcomes: %v", base, top, p.Len(), stats)
}

// compare checks the invariants and the whole state against the model.
func compare(t *testing.T, seed uint64, step int, p *Pool, m *model) {
	t.Helper()
	if err := p.Check(); err != nil {
		t.Fatalf("seed %d step %d: %v", seed, step, err)
	}
	all, want := p.All(), m.sorted()
	if len(all) != len(want) || p.Len() != len(want) {
		t.Fatalf("seed %d step %d: %d reservations (Len %d), model has %d", seed, step, len(all), p.Len(), len(want))
	}
	toks := map[Token]bool{}
	for i, r := range all {
		mr := want[i]
		if r.Token == 0 || toks[r.Token] {
			t.Fatalf("seed %d step %d: token %#x zero or repeated", seed, step, r.Token)
		}
		toks[r.Token] = true
		if i > 0 && r.Block.Overlaps(all[i-1].Block) {
			t.Fatalf("seed %d step %d: %v overlaps %v", seed, step, r, all[i-1])
		}
		if r.Token != mr.tok || int(r.Block.Start) != mr.start || int(r.Block.Count) != mr.count {
			t.Fatalf("seed %d step %d: reservation %v, model %d+%d %#x", seed, step, r, mr.start, mr.count, mr.tok)
		}
		var bound []uint16
		for j, b := range mr.bound {
			if b {
				bound = append(bound, uint16(mr.start+j))
			}
		}
		if got := r.Bound(); !slices.Equal(got, bound) || r.NumBound() != len(bound) || r.Free() != mr.count-len(bound) {
			t.Fatalf("seed %d step %d: %v bound %v, model %v", seed, step, r, got, bound)
		}
	}
	if lo, hi := p.Dynamic(); int(lo) != m.dynLo || int(hi) != m.dynHi || int(p.cursor) != m.cursor {
		t.Fatalf("seed %d step %d: dynamic %d-%d cursor %d, model %d-%d cursor %d", seed, step, lo, hi, p.cursor, m.dynLo, m.dynHi, m.cursor)
	}
}
