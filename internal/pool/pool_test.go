package pool

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// newPool returns a pool with the given dynamic range that is checked
// with Pool.Check when the test ends.
func newPool(t testing.TB, lo, hi uint16) *Pool {
	t.Helper()
	p, err := New(lo, hi)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Check(); err != nil {
			t.Error(err)
		}
	})
	return p
}

func mustReserve(t testing.TB, p *Pool, b Block) *Reservation {
	t.Helper()
	r, err := p.Reserve(b, 0, nil)
	if err != nil {
		t.Fatalf("Reserve(%v): %v", b, err)
	}
	return r
}

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		lo, hi uint16
		ok     bool
	}{
		{49152, 65535, true},
		{1, 65535, true},
		{100, 100, true},
		{0, 100, false},
		{0, 0, false},
		{200, 100, false},
	} {
		p, err := New(tc.lo, tc.hi)
		if tc.ok != (err == nil) || err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("New(%d, %d) = %v, want ok %v", tc.lo, tc.hi, err, tc.ok)
			continue
		}
		if err != nil {
			continue
		}
		if lo, hi := p.Dynamic(); lo != tc.lo || hi != tc.hi {
			t.Errorf("Dynamic() = %d, %d", lo, hi)
		}
		if err := p.SetDynamic(0, 5); !errors.Is(err, ErrInvalid) {
			t.Errorf("SetDynamic(0, 5) = %v", err)
		}
		if err := p.SetDynamic(6, 5); !errors.Is(err, ErrInvalid) {
			t.Errorf("SetDynamic(6, 5) = %v", err)
		}
		if lo, hi := p.Dynamic(); lo != tc.lo || hi != tc.hi {
			t.Errorf("failed SetDynamic changed the range to %d-%d", lo, hi)
		}
		if err := p.Check(); err != nil {
			t.Error(err)
		}
	}
}

// TestReserveErrors has one case per error Reserve can return.
func TestReserveErrors(t *testing.T) {
	p := newPool(t, 40000, 40009)
	existing, err := p.Reserve(Block{1000, 10}, 42, "alice")
	if err != nil {
		t.Fatal(err)
	}
	mustReserve(t, p, Block{1020, 5})
	for _, tc := range []struct {
		name string
		b    Block
		tok  Token
		want error
	}{
		{"zero count", Block{5000, 0}, 0, ErrInvalid},
		{"zero count wildcard", Block{0, 0}, 0, ErrInvalid},
		{"past 65535", Block{65535, 2}, 0, ErrInvalid},
		{"count 65535 from 2", Block{2, 65535}, 0, ErrInvalid},
		{"token in use", Block{5000, 1}, 42, ErrInvalid},
		{"overlap same", Block{1000, 10}, 0, ErrOverlap},
		{"overlap start", Block{995, 6}, 0, ErrOverlap},
		{"overlap end", Block{1009, 6}, 0, ErrOverlap},
		{"overlap inside", Block{1003, 1}, 0, ErrOverlap},
		{"overlap around", Block{900, 200}, 0, ErrOverlap},
		{"whole space", Block{1, 65535}, 0, ErrOverlap},
		{"wildcard too big", Block{0, 11}, 0, ErrNoSpace},
		{"wildcard max", Block{0, 65535}, 0, ErrNoSpace},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := p.Reserve(tc.b, tc.tok, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Reserve(%v, %d) = %v, %v; want %v", tc.b, tc.tok, r, err, tc.want)
			}
			if r != nil {
				t.Fatalf("Reserve returned a reservation with error %v", err)
			}
			if tc.want == ErrOverlap {
				var oe *OverlapError
				if !errors.As(err, &oe) {
					t.Fatalf("error %T is not an *OverlapError", err)
				}
				if oe.With != existing || oe.Block != tc.b {
					t.Fatalf("OverlapError{%v, %v}, want block %v with %v", oe.Block, oe.With, tc.b, existing)
				}
				if !strings.Contains(err.Error(), "1000-1009") || !strings.Contains(err.Error(), "0x2a") {
					t.Errorf("message %q should name the reservation in the way", err)
				}
			}
		})
	}
	if p.Len() != 2 {
		t.Errorf("Len() = %d after failed reserves", p.Len())
	}
	if _, err := p.Release(0); !errors.Is(err, ErrNotFound) {
		t.Errorf("Release(0) = %v", err)
	}
	if _, err := p.Release(43); !errors.Is(err, ErrNotFound) {
		t.Errorf("Release(43) = %v", err)
	}
}

