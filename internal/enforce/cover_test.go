//go:build linux

package enforce

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestCoverMatchesMerge: the ranges a Cover lists are what merging its
// blocks gives, through random adds and removes.
func TestCoverMatchesMerge(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var c Cover
	var blocks []Range
	for i := 0; i < 3000; i++ {
		if len(blocks) > 0 && rng.IntN(3) == 0 {
			j := rng.IntN(len(blocks))
			c.Remove(blocks[j].Lo, blocks[j].Hi)
			blocks = slices.Delete(blocks, j, j+1)
		} else {
			lo := uint16(rng.IntN(65536))
			hi := uint16(min(int(lo)+rng.IntN(40), 65535))
			if rng.IntN(50) == 0 {
				lo, hi = 65500, 65535 // the top edge
			}
			c.Add(lo, hi)
			blocks = append(blocks, Range{lo, hi})
		}
		bits := c.Bits()
		if got, want := bits.Ranges(), MergeRanges(blocks); !slices.Equal(got, want) {
			t.Fatalf("step %d: Ranges %v, merged blocks %v", i, FormatRanges(got), FormatRanges(want))
		}
	}
	var m Bitmap
	m.Set(0, 65535)
	if got := m.Ranges(); len(got) != 1 || got[0] != (Range{0, 65535}) {
		t.Errorf("full bitmap: %v", got)
	}
}
