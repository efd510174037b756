//go:build linux

package portres

import (
	"context"
	"fmt"

	"github.com/portres/portres/internal/wire"
)

// Reservation is a block of ports of one protocol, identified by its
// token. Runtime reservations come from Client.Acquire and live until
// Release or until their Client closes; persistent ones from
// Client.CreatePersistent or Client.LookupPersistent.
type Reservation struct {
	c     *Client
	proto Proto
	start uint16
	count uint16
	token uint64
	// notExcluded: the acquire answer said the kernel does not keep the
	// block out of automatic assignment (wire.NotExcluded). The zero value
	// stands for excluded, what handles not made by acquire report.
	notExcluded bool
	delegated   bool // from AcquireDelegated
}

// Proto is the reservation's protocol.
func (r *Reservation) Proto() Proto { return r.proto }

// Start is the first port of the block.
func (r *Reservation) Start() uint16 { return r.start }

// Count is the number of ports in the block.
func (r *Reservation) Count() uint16 { return r.count }

// End is the last port of the block.
func (r *Reservation) End() uint16 { return r.start + r.count - 1 }

// Token is the reservation's opaque token (INET_PORT_RESERVATION_TOKEN).
func (r *Reservation) Token() uint64 { return r.token }

// Excluded reports whether the kernel keeps the block out of automatic
// port assignment (bind to port 0, connect). It is false when the block
// relies on net.ipv4.ip_local_reserved_ports for that and the broker
// cannot write the kernel list (it does not run as root, /proc/sys is
// read-only, or kernel exclusion is disabled in its configuration). It
// matters for delegated blocks (AcquireDelegated), which nothing else
// protects: any program's bind to port 0 or connect may then take one of
// their ports before the process they are handed to binds it. A block
// from Acquire is normally held by the broker's placeholder sockets,
// which automatic assignment skips, and reports true. The broker tells
// when the block is acquired; handles from Client.Reservation,
// Client.Release, CreatePersistent and LookupPersistent report true.
func (r *Reservation) Excluded() bool { return !r.notExcluded }

// Ports returns every port of the block, ascending.
func (r *Reservation) Ports() []uint16 {
	ps := make([]uint16, r.count)
	for i := range ps {
		ps[i] = r.start + uint16(i)
	}
	return ps
}

// Contains reports whether port is in the block.
func (r *Reservation) Contains(port uint16) bool {
	return port >= r.start && int(port) < int(r.start)+int(r.count)
}

// String returns "tcp 40000-40009".
func (r *Reservation) String() string {
	return fmt.Sprintf("%s %s", r.proto, formatBlock(r.start, r.count))
}

// Acquire reserves a block of count ports of proto for the life of the
// client (SIO_ACQUIRE_PORT_RESERVATION). start 0 asks the broker to place
// the block inside the dynamic port range. Returns an *Error with
// WSAEADDRINUSE if the block overlaps another reservation or a port in
// use (the message names whose), WSAEINVAL for a bad block, WSAEMFILE if
// the broker ran out of descriptors, WSA_OPERATION_ABORTED if ctx ends
// first.
func (c *Client) Acquire(ctx context.Context, proto Proto, start, count uint16) (*Reservation, error) {
	return c.acquire(ctx, proto, start, count, 0)
}

// AcquireDelegated is Acquire for ports another process will bind with a
// plain bind() (as `portres run` hands ports to its command). The broker
// keeps no placeholder sockets on them: they are protected from the
// kernel's automatic assignment through ip_local_reserved_ports where the
// broker may write it (Reservation.Excluded tells), not from explicit
// binds by other processes.
func (c *Client) AcquireDelegated(ctx context.Context, proto Proto, start, count uint16) (*Reservation, error) {
	return c.acquire(ctx, proto, start, count, wire.FlagDelegate)
}

func (c *Client) acquire(ctx context.Context, proto Proto, start, count uint16, flags uint16) (*Reservation, error) {
	resp, err := c.one(ctx, &wire.Request{Op: wire.OpAcquire, Proto: uint8(proto), Start: start, Count: count, Flags: flags})
	if err != nil {
		return nil, err
	}
	return &Reservation{c: c, proto: proto, start: resp.Start, count: resp.Count, token: resp.Token,
		notExcluded: resp.Flags&wire.NotExcluded != 0}, nil
}

// Reservation returns a handle on the reservation token after checking
// that this process may consume it (SIO_ASSOCIATE_PORT_RESERVATION): its
// own runtime reservation, or a persistent one if it has the right.
// Returns WSAEACCES otherwise, WSAEINVAL for an unknown token.
func (c *Client) Reservation(ctx context.Context, token uint64) (*Reservation, error) {
	resp, err := c.one(ctx, &wire.Request{Op: wire.OpAssociate, Token: token})
	if err != nil {
		return nil, err
	}
	return &Reservation{c: c, proto: Proto(resp.Proto), start: resp.Start, count: resp.Count, token: token}, nil
}

// Release ends the runtime reservation (SIO_RELEASE_PORT_RESERVATION).
// Sockets already bound from it stay bound. Only the acquiring process
// may release: others get WSAEACCES.
func (r *Reservation) Release(ctx context.Context) error {
	_, err := r.c.Release(ctx, r.token)
	return err
}

// Release ends the runtime reservation token, whatever its protocol, and
// returns its block.
func (c *Client) Release(ctx context.Context, token uint64) (*Reservation, error) {
	return c.ReleaseProto(ctx, 0, token)
}

// ReleaseProto ends the runtime reservation token only if it is a
// reservation of proto, as SIO_RELEASE_PORT_RESERVATION on a TCP or UDP
// socket does: a reservation of the other protocol is refused with
// WSAEINVAL and stays held (the broker checks and releases in one step).
// proto 0 releases either protocol, like Release. Returns the released
// block; WSAEINVAL for an unknown token, WSAEACCES for another process's
// token.
func (c *Client) ReleaseProto(ctx context.Context, proto Proto, token uint64) (*Reservation, error) {
	resp, err := c.one(ctx, &wire.Request{Op: wire.OpRelease, Proto: uint8(proto), Token: token})
	if err != nil {
		return nil, err
	}
	return &Reservation{c: c, proto: Proto(resp.Proto), start: resp.Start, count: resp.Count, token: token}, nil
}
