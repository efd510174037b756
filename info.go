package portres

import (
	"fmt"

	"github.com/portres/portres/internal/wire"
)

// Kind tells runtime reservations from persistent ones.
type Kind uint8

// Kinds of reservation (the values the wire protocol carries).
const (
	Runtime    Kind = 1 // acquired by a process, ends with its connection (SIO_ACQUIRE_PORT_RESERVATION)
	Persistent Kind = 2 // created by an administrator, survives restarts (CreatePersistentTcpPortReservation)
)

// The wire protocol's kinds must stay these values.
var _ = [1]struct{}{}[int(Runtime)-int(wire.KindRuntime)+int(Persistent)-int(wire.KindPersistent)]

// String returns "runtime" or "persistent".
func (k Kind) String() string {
	if k == Persistent {
		return "persistent"
	}
	return "runtime"
}

// MarshalText makes Kind a JSON string.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// Info describes one reservation as Client.Show reports it.
//
// Command is another process's command line, as the broker read it from
// /proc (arguments joined by spaces, shortened): untrusted bytes
// that may hold escape sequences, newlines, bidi overrides or invalid
// UTF-8. Escape it before it reaches a terminal. encoding/json replaces
// each invalid UTF-8 byte with U+FFFD.
type Info struct {
	Proto     Proto    `json:"proto"`
	Kind      Kind     `json:"kind"`
	Start     uint16   `json:"start"`
	Count     uint16   `json:"count"`
	PID       int32    `json:"pid,omitempty"`     // runtime: the owner
	UID       uint32   `json:"uid"`               // owner (runtime) or creator (persistent)
	Command   string   `json:"command,omitempty"` // runtime: the owner's command line (see above)
	Token     uint64   `json:"token,omitempty"`   // only the caller's own, or persistent ones it may consume
	Mine      bool     `json:"mine"`              // acquired by the calling process
	Delegated bool     `json:"delegated"`         // handed to another process (portres run)
	Restored  bool     `json:"restored"`          // restored after a restart of the broker, waiting for its owner to reclaim it
	Bound     []uint16 `json:"bound"`             // ports bound from it right now
}

// MarshalText makes Proto a JSON string.
func (p Proto) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText reads "tcp" or "udp" (as ParseProto does).
func (p *Proto) UnmarshalText(b []byte) error {
	v, err := ParseProto(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// ShowEntry is one reservation in the stable JSON form of `portres show
// --json` and of portresd's /api/v1/reservations: tokens are strings
// ("0x…", 16 hex digits) because 64-bit numbers do not survive every JSON
// reader, and appear only where Info has one.
type ShowEntry struct {
	Proto     string   `json:"proto"`
	Kind      string   `json:"kind"`
	Start     uint16   `json:"start"`
	End       uint16   `json:"end"`
	Count     uint16   `json:"count"`
	PID       int32    `json:"pid,omitempty"`
	UID       uint32   `json:"uid"`
	Command   string   `json:"command,omitempty"`
	Delegated bool     `json:"delegated"`
	Restored  bool     `json:"restored,omitempty"`
	Bound     []uint16 `json:"bound"`
	Token     string   `json:"token,omitempty"`
}

// ShowEntries turns infos into their JSON form.
func ShowEntries(infos []Info) []ShowEntry {
	out := make([]ShowEntry, 0, len(infos))
	for _, i := range infos {
		e := ShowEntry{Proto: i.Proto.String(), Kind: i.Kind.String(), Start: i.Start,
			End: i.Start + i.Count - 1, Count: i.Count, PID: i.PID, UID: i.UID, Command: i.Command,
			Delegated: i.Delegated, Restored: i.Restored, Bound: i.Bound}
		if e.Bound == nil {
			e.Bound = []uint16{}
		}
		if i.Token != 0 {
			e.Token = fmt.Sprintf("%#016x", i.Token)
		}
		out = append(out, e)
	}
	return out
}
