//go:build linux

package enforce

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Range is an inclusive port range [Lo, Hi]. A Range with Lo > Hi is
// empty: MergeRanges and the set operations drop it.
type Range struct{ Lo, Hi uint16 }

// String formats r in kernel syntax: "1000-1005", or "2000" for a single
// port.
func (r Range) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(int(r.Lo))
	}
	return strconv.Itoa(int(r.Lo)) + "-" + strconv.Itoa(int(r.Hi))
}

// Len is the number of ports in r.
func (r Range) Len() int {
	if r.Lo > r.Hi {
		return 0
	}
	return int(r.Hi) - int(r.Lo) + 1
}

// Contains reports whether port lies in r.
func (r Range) Contains(port uint16) bool { return r.Lo <= port && port <= r.Hi }

// ParseRanges parses a port list in the syntax the kernel prints for
// ip_local_reserved_ports: comma-separated ports and "lo-hi" ranges, for
// example "1000-1005,2000,3000-3010\n". An empty string (or a lone
// newline) is the empty list. Ranges come back in textual order, not
// merged. It rejects spaces, empty elements, ports above 65535 and
// reversed ranges, as the kernel does.
func ParseRanges(s string) ([]Range, error) {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil, nil
	}
	var rs []Range
	for elem := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(elem, "-")
		l, err := parsePort(lo)
		if err != nil {
			return nil, fmt.Errorf("enforce: parse port list %q: %w", s, err)
		}
		h := l
		if isRange {
			if h, err = parsePort(hi); err != nil {
				return nil, fmt.Errorf("enforce: parse port list %q: %w", s, err)
			}
			if l > h {
				return nil, fmt.Errorf("enforce: parse port list %q: reversed range %q", s, elem)
			}
		}
		rs = append(rs, Range{l, h})
	}
	return rs, nil
}

// parsePort parses a decimal port 0..65535 without sign or spaces.
func parsePort(s string) (uint16, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("bad port %q", s)
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("bad port %q: %w", s, err)
	}
	return uint16(n), nil
}

// FormatRanges formats rs in kernel syntax, "1000-1005,2000", in the
// given order and without merging (call MergeRanges first for the
// shortest text). Empty ranges are skipped; nil gives "".
func FormatRanges(rs []Range) string {
	var b strings.Builder
	for _, r := range rs {
		if r.Lo > r.Hi {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(r.String())
	}
	return b.String()
}

// MergeRanges returns the ports of rs as a sorted list of disjoint,
// non-adjacent ranges: overlapping and adjacent ranges are merged, empty
// ones dropped. rs is not modified. The result is nil for no ports.
func MergeRanges(rs []Range) []Range {
	var sorted []Range
	for _, r := range rs {
		if r.Lo <= r.Hi {
			sorted = append(sorted, r)
		}
	}
	slices.SortFunc(sorted, func(a, b Range) int { return int(a.Lo) - int(b.Lo) })
	var out []Range
	for _, r := range sorted {
		if n := len(out); n > 0 && uint32(r.Lo) <= uint32(out[n-1].Hi)+1 {
			out[n-1].Hi = max(out[n-1].Hi, r.Hi)
			continue
		}
		out = append(out, r)
	}
	return out
}

// UnionRanges returns the ports in a or b, merged.
func UnionRanges(a, b []Range) []Range {
	return MergeRanges(append(slices.Clip(a), b...))
}

// SubtractRanges returns the ports of a that are not in b, merged.
func SubtractRanges(a, b []Range) []Range {
	a, b = MergeRanges(a), MergeRanges(b)
	var out []Range
	j := 0
	for _, r := range a {
		lo := uint32(r.Lo)
		for ; j < len(b) && b[j].Hi < r.Lo; j++ {
		}
		for k := j; k < len(b) && b[k].Lo <= r.Hi; k++ {
			if uint32(b[k].Lo) > lo {
				out = append(out, Range{uint16(lo), b[k].Lo - 1})
			}
			lo = uint32(b[k].Hi) + 1
		}
		if lo <= uint32(r.Hi) {
			out = append(out, Range{uint16(lo), r.Hi})
		}
	}
	return out
}

// IntersectRanges returns the ports in both a and b, merged.
func IntersectRanges(a, b []Range) []Range {
	return SubtractRanges(a, SubtractRanges(a, b))
}

// RangesLen is the number of distinct ports in rs.
func RangesLen(rs []Range) int {
	n := 0
	for _, r := range MergeRanges(rs) {
		n += r.Len()
	}
	return n
}
