//go:build linux

package portres

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/portres/portres/internal/wire"
)

// FleetStatus is a fleet member's view of its fleet (Status.Fleet): the
// brokers of several hosts joined through etcd (portresd --etcd).
type FleetStatus struct {
	Name      string        `json:"name"`      // this member
	Prefix    string        `json:"prefix"`    // the etcd key prefix
	Endpoints []string      `json:"endpoints"` // etcd
	Connected bool          `json:"connected"` // reaches etcd, and its lease lives
	Error     string        `json:"error,omitempty"`
	Range     string        `json:"range,omitempty"` // the fleet range, "30000-32767"
	Members   []FleetMember `json:"members"`
	Blocks    int           `json:"blocks"` // fleet persistent reservations
	Leased    int           `json:"leased"` // ports held by fleet leases, all members
}

// FleetMember is one registered member of a fleet.
type FleetMember struct {
	Name       string    `json:"name"`
	Host       string    `json:"host"`
	PID        int       `json:"pid"`
	Version    string    `json:"version"`
	Since      time.Time `json:"since"`
	RangeStart uint16    `json:"range_start,omitempty"`
	RangeEnd   uint16    `json:"range_end,omitempty"`
}

// FleetEntry is one reservation of a member in the fleet view (ShowFleet).
// Tokens never leave their host.
type FleetEntry struct {
	Member  string   `json:"member"`
	Host    string   `json:"host"`
	Proto   string   `json:"proto"`
	Kind    string   `json:"kind"` // runtime, persistent, fleet persistent, fleet lease
	Start   uint16   `json:"start"`
	Count   uint16   `json:"count"`
	PID     int32    `json:"pid,omitempty"`
	UID     uint32   `json:"uid"`
	Command string   `json:"command,omitempty"`
	Bound   []uint16 `json:"bound"`
}

// AcquireFleet takes a fleet lease: count ports of the fleet range from
// start (0: wherever the fleet has room), unique across every member of
// the fleet, held like a runtime reservation of this client. It ends
// with Release or the client's Close; if this broker dies or its host is
// lost, the fleet frees it after the member lease's TTL. WSAEADDRINUSE if
// another member holds part of it, WSAENOBUFS if no block of that size is
// free, WSAENETDOWN if the broker is cut off from etcd, WSAEOPNOTSUPP if
// the broker is no fleet member.
func (c *Client) AcquireFleet(ctx context.Context, proto Proto, start, count uint16) (*Reservation, error) {
	return c.acquire(ctx, proto, start, count, wire.FlagFleet)
}

// CreateFleetPersistent creates a fleet persistent reservation: the block
// is reserved persistently on every member of the fleet, with one token,
// or on none (ERROR_SHARING_VIOLATION names the member where it collides
// with local use). Root or the admin group only (ERROR_ACCESS_DENIED).
func (c *Client) CreateFleetPersistent(ctx context.Context, proto Proto, start, count uint16) (*Reservation, error) {
	return c.persistent(ctx, wire.OpPersistentCreate, wire.FlagFleet, proto, start, count)
}

// DeleteFleetPersistent deletes the fleet persistent reservation that is
// exactly start/count on every member (ERROR_NOT_FOUND if none).
func (c *Client) DeleteFleetPersistent(ctx context.Context, proto Proto, start, count uint16) error {
	_, err := c.persistent(ctx, wire.OpPersistentDelete, wire.FlagFleet, proto, start, count)
	return err
}

// LookupFleetPersistent finds the fleet persistent reservation that is
// exactly start/count (ERROR_NOT_FOUND if none).
func (c *Client) LookupFleetPersistent(ctx context.Context, proto Proto, start, count uint16) (*Reservation, error) {
	return c.persistent(ctx, wire.OpPersistentLookup, wire.FlagFleet, proto, start, count)
}

// ShowFleet lists the reservations of every member of the fleet, with
// host, pid and command, as each member last published them (within a
// second), this broker's own read fresh.
func (c *Client) ShowFleet(ctx context.Context) ([]FleetEntry, error) {
	out, err := c.do(ctx, &wire.Request{Op: wire.OpShow, Flags: wire.FlagFleet})
	if err != nil {
		return nil, err
	}
	var all []FleetEntry
	for _, r := range out {
		var es []FleetEntry
		if err := json.Unmarshal([]byte(r.Msg), &es); err != nil {
			return nil, &Error{Op: "show fleet", Code: WSAEINVAL, Msg: fmt.Sprintf("bad answer from broker: %v", err), Err: err}
		}
		all = append(all, es...)
	}
	return all, nil
}
