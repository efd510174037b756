//go:build linux

package sockdiag

// PortSet is a set of ports: bit p%64 of word p/64 is port p.
type PortSet [1024]uint64

// Has reports whether p is in the set.
func (s *PortSet) Has(p uint16) bool { return s[p/64]&(1<<(p%64)) != 0 }

// Add puts p in the set.
func (s *PortSet) Add(p uint16) { s[p/64] |= 1 << (p % 64) }
