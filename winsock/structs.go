package winsock

import (
	"encoding/binary"
	"fmt"
)

// Sizes of the structures, as sizeof gives them in C.
const (
	SizeofInetPortRange               = 4
	SizeofInetPortReservationToken    = 8
	SizeofInetPortReservationInstance = 16
)

// The structures are laid out as the C compiler lays them out in memory
// on this host (x86 and arm64: little endian, natural alignment), which
// is what WSAIoctl reads and writes through its buffer pointers.
var hostOrder = binary.NativeEndian

// INET_PORT_RANGE is the input of SIO_ACQUIRE_PORT_RESERVATION: a block
// of NumberOfPorts ports from StartPort, or a block the system places in
// the dynamic port range if StartPort is 0.
//
// As in mstcpip.h, StartPort holds the port in network byte order: a
// program ported from C writes Htons(5000) and reads Ntohs(StartPort).
// NumberOfPorts is in host order. MarshalBinary writes the 4 bytes of
// the C structure.
type INET_PORT_RANGE struct {
	StartPort     uint16 // network byte order
	NumberOfPorts uint16 // host byte order
}

// INET_PORT_RESERVATION_TOKEN identifies a reservation (8 bytes); it is
// the input of SIO_RELEASE_PORT_RESERVATION and
// SIO_ASSOCIATE_PORT_RESERVATION.
type INET_PORT_RESERVATION_TOKEN struct {
	Token uint64
}

// INET_PORT_RESERVATION_INSTANCE is the output of
// SIO_ACQUIRE_PORT_RESERVATION: the block granted (at offset 0) and its
// token (at offset 8); bytes 4 to 7 are padding.
type INET_PORT_RESERVATION_INSTANCE struct {
	Reservation INET_PORT_RANGE
	Token       INET_PORT_RESERVATION_TOKEN
}

// shortBuffer is the error of a decoder given too few bytes.
func shortBuffer(what string, got, want int) error {
	return newError("decode "+what, WSAEINVAL, fmt.Sprintf("buffer of %d bytes, the structure needs %d", got, want))
}

// AppendBinary appends the 4 bytes of r to b.
func (r INET_PORT_RANGE) AppendBinary(b []byte) ([]byte, error) {
	b = hostOrder.AppendUint16(b, r.StartPort)
	return hostOrder.AppendUint16(b, r.NumberOfPorts), nil
}

// MarshalBinary returns the 4 bytes of r.
func (r INET_PORT_RANGE) MarshalBinary() ([]byte, error) {
	return r.AppendBinary(make([]byte, 0, SizeofInetPortRange))
}

// UnmarshalBinary reads r from the first 4 bytes of b; bytes past the
// structure are ignored, as WSAIoctl ignores them. Returns an error with
// WSAEINVAL if b is shorter.
func (r *INET_PORT_RANGE) UnmarshalBinary(b []byte) error {
	if len(b) < SizeofInetPortRange {
		return shortBuffer("INET_PORT_RANGE", len(b), SizeofInetPortRange)
	}
	r.StartPort = hostOrder.Uint16(b[0:])
	r.NumberOfPorts = hostOrder.Uint16(b[2:])
	return nil
}

// AppendBinary appends the 8 bytes of t to b.
func (t INET_PORT_RESERVATION_TOKEN) AppendBinary(b []byte) ([]byte, error) {
	return hostOrder.AppendUint64(b, t.Token), nil
}

// MarshalBinary returns the 8 bytes of t.
func (t INET_PORT_RESERVATION_TOKEN) MarshalBinary() ([]byte, error) {
	return t.AppendBinary(make([]byte, 0, SizeofInetPortReservationToken))
}

// UnmarshalBinary reads t from the first 8 bytes of b; bytes past the
// structure are ignored. Returns an error with WSAEINVAL if b is shorter.
func (t *INET_PORT_RESERVATION_TOKEN) UnmarshalBinary(b []byte) error {
	if len(b) < SizeofInetPortReservationToken {
		return shortBuffer("INET_PORT_RESERVATION_TOKEN", len(b), SizeofInetPortReservationToken)
	}
	t.Token = hostOrder.Uint64(b)
	return nil
}

// AppendBinary appends the 16 bytes of i to b, with zero padding.
func (i INET_PORT_RESERVATION_INSTANCE) AppendBinary(b []byte) ([]byte, error) {
	b, _ = i.Reservation.AppendBinary(b)
	b = append(b, 0, 0, 0, 0)
	return i.Token.AppendBinary(b)
}

// MarshalBinary returns the 16 bytes of i.
func (i INET_PORT_RESERVATION_INSTANCE) MarshalBinary() ([]byte, error) {
	return i.AppendBinary(make([]byte, 0, SizeofInetPortReservationInstance))
}

// UnmarshalBinary reads i from the first 16 bytes of b, ignoring the
// padding and any bytes past the structure. Returns an error with
// WSAEINVAL if b is shorter.
func (i *INET_PORT_RESERVATION_INSTANCE) UnmarshalBinary(b []byte) error {
	if len(b) < SizeofInetPortReservationInstance {
		return shortBuffer("INET_PORT_RESERVATION_INSTANCE", len(b), SizeofInetPortReservationInstance)
	}
	if err := i.Reservation.UnmarshalBinary(b[0:4]); err != nil {
		return err
	}
	return i.Token.UnmarshalBinary(b[8:16])
}

// put writes the 16 bytes of i at the start of b, which must be long
// enough.
func (i INET_PORT_RESERVATION_INSTANCE) put(b []byte) {
	i.AppendBinary(b[:0])
}
