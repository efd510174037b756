// Package pool is the pure port allocator behind portresd: for one
// transport protocol it owns the port space 1..65535, hands out contiguous
// blocks of ports (reservations) identified by random 64-bit tokens, and
// tracks which ports of each block are bound. It does no I/O and makes no
// system calls (TestNoSyscallImports enforces it); the broker applies the
// results to the kernel and serialises access, since nothing here is safe
// for concurrent use.
//
// # Placement
//
// A specific request names its block. A wildcard request (Start == 0) is
// placed inside the dynamic range next-fit: the lowest fitting block at or
// after a cursor that moves past each wildcard block placed, wrapping
// around to the bottom of the range once. Freed ports are therefore not
// reused at once, and placement is reproducible from the pool's history.
// Reservation.Take(0) hands out ports of a block next-fit in the same way.
//
// # Structures and costs
//
// Let n be the number of reservations, c the port count of the block
// concerned and k the number of results.
//
//   - occupancy: a 65536-bit map of ports covered by a reservation (1024
//     uint64 words, port 0 always set) under a segment tree over the 1024
//     words; each node keeps the free ports at its low end, at its high end
//     and in its longest run. Finding the lowest run of c free ports in any
//     [lo, hi] visits at most 2 masked words, 20 whole nodes and one
//     10-step descent, and finishes in a word with math/bits: O(log 1024),
//     independent of n and of fragmentation. Marking or clearing a block
//     rewrites c/64+1 words and their ancestors: O(c/64 + log 1024).
//   - starts: a 65536-bit map of block starts with a 16-word summary of
//     non-empty words, so the predecessor or successor of a port is found
//     in O(1) (at most 16+2 word operations); plus a map from start port to
//     reservation and a map from token to reservation.
//   - each reservation: a bitmap of its bound ports with summary words of
//     "any bit set" and "all bits set", so Take(0) skips full words 64 at
//     a time.
//
// Operation costs:
//
//	New                       O(65536/64) to build the tree
//	Reserve, specific         O(1) overlap check via starts, then O(c/64 + log 1024) to mark
//	Reserve, wildcard         O(log 1024) FindFree, then O(c/64 + log 1024) to mark
//	FindFree                  O(log 1024), at most two searches (before and after wrapping)
//	Release                   O(c/64 + log 1024)
//	Get, Len, Dynamic         O(1)
//	SetDynamic                O(1)
//	Find                      O(1): one bit test, one predecessor search, one map lookup
//	Overlapping               O(1 + k)
//	All                       O(n + 16)
//	Check                     O(65536 + n + sum of c/64)
//	Reservation.Take(0)       O(1 + c/4096): summary words, then one word
//	Reservation.Take(p), Put  O(1)
//	IsBound, NumBound, Free   O(1)
//	Bound                     O(c/4096 + k)
//	Merge, Subtract           O(m log m) for m input blocks
//
// Memory: about 40 KiB per pool plus the two maps, and about 150 bytes plus
// c/8 bytes per reservation.
package pool
