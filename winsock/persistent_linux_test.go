package winsock

import (
	"net/netip"
	"testing"
)

// TestPersistentFunctions drives the iphlpapi-style functions through the
// broker: network-order StartPort, Win32 results, the token through a
// pointer, and consuming the token with ASSOCIATE + bind.
func TestPersistentFunctions(t *testing.T) {
	broker(t)
	var tok, again uint64
	if r := CreatePersistentUdpPortReservation(Htons(33000), 4, &tok); r != NO_ERROR || tok == 0 {
		t.Fatalf("create: %d, token %d", r, tok)
	}
	if r := CreatePersistentUdpPortReservation(Htons(33002), 4, &again); r != ERROR_SHARING_VIOLATION {
		t.Errorf("overlapping create: %d, want ERROR_SHARING_VIOLATION", r)
	}
	if r := CreatePersistentTcpPortReservation(0, 4, &again); r != ERROR_INVALID_PARAMETER {
		t.Errorf("zero start: %d, want ERROR_INVALID_PARAMETER", r)
	}
	if r := CreatePersistentTcpPortReservation(Htons(65534), 4, &again); r != ERROR_INVALID_PARAMETER {
		t.Errorf("past 65535: %d, want ERROR_INVALID_PARAMETER", r)
	}
	if r := LookupPersistentUdpPortReservation(Htons(33000), 4, &again); r != NO_ERROR || again != tok {
		t.Errorf("lookup: %d, token %d want %d", r, again, tok)
	}
	if r := LookupPersistentUdpPortReservation(Htons(33000), 3, &again); r != ERROR_NOT_FOUND {
		t.Errorf("lookup of another count: %d, want ERROR_NOT_FOUND", r)
	}
	if r := LookupPersistentTcpPortReservation(Htons(33000), 4, &again); r != ERROR_NOT_FOUND {
		t.Errorf("lookup of the other protocol: %d, want ERROR_NOT_FOUND", r)
	}

	s := socket(t, AF_INET, SOCK_DGRAM, IPPROTO_UDP)
	if _, err := s.WSAIoctl(SIO_ASSOCIATE_PORT_RESERVATION, tokenBytes(tok), nil, nil, nil); err != nil {
		t.Fatalf("associate the persistent token: %v", err)
	}
	if err := s.Bind(netip.MustParseAddrPort("0.0.0.0:0")); err != nil {
		t.Fatal(err)
	}
	ap, err := s.Getsockname()
	if err != nil || ap.Port() < 33000 || ap.Port() > 33003 {
		t.Fatalf("bound to %v %v, want a port of 33000-33003", ap, err)
	}
	if r := DeletePersistentUdpPortReservation(Htons(33000), 4); r != NO_ERROR {
		t.Errorf("delete: %d", r)
	}
	if r := DeletePersistentUdpPortReservation(Htons(33000), 4); r != ERROR_NOT_FOUND {
		t.Errorf("second delete: %d, want ERROR_NOT_FOUND", r)
	}
	if r := CreatePersistentTcpPortReservation(Htons(33000), 1, nil); r != ERROR_INVALID_PARAMETER {
		t.Errorf("nil token pointer: %d", r)
	}
}
