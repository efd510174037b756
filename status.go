//go:build linux

package portres

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/portres/portres/internal/wire"
)

// Status is the broker's state as Client.Status reports it (portres
// status): what it runs, how it enforces, what it may do to the kernel,
// its limits, and how much is held. Its JSON form is stable.
type Status struct {
	Version     string            `json:"version"`     // portresd's module version and VCS revision
	Enforcement EnforcementStatus `json:"enforcement"` // the mode in force and why
	KernelList  KernelListStatus  `json:"kernel_list"` // net.ipv4.ip_local_reserved_ports
	// UnprivilegedPortStart is net.ipv4.ip_unprivileged_port_start as the
	// broker last read it: ports below need CAP_NET_BIND_SERVICE or admin.
	UnprivilegedPortStart uint16         `json:"unprivileged_port_start"`
	Dynamic               []DynamicRange `json:"dynamic"` // per protocol
	Limits                LimitsStatus   `json:"limits"`
	Counts                CountsStatus   `json:"counts"`
	Restore               RestoreStatus  `json:"restore"`         // live restore of runtime reservations
	Fleet                 *FleetStatus   `json:"fleet,omitempty"` // the fleet, for a member of one (portresd --etcd)
}

// RestoreStatus describes live restore: where runtime reservations are
// recorded so that they survive a restart of the broker, how long
// restored ones wait for their owners, and how many still wait.
type RestoreStatus struct {
	State   string `json:"state"`   // the runtime file; "" when live restore is off
	Grace   string `json:"grace"`   // how long a restored reservation waits to be reclaimed
	Waiting int    `json:"waiting"` // restored reservations not reclaimed yet
}

// EnforcementStatus is the enforcement mode in force ("bpf" or "hold"),
// what was asked for ("auto", "bpf" or "hold") and why the mode was chosen.
type EnforcementStatus struct {
	Mode      string `json:"mode"`
	Requested string `json:"requested"`
	Why       string `json:"why"`
}

// KernelListStatus says whether the broker keeps blocks out of the
// kernel's automatic port assignment, and how full the list is (one write
// of at most MaxBytes bytes).
type KernelListStatus struct {
	Path     string `json:"path"`
	Writable bool   `json:"writable"`
	Bytes    int    `json:"bytes"`     // the list's length now, newline included (0 if not writable)
	MaxBytes int    `json:"max_bytes"` // what one write takes
	// Foreign lists the list's ranges ("a-b" or "p") that portres did
	// not add: other software's exclusions, kept as they are.
	Foreign []string `json:"foreign,omitempty"`
}

// DynamicRange is a protocol's dynamic port range, where wildcard
// reservations are placed.
type DynamicRange struct {
	Proto Proto  `json:"proto"`
	Start uint16 `json:"start"`
	End   uint16 `json:"end"`
}

// LimitsStatus are the broker's per-user limits and reserves (-1: none).
type LimitsStatus struct {
	UserPorts        int `json:"user_ports"`
	UserReservations int `json:"user_reservations"`
	UserConnections  int `json:"user_connections"`
	UserRate         int `json:"user_rate"`
	FDReserve        int `json:"fd_reserve"`
	ListReserve      int `json:"list_reserve"`
}

// CountsStatus is how much the broker holds right now.
type CountsStatus struct {
	Runtime      int   `json:"runtime"`      // runtime (and delegated) reservations
	Persistent   int   `json:"persistent"`   // persistent reservations
	Ports        int   `json:"ports"`        // ports in all of them
	Clients      int   `json:"clients"`      // open connections
	Users        int   `json:"users"`        // uids holding connections or reservations
	Placeholders int   `json:"placeholders"` // placeholder sockets (hold mode)
	FDs          int64 `json:"fds"`          // descriptors held for clients
	FDLimit      int64 `json:"fd_limit"`     // descriptors clients may hold in all
}

// Status asks the broker for its state. Anyone may ask.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	resp, err := c.one(ctx, &wire.Request{Op: wire.OpStatus})
	if err != nil {
		return nil, err
	}
	var st Status
	if err := json.Unmarshal([]byte(resp.Msg), &st); err != nil {
		return nil, &Error{Op: "status", Code: WSAEINVAL, Msg: fmt.Sprintf("bad status from broker: %v", err), Err: err}
	}
	return &st, nil
}

// ForeignRanges parses Foreign: each range as {first, last} port.
func (k KernelListStatus) ForeignRanges() [][2]uint16 {
	var out [][2]uint16
	for _, f := range k.Foreign {
		var lo, hi uint16
		if n, _ := fmt.Sscanf(f, "%d-%d", &lo, &hi); n == 1 {
			hi = lo
		}
		if lo != 0 && hi >= lo {
			out = append(out, [2]uint16{lo, hi})
		}
	}
	return out
}
