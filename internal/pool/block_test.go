package pool

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestBlock(t *testing.T) {
	for _, tc := range []struct {
		b     Block
		end   int
		str   string
		valid bool
	}{
		{Block{40000, 10}, 40009, "40000-40009", true},
		{Block{40000, 1}, 40000, "40000", true},
		{Block{65535, 1}, 65535, "65535", true},
		{Block{1, 65535}, 65535, "1-65535", true},
		{Block{65535, 2}, 65536, "65535-65536", false},
		{Block{2, 65535}, 65536, "2-65536", false},
		{Block{0, 5}, 4, "0-4", false},
		{Block{100, 0}, 99, "100+0", false},
	} {
		if got := tc.b.End(); got != tc.end {
			t.Errorf("%#v.End() = %d, want %d", tc.b, got, tc.end)
		}
		if got := tc.b.String(); got != tc.str {
			t.Errorf("%#v.String() = %q, want %q", tc.b, got, tc.str)
		}
		err := tc.b.Valid()
		if (err == nil) != tc.valid || err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("%#v.Valid() = %v, want valid %v", tc.b, err, tc.valid)
		}
	}
}

func TestBlockContains(t *testing.T) {
	for _, tc := range []struct {
		b    Block
		port uint16
		want bool
	}{
		{Block{10, 5}, 9, false},
		{Block{10, 5}, 10, true},
		{Block{10, 5}, 14, true},
		{Block{10, 5}, 15, false},
		{Block{65535, 1}, 65535, true},
		{Block{65530, 6}, 65535, true},
		{Block{1, 65535}, 65535, true},
		{Block{1, 65535}, 0, false},
		{Block{10, 0}, 10, false},
		{Block{10, 0}, 9, false},
	} {
		if got := tc.b.Contains(tc.port); got != tc.want {
			t.Errorf("%v.Contains(%d) = %v, want %v", tc.b, tc.port, got, tc.want)
		}
	}
}

func TestBlockOverlaps(t *testing.T) {
	for _, tc := range []struct {
		a, b Block
		want bool
	}{
		{Block{10, 5}, Block{15, 5}, false}, // adjacent
		{Block{10, 5}, Block{14, 5}, true},
		{Block{10, 5}, Block{5, 5}, false},
		{Block{10, 5}, Block{5, 6}, true},
		{Block{10, 5}, Block{11, 1}, true}, // inside
		{Block{11, 1}, Block{10, 5}, true}, // around
		{Block{1, 65535}, Block{65535, 1}, true},
		{Block{10, 0}, Block{5, 10}, false}, // empty overlaps nothing
		{Block{5, 10}, Block{10, 0}, false},
	} {
		if got := tc.a.Overlaps(tc.b); got != tc.want {
			t.Errorf("%v.Overlaps(%v) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestMerge(t *testing.T) {
	for _, tc := range []struct {
		in, want []Block
	}{
		{nil, nil},
		{[]Block{{5, 0}}, nil},
		{[]Block{{10, 10}}, []Block{{10, 10}}},
		{[]Block{{20, 10}, {10, 10}, {25, 1}}, []Block{{10, 20}}}, // adjacent and inside
		{[]Block{{10, 5}, {16, 5}}, []Block{{10, 5}, {16, 5}}},    // gap of one port
		{[]Block{{10, 5}, {12, 10}}, []Block{{10, 12}}},           // overlap
		{[]Block{{65535, 1}, {65530, 5}}, []Block{{65530, 6}}},
		{[]Block{{1, 65535}, {7, 9}}, []Block{{1, 65535}}},
		{[]Block{{0, 3}}, []Block{{1, 2}}},                 // port 0 dropped
		{[]Block{{65534, 10}}, []Block{{65534, 2}}},        // clipped at 65535
		{[]Block{{3, 1}, {1, 1}, {2, 1}}, []Block{{1, 3}}}, // singles
	} {
		in := slices.Clone(tc.in)
		if got := Merge(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("Merge(%v) = %v, want %v", tc.in, got, tc.want)
		}
		if !slices.Equal(in, tc.in) {
			t.Errorf("Merge modified its input")
		}
	}
}

func TestSubtract(t *testing.T) {
	for _, tc := range []struct {
		a, b, want []Block
	}{
		{nil, []Block{{1, 10}}, nil},
		{[]Block{{1, 10}}, nil, []Block{{1, 10}}},
		{[]Block{{1, 10}}, []Block{{1, 10}}, nil},
		{[]Block{{1, 10}}, []Block{{4, 2}}, []Block{{1, 3}, {6, 5}}},
		{[]Block{{1, 10}}, []Block{{0, 3}, {9, 100}}, []Block{{3, 6}}},
		{[]Block{{1, 5}, {6, 5}}, []Block{{3, 1}}, []Block{{1, 2}, {4, 7}}},
		{[]Block{{1, 65535}}, []Block{{2, 65534}}, []Block{{1, 1}}},
		{[]Block{{100, 10}, {200, 10}}, []Block{{105, 100}}, []Block{{100, 5}, {205, 5}}},
	} {
		if got := Subtract(tc.a, tc.b); !slices.Equal(got, tc.want) {
			t.Errorf("Subtract(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

// TestMergeSubtractRandom compares Merge and Subtract with a per-port model.
func TestMergeSubtractRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	randBlocks := func() []Block {
		bs := make([]Block, rng.IntN(8))
		for i := range bs {
			bs[i] = Block{uint16(rng.IntN(200)), uint16(rng.IntN(30))}
		}
		if rng.IntN(10) == 0 {
			bs = append(bs, Block{uint16(65535 - rng.IntN(20)), uint16(rng.IntN(40))})
		}
		return bs
	}
	set := func(bs []Block) map[int]bool {
		m := map[int]bool{}
		for _, b := range bs {
			for p := int(b.Start); p <= b.End(); p++ {
				if p >= 1 && p <= MaxPort {
					m[p] = true
				}
			}
		}
		return m
	}
	checkMerged := func(bs []Block) {
		t.Helper()
		for i, b := range bs {
			if b.Valid() != nil || i > 0 && int(b.Start) <= bs[i-1].End()+1 {
				t.Fatalf("not merged: %v", bs)
			}
		}
	}
	for range 2000 {
		a, b := randBlocks(), randBlocks()
		m := Merge(a)
		checkMerged(m)
		if got, want := set(m), set(a); !mapsEqual(got, want) {
			t.Fatalf("Merge(%v) = %v: ports differ", a, m)
		}
		d := Subtract(a, b)
		checkMerged(d)
		want := set(a)
		for p := range set(b) {
			delete(want, p)
		}
		if got := set(d); !mapsEqual(got, want) {
			t.Fatalf("Subtract(%v, %v) = %v: ports differ", a, b, d)
		}
	}
}

func mapsEqual(a, b map[int]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}
