package winsock

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
)

// Sizes of the socket address structures, as sizeof gives them in C on
// Linux and on Windows alike.
const (
	SizeofSockaddrIn  = 16 // sockaddr_in
	SizeofSockaddrIn6 = 28 // sockaddr_in6
)

// BindSockaddr binds the socket to name, a socket address laid out as C
// lays out sockaddr_in or sockaddr_in6 on this platform (family in host
// order at offset 0, port in network order at 2), as bind(s, name,
// namelen) does with namelen = len(name). It is Bind for code ported
// from C that builds its addresses by hand; the rules are those of
// Windows' bind: WSAEFAULT if name is shorter than a sockaddr_in, shorter
// than a sockaddr_in6 for AF_INET6, or of another family than the
// socket's. After SIO_ASSOCIATE_PORT_RESERVATION the port comes from the
// reservation, as with Bind.
func (s *Socket) BindSockaddr(name []byte) error {
	const op = "bind"
	if s == nil {
		return newError(op, WSAENOTSOCK, "nil Socket")
	}
	family, err := s.family(op)
	if err != nil {
		return err
	}
	addr, nameFamily, err := parseSockaddr(op, name)
	if err != nil {
		return err
	}
	if nameFamily != family {
		return newError(op, WSAEFAULT, fmt.Sprintf("an address of family %d on a socket of family %d", nameFamily, family))
	}
	return s.bind(addr)
}

// parseSockaddr decodes a sockaddr_in or sockaddr_in6; WSAEFAULT if name
// is too short for its family.
func parseSockaddr(op string, name []byte) (netip.AddrPort, int, error) {
	if len(name) < SizeofSockaddrIn {
		return netip.AddrPort{}, 0, newError(op, WSAEFAULT, fmt.Sprintf("the address (%d bytes) is shorter than a sockaddr_in (%d)", len(name), SizeofSockaddrIn))
	}
	family := int(hostOrder.Uint16(name))
	port := binary.BigEndian.Uint16(name[2:])
	switch family {
	case AF_INET:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(name[4:8])), port), family, nil
	case AF_INET6:
		if len(name) < SizeofSockaddrIn6 {
			return netip.AddrPort{}, 0, newError(op, WSAEFAULT, fmt.Sprintf("the address (%d bytes) is too short for its family AF_INET6 (a sockaddr_in6 is %d)", len(name), SizeofSockaddrIn6))
		}
		ip := netip.AddrFrom16([16]byte(name[8:24]))
		if scope := hostOrder.Uint32(name[24:]); scope != 0 {
			ip = ip.WithZone(strconv.FormatUint(uint64(scope), 10))
		}
		return netip.AddrPortFrom(ip, port), family, nil
	}
	return netip.AddrPort{}, family, nil
}
