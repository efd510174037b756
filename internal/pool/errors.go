package pool

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error returned by this package wraps exactly one of
// them, so callers (the broker) map them to Winsock or Win32 codes with
// errors.Is.
var (
	// ErrInvalid: a zero port count, start port 0 where a port is needed,
	// a block past port 65535, port 0 in Put, Put of a port that is not
	// bound, a bad dynamic range, or a token already in use.
	// Maps to WSAEINVAL / ERROR_INVALID_PARAMETER.
	ErrInvalid = errors.New("invalid argument")
	// ErrOverlap: the block overlaps an existing reservation. Returned as
	// an *OverlapError. Maps to WSAEADDRINUSE / ERROR_SHARING_VIOLATION.
	ErrOverlap = errors.New("block overlaps a reservation")
	// ErrNoSpace: no free block of the requested size in the dynamic
	// range for a wildcard request. Maps to WSAEADDRINUSE.
	ErrNoSpace = errors.New("no free block of that size in the dynamic port range")
	// ErrExhausted: Take(0) on a reservation whose ports are all bound.
	// Maps to WSAENOBUFS.
	ErrExhausted = errors.New("every port of the reservation is bound")
	// ErrOutside: the port is not in the reservation's block. Maps to
	// WSAEINVAL.
	ErrOutside = errors.New("port outside the reservation")
	// ErrBound: Take of a port that is already bound. Maps to
	// WSAEADDRINUSE.
	ErrBound = errors.New("port already bound")
	// ErrNotFound: no reservation has that token.
	ErrNotFound = errors.New("no reservation with that token")
)

// OverlapError reports that Block overlaps the existing reservation With
// (the lowest one in the way, if several are). It wraps ErrOverlap.
type OverlapError struct {
	Block Block
	With  *Reservation
}

// Error names both blocks and the token in the way; it does not look at
// Owner, which the broker can add to its own message.
func (e *OverlapError) Error() string {
	if e.With == nil {
		return fmt.Sprintf("pool: block %v: %v", e.Block, ErrOverlap)
	}
	return fmt.Sprintf("pool: block %v overlaps reservation %v (token %#x): %v",
		e.Block, e.With.Block, uint64(e.With.Token), ErrOverlap)
}

// Unwrap returns ErrOverlap.
func (e *OverlapError) Unwrap() error { return ErrOverlap }
