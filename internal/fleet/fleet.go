//go:build linux

// Package fleet joins portresd brokers of several hosts through etcd:
// fleet persistent reservations (a block reserved on every member, with
// one token), fleet leases (blocks of a fleet range unique across the
// fleet, held through etcd leases), and a fleet-wide view of who holds
// what. etcd is the source of truth; each member keeps enforcing what it
// knew when it is cut off, refuses new fleet operations, and reconciles
// when it is back.
//
// # Keys (under the prefix, "/portres/" by default)
//
//	members/NAME                    the member: host, pid, version, fleet range (under its lease)
//	blocks/PROTO/START-COUNT        a fleet persistent block: token, creator, time (no lease)
//	lock/blocks                     bumped by every create and delete: they take turns through it
//	prepare/ID                      a create in progress, voted on by every member (short lease)
//	votes/ID/NAME                   a member's vote: "ok" or why not (the voter's lease)
//	ports/PROTO/PORT                one key per port of every fleet lease (the holder member's lease)
//	show/NAME                       the member's reservations, for show --fleet (its lease)
//
// Ports are five-digit decimal numbers, so that keys sort by port and a
// block is a key range: a fleet lease is allocated by one transaction
// whose only comparison is "no key in [ports/P/START, ports/P/END+1)",
// over per-port keys, never a compare-and-swap of the whole range.
//
// This package holds what the broker sees of a fleet: the types, the
// errors, Local (what a member asks of its broker) and Member (what the
// broker asks of its membership). The implementation on etcd is package
// etcdfleet, which only portresd links: the broker, and Go test suites
// that run one in process, do not carry an etcd client.
package fleet

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/pool"
)

// Config says how a member reaches etcd and what it is in the fleet.
type Config struct {
	Endpoints []string // etcd client URLs
	Prefix    string   // key prefix, "/portres/" if empty; ends with "/"
	// TLS, as etcd clients take it: a CA to verify the servers, and a
	// client certificate and key if the servers ask for one.
	CACert, Cert, Key string
	// Username and Password for etcd's authentication, if enabled.
	Username, Password string
	Name               string        // this member's name, unique in the fleet (default: the host name)
	RangeStart         uint16        // the fleet range, kept out of local use; 0: no fleet leases
	RangeEnd           uint16        // inclusive
	TTL                time.Duration // the member's etcd lease: how long after its death its leases last (default 10 s)
	// UserPorts caps the ports of fleet leases one uid (not root or an
	// admin) may hold through this member: the fleet range is shared by
	// every user of every member. 0: a quarter of the range; -1: none.
	UserPorts int
	Version   string // portresd's version, shown in status --fleet
}

// InRange reports whether the block lies in the fleet range.
func (c Config) InRange(start, count uint16) bool {
	return c.RangeStart != 0 && start >= c.RangeStart && int(start)+int(count)-1 <= int(c.RangeEnd)
}

// Overlaps reports whether the block touches the fleet range.
func (c Config) Overlaps(start, count uint16) bool {
	return c.RangeStart != 0 && int(start) <= int(c.RangeEnd) && int(start)+int(count)-1 >= int(c.RangeStart)
}

// MaxLeasePorts is the most ports one fleet lease may hold: its
// transaction puts a key per port, and etcd refuses transactions of more
// than 128 operations by default (--max-txn-ops).
const MaxLeasePorts = 100

// DefaultTTL is the etcd lease TTL of a member and its fleet leases.
const DefaultTTL = 10 * time.Second

// ErrCutOff is wrapped by the errors of fleet operations refused because
// the member cannot reach etcd.
var ErrCutOff = errors.New("cut off from etcd")

// ErrNoVote is wrapped by the error of a fleet create that a member named
// to vote on it did not answer in time (cut off from etcd, or stopped):
// nothing was created. The member asking still reaches etcd (else its
// error is ErrCutOff).
var ErrNoVote = errors.New("a member did not vote")

// Block is a fleet persistent reservation.
type Block struct {
	Proto   uint8     `json:"proto"`
	Start   uint16    `json:"start"`
	Count   uint16    `json:"count"`
	Token   uint64    `json:"token"`
	UID     uint32    `json:"uid"`
	Created time.Time `json:"created"`
	By      string    `json:"by"` // the member that created it
}

