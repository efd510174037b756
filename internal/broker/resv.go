//go:build linux

package broker

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/enforce"
	"github.com/portres/portres/internal/pool"
	"github.com/portres/portres/internal/store"
	"github.com/portres/portres/internal/wire"
)

// resv is the broker's record of one reservation; the pool's Reservation
// (block, token, bound ports) points back to it through Owner.
type resv struct {
	proto     portres.Proto
	kind      uint8 // wire.KindRuntime or wire.KindPersistent
	r         *pool.Reservation
	owner     *peer    // runtime: the acquiring process
	sess      *session // runtime: the connection whose end releases it
	holders   []int32  // runtime, not delegated: placeholder fd per offset, -1 when none
	sockets   []uint64 // runtime, not delegated: cookie of the socket the broker bound per offset (nil until one)
	delegated bool     // runtime: handed to another process (portres run)
	guarded   bool     // runtime: kept by the eBPF bind guard, not placeholders
	// lingering: guarded, up to heldBeforeGuard ports: the placeholders
	// that checked its ports, kept lingerPlaceholders after the guard
	// took them (-1 once closed, nil once all are); they hold one
	// descriptor of the budget per port.
	lingering   []int32
	lingerUntil time.Time         // when the linger reaper closes them
	pending     bool              // placeholders still being bound; invisible to sweeps and tokens
	admin       bool              // the owner is root or in the admin group (persistent: always)
	charged     int               // runtime: ports charged to the owner's per-user limits
	admitted    bool              // excluded blocks: in the kernel's reserved-port list
	lastTake    uint64            // b.takeSeq when a port of rv was last marked bound
	slot        store.RuntimeSlot // runtime: where the runtime file records it; 0: not recorded
	orphaned    time.Time         // runtime, restored after a restart: when it is released unless reclaimed; zero once held by a session
	pidOwned    bool              // runtime, handed out by the portserver: ends when its owner's process exits, not with a session
	uid         uint32            // persistent: creator
	created     time.Time
	// fleetLease: runtime, a fleet lease: its ports are held fleet-wide
	// by keys in etcd, deleted when it ends (fleetFreed once they were).
	fleetLease bool
	fleetFreed atomic.Bool
	// fleetTicket names the fleet lease's allocation in etcd (fleet.Member.Allocate); set under Broker.mu.
	fleetTicket uint64
	fleetBlock  bool // persistent: a fleet persistent reservation, made and deleted through etcd
}

func (rv *resv) block() pool.Block { return rv.r.Block }

// boundSocketLocked notes that the socket with cookie is the one the
// broker bound on port: only its destroy frees the port (applyClosed).
// Caller holds b.mu (or owns rv, pending).
// A cookie of 0 forgets the port's socket: any destroy on the port may
// then be its last socket's.
func (rv *resv) boundSocketLocked(port uint16, cookie uint64) {
	if !rv.r.Block.Contains(port) || rv.sockets == nil && cookie == 0 {
		return
	}
	if rv.sockets == nil {
		rv.sockets = make([]uint64, rv.r.Block.Count)
	}
	rv.sockets[port-rv.r.Block.Start] = cookie
}

// boundSocket is the cookie of the socket the broker bound on port, 0
// if unknown. Caller holds b.mu.
func (rv *resv) boundSocket(port uint16) uint64 {
	if rv.sockets == nil || !rv.r.Block.Contains(port) {
		return 0
	}
	return rv.sockets[port-rv.r.Block.Start]
}

// listChunk is the alignment runtime blocks of the bpf guard and of
// placeholders are listed in ip_local_reserved_ports with: a wildcard
// acquire next to a listed block then needs no write of the kernel list.
const listChunk = 64

// chunked reports whether rv is listed by chunks and unlisted lazily: a
// runtime block whose explicit binds something else decides (the guard,
// or its placeholders), so that the list only keeps its ports from
// automatic assignment.
func (rv *resv) chunked() bool { return rv.guarded || rv.holds() }

// listed is the range rv takes in ip_local_reserved_ports: its block, or
// for a chunked block, the block widened to listChunk alignment.
func (rv *resv) listed() (lo, hi uint16) {
	blk := rv.block()
	if !rv.chunked() {
		return blk.Start, uint16(blk.End())
	}
	return blk.Start &^ (listChunk - 1), uint16(min(blk.End()|(listChunk-1), 65535))
}

// holds reports whether free ports of rv carry placeholder sockets.
func (rv *resv) holds() bool { return rv.kind == wire.KindRuntime && !rv.delegated && !rv.guarded }

// excluded reports whether rv must be in ip_local_reserved_ports to be
// protected from automatic assignment: everything but placeholder-held
// blocks, which the kernel's automatic assignment skips anyway (they go
// in too where there is room, by chunks: the kernel's bind(0) then skips
// them without trying each placeholder).
func (rv *resv) excluded() bool { return !rv.holds() }

// describe names rv for error messages: "tcp reservation 40000-40009 of
// pid 42 (nginx)".
func (rv *resv) describe() string {
	switch {
	case rv.kind == wire.KindPersistent:
		return fmt.Sprintf("persistent %s reservation %s", rv.proto, rv.block())
	case rv.owner != nil:
		return fmt.Sprintf("%s reservation %s of %s", rv.proto, rv.block(), rv.owner)
	}
	return fmt.Sprintf("%s reservation %s", rv.proto, rv.block())
}

// closeHolders closes every placeholder of rv. Caller holds b.mu or owns
// rv exclusively.
func (rv *resv) closeHolders() {
	for i, fd := range rv.holders {
		if fd >= 0 {
			enforce.Unhold(int(fd))
			rv.holders[i] = -1
		}
	}
}

// errf builds an error response naming rv's block.
func (rv *resv) errf(code portres.Errno, format string, args ...any) *wire.Response {
	r := errf(code, format, args...)
	r.Proto, r.Start, r.Count = uint8(rv.proto), rv.r.Block.Start, rv.r.Block.Count
	return r
}

// errf builds an error response.
func errf(code portres.Errno, format string, args ...any) *wire.Response {
	return &wire.Response{Code: uint32(code), Msg: fmt.Sprintf(format, args...)}
}