func TestReserveEdges(t *testing.T) {
	p := newPool(t, 1, 65535)
	whole := mustReserve(t, p, Block{1, 65535})
	if got := p.Find(65535); got != whole {
		t.Errorf("Find(65535) = %v", got)
	}
	if got := p.Find(1); got != whole {
		t.Errorf("Find(1) = %v", got)
	}
	if got := p.Find(0); got != nil {
		t.Errorf("Find(0) = %v", got)
	}
	if _, err := p.Reserve(Block{0, 1}, 0, nil); !errors.Is(err, ErrNoSpace) {
		t.Errorf("wildcard in a full pool: %v", err)
	}
	if _, ok := p.FindFree(1, 1, 65535, 1); ok {
		t.Error("FindFree in a full pool succeeded")
	}
	if _, err := p.Release(whole.Token); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Release(whole.Token); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Release: %v", err)
	}

	last := mustReserve(t, p, Block{65535, 1})
	if got := p.Overlapping(Block{65000, 1000}); !slices.Equal(got, []*Reservation{last}) {
		t.Errorf("Overlapping past the top = %v", got)
	}
	w := mustReserve(t, p, Block{0, 65534})
	if w.Block != (Block{1, 65534}) {
		t.Errorf("wildcard of 65534 ports placed at %v", w.Block)
	}
	if got := p.All(); !slices.Equal(got, []*Reservation{w, last}) {
		t.Errorf("All() = %v", got)
	}
}

func TestWildcardNextFit(t *testing.T) {
	p := newPool(t, 100, 119)
	a := mustReserve(t, p, Block{0, 5})
	b := mustReserve(t, p, Block{0, 5})
	if a.Block != (Block{100, 5}) || b.Block != (Block{105, 5}) {
		t.Fatalf("placed %v, %v", a.Block, b.Block)
	}
	// Releasing a does not make the next wildcard reuse its ports.
	if _, err := p.Release(a.Token); err != nil {
		t.Fatal(err)
	}
	c := mustReserve(t, p, Block{0, 5})
	if c.Block != (Block{110, 5}) {
		t.Fatalf("placed %v, want 110-114", c.Block)
	}
	d := mustReserve(t, p, Block{0, 5}) // ends at the top of the range
	if d.Block != (Block{115, 5}) {
		t.Fatalf("placed %v, want 115-119", d.Block)
	}
	// The cursor wrapped: a's old ports are next.
	e := mustReserve(t, p, Block{0, 3})
	if e.Block != (Block{100, 3}) {
		t.Fatalf("placed %v, want 100-102", e.Block)
	}
	// A block that does not fit above the cursor wraps around.
	if _, err := p.Reserve(Block{0, 3}, 0, nil); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("3 ports with 2 free: %v", err)
	}
	f := mustReserve(t, p, Block{0, 2})
	if f.Block != (Block{103, 2}) {
		t.Fatalf("placed %v, want 103-104", f.Block)
	}
	// Specific blocks may lie anywhere, and the dynamic range can move.
	mustReserve(t, p, Block{50, 10})
	if err := p.SetDynamic(55, 70); err != nil {
		t.Fatal(err)
	}
	g := mustReserve(t, p, Block{0, 10})
	if g.Block != (Block{60, 10}) {
		t.Fatalf("placed %v, want 60-69", g.Block)
	}
}

