package winsock

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// The vectors are the bytes a C program has in memory on a little-endian
// host, which every Windows target is.
func requireLittleEndian(t testing.TB) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("the byte vectors are those of a little-endian host")
	}
}

func TestHtons(t *testing.T) {
	requireLittleEndian(t)
	if got := Htons(5000); got != 0x8813 {
		t.Errorf("Htons(5000) = %#x, want 0x8813", got)
	}
	if got := Ntohs(0x8813); got != 5000 {
		t.Errorf("Ntohs(0x8813) = %d, want 5000", got)
	}
	for _, p := range []uint16{0, 1, 80, 0xff00, 65535} {
		if Ntohs(Htons(p)) != p {
			t.Errorf("Ntohs(Htons(%d)) = %d", p, Ntohs(Htons(p)))
		}
	}
}

func TestINET_PORT_RANGE(t *testing.T) {
	requireLittleEndian(t)
	r := INET_PORT_RANGE{StartPort: Htons(5000), NumberOfPorts: 20}
	want := []byte{0x13, 0x88, 0x14, 0x00} // 5000 big endian, 20 little endian
	got, err := r.MarshalBinary()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("MarshalBinary = % x, %v; want % x", got, err, want)
	}
	var back INET_PORT_RANGE
	if err := back.UnmarshalBinary(append(want, 0xEE)); err != nil || back != r {
		t.Errorf("UnmarshalBinary = %+v, %v; want %+v (trailing bytes ignored)", back, err, r)
	}
	if err := back.UnmarshalBinary(want[:3]); !errors.Is(err, WSAEINVAL) {
		t.Errorf("UnmarshalBinary of 3 bytes: %v, want WSAEINVAL", err)
	}
}

func TestINET_PORT_RESERVATION_TOKEN(t *testing.T) {
	requireLittleEndian(t)
	tok := INET_PORT_RESERVATION_TOKEN{Token: 0x0102030405060708}
	want := []byte{8, 7, 6, 5, 4, 3, 2, 1}
	got, err := tok.MarshalBinary()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("MarshalBinary = % x, %v; want % x", got, err, want)
	}
	var back INET_PORT_RESERVATION_TOKEN
	if err := back.UnmarshalBinary(want); err != nil || back != tok {
		t.Errorf("UnmarshalBinary = %+v, %v", back, err)
	}
	if err := back.UnmarshalBinary(want[:7]); !errors.Is(err, WSAEINVAL) {
		t.Errorf("UnmarshalBinary of 7 bytes: %v, want WSAEINVAL", err)
	}
}

func TestINET_PORT_RESERVATION_INSTANCE(t *testing.T) {
	requireLittleEndian(t)
	in := INET_PORT_RESERVATION_INSTANCE{
		Reservation: INET_PORT_RANGE{StartPort: Htons(49152), NumberOfPorts: 0x0102},
		Token:       INET_PORT_RESERVATION_TOKEN{Token: 0xfedcba9876543210},
	}
	want := []byte{
		0xc0, 0x00, // StartPort 49152 in network order
		0x02, 0x01, // NumberOfPorts 258
		0, 0, 0, 0, // padding
		0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe, // Token at offset 8
	}
	got, err := in.MarshalBinary()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("MarshalBinary =\n% x, %v; want\n% x", got, err, want)
	}
	withPadding := bytes.Clone(want)
	copy(withPadding[4:8], []byte{0xAA, 0xBB, 0xCC, 0xDD})
	var back INET_PORT_RESERVATION_INSTANCE
	if err := back.UnmarshalBinary(withPadding); err != nil || back != in {
		t.Errorf("UnmarshalBinary = %+v, %v; want %+v (padding ignored)", back, err, in)
	}
	if err := back.UnmarshalBinary(want[:15]); !errors.Is(err, WSAEINVAL) {
		t.Errorf("UnmarshalBinary of 15 bytes: %v, want WSAEINVAL", err)
	}
	buf := bytes.Repeat([]byte{0xFF}, 20)
	in.put(buf)
	if !bytes.Equal(buf[:16], want) || !bytes.Equal(buf[16:], []byte{0xFF, 0xFF, 0xFF, 0xFF}) {
		t.Errorf("put wrote % x, want % x and the rest untouched", buf, want)
	}
	if sz := len(want); sz != SizeofInetPortReservationInstance {
		t.Errorf("size %d", sz)
	}
}

// The decoders accept any input of at least the structure's size and
// give back what they read when encoded again.
func FuzzUnmarshalINET_PORT_RANGE(f *testing.F) {
	f.Add([]byte{0x13, 0x88, 0x14, 0x00})
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		var r INET_PORT_RANGE
		if err := r.UnmarshalBinary(b); err != nil {
			if len(b) >= SizeofInetPortRange {
				t.Fatalf("rejected %d bytes: %v", len(b), err)
			}
			return
		}
		out, _ := r.MarshalBinary()
		if !bytes.Equal(out, b[:SizeofInetPortRange]) {
			t.Fatalf("round trip % x -> % x", b[:4], out)
		}
	})
}

func FuzzUnmarshalINET_PORT_RESERVATION_TOKEN(f *testing.F) {
	f.Add([]byte{8, 7, 6, 5, 4, 3, 2, 1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var tok INET_PORT_RESERVATION_TOKEN
		if err := tok.UnmarshalBinary(b); err != nil {
			if len(b) >= SizeofInetPortReservationToken {
				t.Fatalf("rejected %d bytes: %v", len(b), err)
			}
			return
		}
		out, _ := tok.MarshalBinary()
		if !bytes.Equal(out, b[:SizeofInetPortReservationToken]) {
			t.Fatalf("round trip % x -> % x", b[:8], out)
		}
	})
}

func FuzzUnmarshalINET_PORT_RESERVATION_INSTANCE(f *testing.F) {
	f.Add([]byte{0xc0, 0, 2, 1, 0, 0, 0, 0, 0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe})
	f.Add(bytes.Repeat([]byte{0xFF}, 17))
	f.Fuzz(func(t *testing.T, b []byte) {
		var in INET_PORT_RESERVATION_INSTANCE
		if err := in.UnmarshalBinary(b); err != nil {
			if len(b) >= SizeofInetPortReservationInstance {
				t.Fatalf("rejected %d bytes: %v", len(b), err)
			}
			return
		}
		out, _ := in.MarshalBinary()
		want := bytes.Clone(b[:SizeofInetPortReservationInstance])
		clear(want[4:8]) // padding is written as zeros
		if !bytes.Equal(out, want) {
			t.Fatalf("round trip % x -> % x", want, out)
		}
	})
}
