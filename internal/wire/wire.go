package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Magic and Version open every message.
const (
	Magic   = 'P'
	Version = 1
)

// MaxMessage is the largest datagram either side sends or accepts.
const MaxMessage = 64 << 10

// Op is a request's operation.
type Op uint8

// Operations. Each comment lists the request fields used and the answer.
const (
	OpAcquire Op = 1 + iota // Proto, Start (0 = wildcard), Count, Flags → Token, Start, Count
	// OpRelease: Token, Proto → Proto, Start, Count of the released
	// block. Ends the runtime reservation Token. Proto 0 releases it
	// whatever its protocol (portres.Client.Release sends 0). Proto 6
	// (TCP) or 17 (UDP) releases it only if the reservation is of that
	// protocol, as SIO_RELEASE_PORT_RESERVATION issued on a TCP or UDP
	// socket reaches only its own protocol's port pool: if it is of the
	// other protocol the broker answers WSAEINVAL (10022), with the
	// reservation's Proto, Start and Count in the answer, and releases
	// nothing. Any other Proto value is answered WSAEINVAL and releases
	// nothing. The checks, in this order, each answering with nothing
	// released: Proto is 0, 6 or 17 (WSAEINVAL); Token names a
	// reservation (WSAEINVAL); the caller may use it: a runtime one of
	// its own process, a persistent one only if it may consume
	// persistent reservations (WSAEACCES); its protocol is Proto when
	// Proto is not 0 (WSAEINVAL); it is a runtime reservation (WSAEINVAL
	// for a persistent one).
	OpRelease
	OpAssociate        // Token → Proto, Start, Count (checks the caller may consume it)
	OpBind             // Token, Addr, Port (0 = any), one fd → Port
	OpShow             // → Entries (several datagrams, More)
	OpCancel           // Target: cancels the in-flight request with that ID
	OpPersistentCreate // Proto, Start, Count → Token
	OpPersistentDelete // Proto, Start, Count
	OpPersistentLookup // Proto, Start, Count → Token
	OpDynamicShow      // Proto → Start, Count
	// OpDynamicSet: Proto, Start, Count, Flags → Proto, Start, Count.
	// Sets the range wildcard reservations of Proto are drawn from
	// (admins only: ERROR_ACCESS_DENIED; at least 255 ports, Start >=
	// 1025, end <= 65535: else ERROR_INVALID_PARAMETER). With FlagSystem
	// see there.
	OpDynamicSet
	OpStatus  // → Msg: the broker's status as JSON (portres.Status)
	OpReclaim // Token → Proto, Start, Count, Flags: takes back a runtime reservation restored after a broker restart
	opMax
)

var opNames = [...]string{"", "acquire", "release", "associate", "bind", "show", "cancel",
	"persistent create", "persistent delete", "persistent lookup", "dynamicport show", "dynamicport set", "status", "reclaim"}

// Valid reports whether o is an operation this version knows.
func (o Op) Valid() bool { return o > 0 && o < opMax }

