//go:build linux

package enforce

import (
	"flag"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

var quickSeed = flag.Uint64("quick.seed", 0, "seed for the range property test (0: time-based)")

func r(lo, hi uint16) Range { return Range{lo, hi} }

func TestParseRanges(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []Range
	}{
		{"", nil},
		{"\n", nil},
		{"0", []Range{r(0, 0)}},
		{"2000", []Range{r(2000, 2000)}},
		{"1000-1005,2000,3000-3010\n", []Range{r(1000, 1005), r(2000, 2000), r(3000, 3010)}},
		{"5,3,4", []Range{r(5, 5), r(3, 3), r(4, 4)}},
		{"0-65535", []Range{r(0, 65535)}},
		{"7-7", []Range{r(7, 7)}},
	} {
		got, err := ParseRanges(tt.in)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("ParseRanges(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{",", "1,", ",1", "1,,2", "65536", "100-50", " 7", "7 ", "1-", "-1",
		"1-2-3", "+5", "0x10", "1\n\n", "a", "1;2", "99999999999999999999"} {
		if got, err := ParseRanges(bad); err == nil {
			t.Errorf("ParseRanges(%q) = %v, want an error", bad, got)
		}
	}
}

func TestFormatRanges(t *testing.T) {
	for _, tt := range []struct {
		in   []Range
		want string
	}{
		{nil, ""},
		{[]Range{r(2000, 2000)}, "2000"},
		{[]Range{r(1000, 1005), r(2000, 2000)}, "1000-1005,2000"},
		{[]Range{r(9, 9), r(5, 4), r(1, 2)}, "9,1-2"}, // order kept, empty skipped
		{[]Range{r(0, 65535)}, "0-65535"},
	} {
		if got := FormatRanges(tt.in); got != tt.want {
			t.Errorf("FormatRanges(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestMergeRanges(t *testing.T) {
	for _, tt := range []struct{ in, want []Range }{
		{nil, nil},
		{[]Range{r(5, 4)}, nil},
		{[]Range{r(5, 5), r(3, 3), r(4, 4)}, []Range{r(3, 5)}},
		{[]Range{r(10, 20), r(21, 30)}, []Range{r(10, 30)}},
		{[]Range{r(10, 20), r(22, 30)}, []Range{r(10, 20), r(22, 30)}},
		{[]Range{r(10, 20), r(15, 18), r(0, 3)}, []Range{r(0, 3), r(10, 20)}},
		{[]Range{r(65535, 65535), r(0, 0), r(65534, 65534)}, []Range{r(0, 0), r(65534, 65535)}},
		{[]Range{r(0, 65535), r(65535, 65535)}, []Range{r(0, 65535)}},
	} {
		if got := MergeRanges(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("MergeRanges(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestSetOperations(t *testing.T) {
	for _, tt := range []struct {
		a, b                []Range
		union, minus, inter []Range
	}{
		{nil, nil, nil, nil, nil},
		{[]Range{r(1, 10)}, nil, []Range{r(1, 10)}, []Range{r(1, 10)}, nil},
		{nil, []Range{r(1, 10)}, []Range{r(1, 10)}, nil, nil},
		{[]Range{r(1, 10)}, []Range{r(3, 4)}, []Range{r(1, 10)}, []Range{r(1, 2), r(5, 10)}, []Range{r(3, 4)}},
		{[]Range{r(1, 10)}, []Range{r(11, 12)}, []Range{r(1, 12)}, []Range{r(1, 10)}, nil},
		{[]Range{r(1, 10), r(20, 30)}, []Range{r(5, 25)}, []Range{r(1, 30)},
			[]Range{r(1, 4), r(26, 30)}, []Range{r(5, 10), r(20, 25)}},
		{[]Range{r(0, 65535)}, []Range{r(0, 0), r(65535, 65535)}, []Range{r(0, 65535)},
			[]Range{r(1, 65534)}, []Range{r(0, 0), r(65535, 65535)}},
		{[]Range{r(5, 5)}, []Range{r(0, 65535)}, []Range{r(0, 65535)}, nil, []Range{r(5, 5)}},
	} {
		if got := UnionRanges(tt.a, tt.b); !slices.Equal(got, tt.union) {
			t.Errorf("UnionRanges(%v, %v) = %v, want %v", tt.a, tt.b, got, tt.union)
		}
		if got := SubtractRanges(tt.a, tt.b); !slices.Equal(got, tt.minus) {
			t.Errorf("SubtractRanges(%v, %v) = %v, want %v", tt.a, tt.b, got, tt.minus)
		}
		if got := IntersectRanges(tt.a, tt.b); !slices.Equal(got, tt.inter) {
			t.Errorf("IntersectRanges(%v, %v) = %v, want %v", tt.a, tt.b, got, tt.inter)
		}
	}
}

// portSet is the model: one bit per port.
type portSet [65536 / 64]uint64

func setOf(rs []Range) *portSet {
	var s portSet
	for _, r := range rs {
		for p := int(r.Lo); p <= int(r.Hi); p++ {
			s[p/64] |= 1 << (p % 64)
		}
	}
	return &s
}

// randRanges draws ranges clustered near 0, the middle and 65535 so that
// overlaps, adjacency and the edges all occur.
func randRanges(rng *rand.Rand) []Range {
	var rs []Range
	for range rng.IntN(8) {
		base := []int{0, 30000, 65535 - 60}[rng.IntN(3)]
		lo := base + rng.IntN(60)
		hi := lo + rng.IntN(12) - 1 // sometimes empty (hi < lo)
		rs = append(rs, Range{uint16(lo), uint16(min(max(hi, 0), 65535))})
	}
	return rs
}

// canonical reports whether rs is sorted, non-empty, disjoint and non-adjacent.
func canonical(rs []Range) bool {
	for i, r := range rs {
		if r.Lo > r.Hi || i > 0 && uint32(rs[i-1].Hi)+1 >= uint32(r.Lo) {
			return false
		}
	}
	return true
}

func TestRangesProperties(t *testing.T) {
	seed := *quickSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -quick.seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	for i := range 2000 {
		a, b := randRanges(rng), randRanges(rng)
		sa, sb := setOf(a), setOf(b)
		var union, minus, inter portSet
		for w := range sa {
			union[w], minus[w], inter[w] = sa[w]|sb[w], sa[w]&^sb[w], sa[w]&sb[w]
		}
		for name, c := range map[string]struct {
			got  []Range
			want *portSet
		}{
			"merge": {MergeRanges(a), sa}, "union": {UnionRanges(a, b), &union},
			"subtract": {SubtractRanges(a, b), &minus}, "intersect": {IntersectRanges(a, b), &inter},
		} {
			if !canonical(c.got) || *setOf(c.got) != *c.want {
				t.Fatalf("case %d: %s(%v, %v) = %v: wrong or not canonical", i, name, a, b, c.got)
			}
		}
		m := MergeRanges(a)
		back, err := ParseRanges(FormatRanges(m) + "\n")
		if err != nil || !slices.Equal(back, m) {
			t.Fatalf("case %d: Parse(Format(%v)) = %v, %v", i, m, back, err)
		}
		if RangesLen(a) != RangesLen(m) || !slices.Equal(MergeRanges(m), m) {
			t.Fatalf("case %d: merge of %v not idempotent", i, a)
		}
	}
}