// End is the block's last port.
func (b Block) End() int { return int(b.Start) + int(b.Count) - 1 }

// Overlaps reports whether b and o share a port of the same protocol.
func (b Block) Overlaps(o Block) bool {
	return b.Proto == o.Proto && int(b.Start) <= o.End() && int(o.Start) <= b.End()
}

// String is "PROTO START-END" ("PROTO PORT" for one port).
func (b Block) String() string {
	return portres.Proto(b.Proto).String() + " " + pool.Block{Start: b.Start, Count: b.Count}.String()
}

// Local is what a member asks of its broker.
type Local interface {
	// PrepareBlock reserves b tentatively on this host, or says why it
	// cannot: it collides with a local reservation or a port in use.
	PrepareBlock(b Block) error
	// CommitBlock makes a prepared (or new, at join) block a fleet
	// persistent reservation of this host, recorded to survive a restart.
	CommitBlock(b Block) error
	// AbortBlock drops a prepared block that the fleet did not create.
	AbortBlock(b Block)
	// RemoveBlock drops a deleted fleet block; sockets bound stay bound.
	RemoveBlock(b Block)
	// FleetBlocks are the fleet blocks this host enforces now.
	FleetBlocks() []Block
	// LeasesLost is told that the member's etcd lease may have lapsed:
	// its fleet leases are gone fleet-wide, so the host drops them.
	LeasesLost(reason string)
	// Entries are this host's reservations for the fleet view.
	Entries() []Entry
}

// Errors of the fleet persistent functions, with the Win32 meaning of
// their local twins.
var (
	ErrOverlap  = errors.New("overlaps a fleet reservation")       // ERROR_SHARING_VIOLATION
	ErrCollides = errors.New("collides with use on a member")      // ERROR_SHARING_VIOLATION
	ErrNotFound = errors.New("no fleet reservation is that block") // ERROR_NOT_FOUND
	ErrConflict = errors.New("another fleet change came first")    // retry
)

// ErrTaken is wrapped by the error of a fleet lease whose ports another
// lease holds (WSAEADDRINUSE), and ErrNoRoom by that of a wildcard lease
// that fits nowhere in the fleet range (WSAENOBUFS).
var (
	ErrTaken  = errors.New("held by a fleet lease")
	ErrNoRoom = errors.New("no free block of that size in the fleet range")
)

// MemberInfo is a member's registration, as status --fleet shows it.
type MemberInfo = portres.FleetMember

// Status is the member's view of the fleet, for status --fleet.
type Status = portres.FleetStatus

// Entry is one reservation of a member in the fleet view: what show
// shows, without the token (tokens never leave their host).
type Entry = portres.FleetEntry

// Member is the broker's membership of a fleet (etcdfleet.Member).
type Member interface {
	Name() string
	// Range is the fleet range, (0, 0) if none.
	Range() (lo, hi uint16)
	InRange(start, count uint16) bool
	Overlaps(start, count uint16) bool
	Candidate(proto uint8, count uint16, after uint16, free func(start uint16) bool) (uint16, error)
	Allocate(ctx context.Context, proto uint8, start, count uint16, pid int32) (ticket uint64, err error)
	Free(ctx context.Context, proto uint8, start, count uint16, ticket uint64) error
	Live(proto uint8, start, count uint16, ticket uint64) bool
	CreateBlock(ctx context.Context, proto uint8, start, count uint16, uid uint32) (Block, error)
	DeleteBlock(ctx context.Context, proto uint8, start, count uint16) (Block, error)
	LookupBlock(proto uint8, start, count uint16) (Block, error)
	Blocks() []Block
	Members() []MemberInfo
	Status() Status
	Publish()
	Show(ctx context.Context) ([]Entry, error)
	// Close leaves the fleet: the member's registration and fleet leases
	// go at once.
	Close()
}

// JoinFunc joins the fleet of cfg before the broker serves (etcdfleet.Join).
type JoinFunc func(ctx context.Context, cfg Config, local Local, log *slog.Logger) (Member, error)