// String returns the operation's name as used in error messages.
func (o Op) String() string {
	if o > 0 && o < opMax {
		return opNames[o]
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Request flags.
const (
	// FlagDelegate (OpAcquire): the ports will be bound by another process
	// (portres run). The broker keeps no placeholder sockets on them and
	// protects them from automatic assignment only.
	FlagDelegate uint16 = 1 << iota
	// FlagBind (OpAcquire): the request carries one socket, which the
	// broker binds to Port of the new block (0: any free port), on Addr,
	// in the same request; if that fails the block is released. The
	// answer carries the port too.
	FlagBind
	// FlagSystem (4, OpDynamicSet): also set the kernel's ephemeral port
	// range, net.ipv4.ip_local_port_range in the broker's network
	// namespace, to the same range, as netsh int ipv4 set dynamicport
	// does. That sysctl is one range for TCP and UDP, so the request
	// moves both protocols: Proto must be 0 (else ERROR_INVALID_PARAMETER)
	// and both protocols' portres ranges are set with the sysctl. The
	// broker writes the sysctl first; if the kernel refuses the range
	// (it must start at or above net.ipv4.ip_unprivileged_port_start)
	// the answer is ERROR_INVALID_PARAMETER and nothing changed; if the
	// broker may not write it, ERROR_ACCESS_DENIED and nothing changed.
	// On success the answer has Proto 0, Start and Count of the new
	// range, and Msg a JSON object with the ranges before the change,
	// ends inclusive:
	// {"kernel":{"start":S,"end":E},"tcp":{"start":S,"end":E},"udp":{"start":S,"end":E}}
	FlagSystem
	// FlagFleet (8; OpAcquire, OpPersistentCreate, OpPersistentDelete,
	// OpPersistentLookup, OpShow): the fleet's version of the operation,
	// for a broker that is a member of a fleet (portresd --etcd).
	// OpAcquire hands out a fleet lease: a block of the fleet range
	// unique across the fleet. The persistent operations work on fleet
	// persistent reservations, made on every member or none. OpShow
	// answers every member's reservations as JSON in Msg (fleet.Entry
	// objects, an array per datagram, More on all but the last). A
	// broker that is no fleet member answers WSAEOPNOTSUPP; a member cut
	// off from etcd answers WSAENETDOWN.
	FlagFleet
)

// Request is a client's message to the broker.
type Request struct {
	ID     uint32
	Op     Op
	Proto  uint8
	Flags  uint16
	Start  uint16
	Count  uint16
	Port   uint16
	Token  uint64
	Target uint32     // OpCancel: the ID to cancel
	Addr   netip.Addr // OpBind: local address; invalid = unspecified of the socket's family
}

// Response flags.
const (
	// More: further responses with the same ID follow.
	More uint16 = 1 << iota
	// NotExcluded (OpAcquire): the block is not kept out of the kernel's
	// automatic assignment (bind to port 0, connect), because the broker
	// may not write net.ipv4.ip_local_reserved_ports. Delegated ports are
	// then protected by nothing but the owner binding them first.
	NotExcluded
)

// Response is the broker's answer to one request.
type Response struct {
	ID      uint32
	Code    uint32 // 0 on success, else a portres.Errno value
	Flags   uint16
	Proto   uint8
	Start   uint16
	Count   uint16
	Port    uint16
	Token   uint64
	Msg     string
	Entries []Entry
}

// Kinds of reservation in Entry.Kind.
const (
	KindRuntime    uint8 = 1
	KindPersistent uint8 = 2
)

// Entry flags.
const (
	EntryDelegated uint16 = 1 << iota // runtime block handed to another process
	EntryMine                         // owned by the asking process
	EntryDeleted                      // persistent block deleted, ports still bound
	EntryRestored                     // restored after a broker restart, waiting for its owner to reclaim it
)

// Entry describes one reservation in a Show answer.
type Entry struct {
	Proto   uint8
	Kind    uint8
	Flags   uint16
	Start   uint16
	Count   uint16
	PID     int32  // owner (runtime); creator's pid is not kept for persistent
	UID     uint32 // owner's uid (runtime) or creator's (persistent)
	Token   uint64 // 0 unless the asker may see it (its own, or persistent)
	Command string // owner's command name
	Bound   []uint16
}

// ErrMalformed is wrapped by every decoding error.
var ErrMalformed = errors.New("malformed message")

const (
	reqFixed  = 2 + 1 + 1 + 2 + 4 + 2 + 2 + 2 + 8 + 4 + 1
	respFixed = 2 + 4 + 4 + 2 + 1 + 2 + 2 + 2 + 8 + 2 + 4
)

// AppendRequest appends the encoding of r to b.
func AppendRequest(b []byte, r *Request) []byte {
	b = append(b, Magic, Version, byte(r.Op), r.Proto)
	b = binary.LittleEndian.AppendUint16(b, r.Flags)
	b = binary.LittleEndian.AppendUint32(b, r.ID)
	b = binary.LittleEndian.AppendUint16(b, r.Start)
	b = binary.LittleEndian.AppendUint16(b, r.Count)
	b = binary.LittleEndian.AppendUint16(b, r.Port)
	b = binary.LittleEndian.AppendUint64(b, r.Token)
	b = binary.LittleEndian.AppendUint32(b, r.Target)
	switch {
	case !r.Addr.IsValid():
		b = append(b, 0)
	case r.Addr.Is4():
		a := r.Addr.As4()
		b = append(b, 4)
		b = append(b, a[:]...)
	default:
		a := r.Addr.As16()
		b = append(b, 16)
		b = append(b, a[:]...)
	}
	return b
}

// DecodeRequest parses one request datagram.
func DecodeRequest(b []byte) (*Request, error) {
	if len(b) < reqFixed {
		return nil, fmt.Errorf("%w: request of %d bytes, want at least %d", ErrMalformed, len(b), reqFixed)
	}
	if b[0] != Magic || b[1] != Version {
		return nil, fmt.Errorf("%w: bad magic/version %#x %d", ErrMalformed, b[0], b[1])
	}
	d := decoder{b: b[2:]}
	r := &Request{Op: Op(d.u8()), Proto: d.u8(), Flags: d.u16(), ID: d.u32(),
		Start: d.u16(), Count: d.u16(), Port: d.u16(), Token: d.u64(), Target: d.u32()}
	if r.Op == 0 || r.Op >= opMax {
		return nil, fmt.Errorf("%w: unknown operation %d", ErrMalformed, uint8(r.Op))
	}
	switch n := d.u8(); n {
	case 0:
	case 4:
		var a [4]byte
		copy(a[:], d.bytes(4))
		r.Addr = netip.AddrFrom4(a)
	case 16:
		var a [16]byte
		copy(a[:], d.bytes(16))
		r.Addr = netip.AddrFrom16(a)
	default:
		return nil, fmt.Errorf("%w: address length %d", ErrMalformed, n)
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(d.b))
	}
	return r, nil
}

// AppendResponse appends the encoding of r to b.
func AppendResponse(b []byte, r *Response) []byte {
	b = append(b, Magic, Version)
	b = binary.LittleEndian.AppendUint32(b, r.ID)
	b = binary.LittleEndian.AppendUint32(b, r.Code)
	b = binary.LittleEndian.AppendUint16(b, r.Flags)
	b = append(b, r.Proto)
	b = binary.LittleEndian.AppendUint16(b, r.Start)
	b = binary.LittleEndian.AppendUint16(b, r.Count)
	b = binary.LittleEndian.AppendUint16(b, r.Port)
	b = binary.LittleEndian.AppendUint64(b, r.Token)
	b = appendString(b, r.Msg)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(r.Entries)))
	for i := range r.Entries {
		b = appendEntry(b, &r.Entries[i])
	}
	return b
}