func TestFindFree(t *testing.T) {
	p := newPool(t, 1000, 2000)
	mustReserve(t, p, Block{1000, 10})
	mustReserve(t, p, Block{1015, 10})
	for _, tc := range []struct {
		count, lo, hi, from uint16
		want                int // -1: none
	}{
		{5, 1000, 2000, 1000, 1010},
		{6, 1000, 2000, 1000, 1025},
		{5, 1000, 2000, 1011, 1025}, // 1011-1014 is too short
		{5, 1000, 1029, 1026, 1010}, // wraps around
		{5, 1000, 1029, 0, 1010},    // from outside means lo
		{5, 1000, 1029, 3000, 1010},
		{5, 1000, 1014, 1000, 1010},
		{5, 1000, 1013, 1000, -1}, // block would pass hi
		{1, 1005, 1005, 1005, -1},
		{1, 1012, 1012, 1, 1012},
		{0, 1, 100, 1, -1},
		{1, 0, 100, 1, -1},
		{1, 100, 99, 1, -1},
		{1, 65535, 65535, 65535, 65535},
		{2, 65534, 65535, 65534, 65534},
		{65535, 1, 65535, 1, -1},
	} {
		s, ok := p.FindFree(tc.count, tc.lo, tc.hi, tc.from)
		got := int(s)
		if !ok {
			got = -1
		}
		if got != tc.want || !ok && s != 0 {
			t.Errorf("FindFree(%d, %d, %d, %d) = %d, %v; want %d", tc.count, tc.lo, tc.hi, tc.from, s, ok, tc.want)
		}
	}
	if p.Len() != 2 {
		t.Errorf("FindFree reserved something")
	}
}

func TestLookups(t *testing.T) {
	p := newPool(t, 49152, 65535)
	a := mustReserve(t, p, Block{100, 10})
	b := mustReserve(t, p, Block{110, 1})
	c := mustReserve(t, p, Block{200, 50})
	for _, tc := range []struct {
		port uint16
		want *Reservation
	}{
		{99, nil}, {100, a}, {109, a}, {110, b}, {111, nil}, {199, nil}, {200, c}, {249, c}, {250, nil},
	} {
		if got := p.Find(tc.port); got != tc.want {
			t.Errorf("Find(%d) = %v, want %v", tc.port, got, tc.want)
		}
	}
	for _, tc := range []struct {
		b    Block
		want []*Reservation
	}{
		{Block{1, 99}, nil},
		{Block{1, 100}, []*Reservation{a}},
		{Block{105, 100}, []*Reservation{a, b, c}},
		{Block{110, 91}, []*Reservation{b, c}},
		{Block{111, 89}, nil},
		{Block{249, 10000}, []*Reservation{c}},
		{Block{100, 0}, nil},
	} {
		if got := p.Overlapping(tc.b); !slices.Equal(got, tc.want) {
			t.Errorf("Overlapping(%v) = %v, want %v", tc.b, got, tc.want)
		}
	}
	if got := p.All(); !slices.Equal(got, []*Reservation{a, b, c}) {
		t.Errorf("All() = %v", got)
	}
	for _, tc := range []struct {
		port uint16
		max  int
		want []*Reservation
	}{
		{0, 10, []*Reservation{a, b, c}},
		{0, 2, []*Reservation{a, b}},
		{a.Block.Start + 1, 10, []*Reservation{b, c}},
		{c.Block.Start, 1, []*Reservation{c}},
		{c.Block.Start + 1, 10, nil},
	} {
		if got := p.After(tc.port, tc.max); !slices.Equal(got, tc.want) {
			t.Errorf("After(%d, %d) = %v, want %v", tc.port, tc.max, got, tc.want)
		}
	}
	if p.Get(b.Token) != b || p.Get(0) != nil || p.Len() != 3 {
		t.Error("Get or Len wrong")
	}
	if r, err := p.Release(b.Token); err != nil || r != b {
		t.Fatalf("Release = %v, %v", r, err)
	}
	if p.Get(b.Token) != nil || p.Find(110) != nil || p.Len() != 2 {
		t.Error("released reservation still visible")
	}
}

func TestTokens(t *testing.T) {
	p := newPool(t, 1, 65535)
	seen := map[Token]bool{}
	for range 2000 {
		r := mustReserve(t, p, Block{0, 1})
		if r.Token == 0 || seen[r.Token] {
			t.Fatalf("token %#x zero or repeated", r.Token)
		}
		seen[r.Token] = true
	}
	// A chosen token is kept, and can be reused once released.
	r, err := p.Reserve(Block{0, 1}, 0xfeed, "persistent")
	if err != nil || r.Token != 0xfeed || r.Owner != "persistent" {
		t.Fatalf("Reserve with token: %v, %v", r, err)
	}
	if _, err := p.Release(0xfeed); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Reserve(Block{0, 1}, 0xfeed, nil); err != nil {
		t.Fatal(err)
	}
}
