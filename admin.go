//go:build linux

package portres

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/portres/portres/internal/wire"
)

// Show lists every reservation on the host, runtime and persistent, with
// owners and bound ports. Tokens of other processes are never included.
func (c *Client) Show(ctx context.Context) ([]Info, error) {
	out, err := c.do(ctx, &wire.Request{Op: wire.OpShow})
	if err != nil {
		return nil, err
	}
	var infos []Info
	for _, r := range out {
		for _, e := range r.Entries {
			bound := e.Bound
			if bound == nil {
				bound = []uint16{}
			}
			infos = append(infos, Info{Proto: Proto(e.Proto), Kind: Kind(e.Kind), Start: e.Start, Count: e.Count,
				PID: e.PID, UID: e.UID, Command: e.Command, Token: e.Token,
				Mine: e.Flags&wire.EntryMine != 0, Delegated: e.Flags&wire.EntryDelegated != 0,
				Restored: e.Flags&wire.EntryRestored != 0, Bound: bound})
		}
	}
	return infos, nil
}

// CreatePersistent records a persistent reservation of count ports from
// start (CreatePersistentTcpPortReservation): it survives broker restarts
// and reboots, keeps its token, and its ports are never handed out by the
// kernel's automatic assignment. Returns ERROR_INVALID_PARAMETER for a
// zero start or count or a block past 65535, ERROR_SHARING_VIOLATION if
// it overlaps a reservation or a port in use, ERROR_ACCESS_DENIED unless
// the caller is root or in the broker's admin group.
func (c *Client) CreatePersistent(ctx context.Context, proto Proto, start, count uint16) (*Reservation, error) {
	return c.persistent(ctx, wire.OpPersistentCreate, 0, proto, start, count)
}

// DeletePersistent removes the persistent reservation that is exactly
// start/count (DeletePersistentTcpPortReservation); ERROR_NOT_FOUND if
// none. Sockets bound from it stay bound.
func (c *Client) DeletePersistent(ctx context.Context, proto Proto, start, count uint16) error {
	_, err := c.persistent(ctx, wire.OpPersistentDelete, 0, proto, start, count)
	return err
}

// LookupPersistent finds the persistent reservation that is exactly
// start/count (LookupPersistentTcpPortReservation); ERROR_NOT_FOUND if
// none. Anyone may look up; binding from it needs the right to consume
// persistent reservations.
func (c *Client) LookupPersistent(ctx context.Context, proto Proto, start, count uint16) (*Reservation, error) {
	return c.persistent(ctx, wire.OpPersistentLookup, 0, proto, start, count)
}

// persistent sends a persistent-reservation request (flags: 0, or
// wire.FlagFleet for the fleet's).
func (c *Client) persistent(ctx context.Context, op wire.Op, flags uint16, proto Proto, start, count uint16) (*Reservation, error) {
	resp, err := c.one(ctx, &wire.Request{Op: op, Flags: flags, Proto: uint8(proto), Start: start, Count: count})
	if err != nil {
		return nil, err
	}
	return &Reservation{c: c, proto: proto, start: resp.Start, count: resp.Count, token: resp.Token}, nil
}

// DynamicPortRange returns the range wildcard reservations of proto are
// drawn from, as netsh shows it: start and number of ports.
func (c *Client) DynamicPortRange(ctx context.Context, proto Proto) (start, count uint16, err error) {
	resp, err := c.one(ctx, &wire.Request{Op: wire.OpDynamicShow, Proto: uint8(proto)})
	if err != nil {
		return 0, 0, err
	}
	return resp.Start, resp.Count, nil
}

// SetDynamicPortRange changes proto's dynamic range with Windows' rules
// (at least 255 ports, start >= 1025, end <= 65535, else
// ERROR_INVALID_PARAMETER); it is persisted, and existing reservations are
// not disturbed. Root or the admin group only (ERROR_ACCESS_DENIED).
func (c *Client) SetDynamicPortRange(ctx context.Context, proto Proto, start, count uint16) error {
	_, err := c.one(ctx, &wire.Request{Op: wire.OpDynamicSet, Proto: uint8(proto), Start: start, Count: count})
	return err
}

// PortRange is a range of ports, both ends included.
type PortRange struct {
	Start uint16 `json:"start"`
	End   uint16 `json:"end"`
}

// SystemRangeChange is what SetSystemDynamicPortRange changed: the new
// range, now TCP's, UDP's and the kernel's, and the ranges before.
type SystemRangeChange struct {
	Start, Count uint16    // the new range
	OldKernel    PortRange `json:"kernel"` // net.ipv4.ip_local_port_range before
	OldTCP       PortRange `json:"tcp"`    // TCP's dynamic range before
	OldUDP       PortRange `json:"udp"`    // UDP's dynamic range before
}

// SetSystemDynamicPortRange sets the dynamic range of both protocols and
// the kernel's ephemeral port range (net.ipv4.ip_local_port_range in the
// broker's network namespace, one range for TCP and UDP) to count ports
// from start, as `netsh int ipv4 set dynamicport` does on Windows.
// SetDynamicPortRange's rules apply (ERROR_INVALID_PARAMETER, and
// ERROR_ACCESS_DENIED unless root or the admin group); a range the
// kernel refuses (it must start at or above
// net.ipv4.ip_unprivileged_port_start) is ERROR_INVALID_PARAMETER, and
// then nothing changed. Returns the ranges before the change.
func (c *Client) SetSystemDynamicPortRange(ctx context.Context, start, count uint16) (*SystemRangeChange, error) {
	resp, err := c.one(ctx, &wire.Request{Op: wire.OpDynamicSet, Flags: wire.FlagSystem, Start: start, Count: count})
	if err != nil {
		return nil, err
	}
	ch := &SystemRangeChange{Start: resp.Start, Count: resp.Count}
	if err := json.Unmarshal([]byte(resp.Msg), ch); err != nil {
		return nil, &Error{Op: wire.OpDynamicSet.String(), Start: start, Count: count, Code: WSAEINVAL,
			Msg: fmt.Sprintf("the range was set, but the broker's account of the previous ranges is unreadable: %v", err)}
	}
	return ch, nil
}