// EntrySize is the encoded size of e, for splitting Show answers. Bound
// ports travel as a bitmap over the block, so an entry never exceeds
// about 8 KiB plus its command.
func EntrySize(e *Entry) int { return entryMin + len(e.Command) + bitmapLen(e) }

func bitmapLen(e *Entry) int {
	if len(e.Bound) == 0 {
		return 0
	}
	return (int(e.Count) + 7) / 8
}

// ResponseSize is the encoded size of r without entries.
func ResponseSize(r *Response) int { return respFixed + len(r.Msg) }

func appendEntry(b []byte, e *Entry) []byte {
	b = append(b, e.Proto, e.Kind)
	b = binary.LittleEndian.AppendUint16(b, e.Flags)
	b = binary.LittleEndian.AppendUint16(b, e.Start)
	b = binary.LittleEndian.AppendUint16(b, e.Count)
	b = binary.LittleEndian.AppendUint32(b, uint32(e.PID))
	b = binary.LittleEndian.AppendUint32(b, e.UID)
	b = binary.LittleEndian.AppendUint64(b, e.Token)
	b = appendString(b, e.Command)
	n := bitmapLen(e)
	b = binary.LittleEndian.AppendUint16(b, uint16(n))
	at := len(b)
	b = append(b, make([]byte, n)...)
	for _, p := range e.Bound {
		if off := int(p) - int(e.Start); off >= 0 && off < int(e.Count) {
			b[at+off/8] |= 1 << (off % 8)
		}
	}
	return b
}

func appendString(b []byte, s string) []byte {
	if len(s) > 0xffff {
		s = s[:0xffff]
	}
	b = binary.LittleEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// DecodeResponse parses one response datagram.
func DecodeResponse(b []byte) (*Response, error) {
	if len(b) < respFixed {
		return nil, fmt.Errorf("%w: response of %d bytes, want at least %d", ErrMalformed, len(b), respFixed)
	}
	if b[0] != Magic || b[1] != Version {
		return nil, fmt.Errorf("%w: bad magic/version %#x %d", ErrMalformed, b[0], b[1])
	}
	d := decoder{b: b[2:]}
	r := &Response{ID: d.u32(), Code: d.u32(), Flags: d.u16(), Proto: d.u8(), Start: d.u16(), Count: d.u16(),
		Port: d.u16(), Token: d.u64()}
	r.Msg = d.str()
	n := d.u32()
	if d.err == nil && uint64(n)*entryMin > uint64(len(d.b)) {
		return nil, fmt.Errorf("%w: %d entries in %d bytes", ErrMalformed, n, len(d.b))
	}
	for i := uint32(0); i < n && d.err == nil; i++ {
		e := Entry{Proto: d.u8(), Kind: d.u8(), Flags: d.u16(), Start: d.u16(), Count: d.u16(),
			PID: int32(d.u32()), UID: d.u32(), Token: d.u64()}
		e.Command = d.str()
		bm := d.bytes(int(d.u16()))
		if d.err == nil && len(bm) != 0 && len(bm) != (int(e.Count)+7)/8 {
			return nil, fmt.Errorf("%w: bound bitmap of %d bytes for %d ports", ErrMalformed, len(bm), e.Count)
		}
		for off := 0; off < len(bm)*8 && d.err == nil; off++ {
			if bm[off/8]&(1<<(off%8)) == 0 {
				continue
			}
			if off >= int(e.Count) || int(e.Start)+off > 65535 {
				return nil, fmt.Errorf("%w: bound port outside the block", ErrMalformed)
			}
			e.Bound = append(e.Bound, e.Start+uint16(off))
		}
		if len(bm) != 0 && len(e.Bound) == 0 {
			return nil, fmt.Errorf("%w: empty bound bitmap", ErrMalformed)
		}
		r.Entries = append(r.Entries, e)
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(d.b))
	}
	return r, nil
}

const entryMin = 2 + 2 + 2 + 2 + 4 + 4 + 8 + 2 + 2

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil {
		return make([]byte, n)
	}
	if len(d.b) < n {
		d.err = fmt.Errorf("%w: truncated", ErrMalformed)
		d.b = nil
		return make([]byte, n)
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) u8() uint8   { return d.bytes(1)[0] }
func (d *decoder) u16() uint16 { return binary.LittleEndian.Uint16(d.bytes(2)) }
func (d *decoder) u32() uint32 { return binary.LittleEndian.Uint32(d.bytes(4)) }
func (d *decoder) u64() uint64 { return binary.LittleEndian.Uint64(d.bytes(8)) }
func (d *decoder) str() string { return string(d.bytes(int(d.u16()))) }
