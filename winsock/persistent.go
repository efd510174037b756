package winsock

// The persistent reservation functions of iphlpapi.dll
// (CreatePersistentTcpPortReservation and its siblings), with the Windows
// signatures: StartPort is in network byte order (Htons(5000)), the result
// is a Win32 code (NO_ERROR, ERROR_INVALID_PARAMETER, ERROR_ACCESS_DENIED,
// ERROR_SHARING_VIOLATION, ERROR_NOT_FOUND) and the token comes back
// through a pointer. On Linux they go to portresd, whose rules are those
// of Windows: creating and deleting need root or the broker's admin
// group; lookup is open to all.

// Win32 result codes of the persistent functions.
const (
	NO_ERROR                = uint32(0)
	ERROR_ACCESS_DENIED     = uint32(5)
	ERROR_SHARING_VIOLATION = uint32(32)
	ERROR_INVALID_PARAMETER = uint32(87)
	ERROR_NOT_FOUND         = uint32(1168)
)

// CreatePersistentTcpPortReservation reserves NumberOfPorts TCP ports from
// StartPort (network byte order) persistently and stores the token in
// *Token.
func CreatePersistentTcpPortReservation(StartPort, NumberOfPorts uint16, Token *uint64) uint32 {
	return createPersistent(IPPROTO_TCP, StartPort, NumberOfPorts, Token)
}

// CreatePersistentUdpPortReservation is CreatePersistentTcpPortReservation
// for UDP.
func CreatePersistentUdpPortReservation(StartPort, NumberOfPorts uint16, Token *uint64) uint32 {
	return createPersistent(IPPROTO_UDP, StartPort, NumberOfPorts, Token)
}

// DeletePersistentTcpPortReservation deletes the persistent TCP
// reservation that is exactly StartPort (network byte order) and
// NumberOfPorts.
func DeletePersistentTcpPortReservation(StartPort, NumberOfPorts uint16) uint32 {
	return deletePersistent(IPPROTO_TCP, StartPort, NumberOfPorts)
}

// DeletePersistentUdpPortReservation is DeletePersistentTcpPortReservation
// for UDP.
func DeletePersistentUdpPortReservation(StartPort, NumberOfPorts uint16) uint32 {
	return deletePersistent(IPPROTO_UDP, StartPort, NumberOfPorts)
}

// LookupPersistentTcpPortReservation stores in *Token the token of the
// persistent TCP reservation that is exactly StartPort (network byte
// order) and NumberOfPorts.
func LookupPersistentTcpPortReservation(StartPort, NumberOfPorts uint16, Token *uint64) uint32 {
	return lookupPersistent(IPPROTO_TCP, StartPort, NumberOfPorts, Token)
}

// LookupPersistentUdpPortReservation is LookupPersistentTcpPortReservation
// for UDP.
func LookupPersistentUdpPortReservation(StartPort, NumberOfPorts uint16, Token *uint64) uint32 {
	return lookupPersistent(IPPROTO_UDP, StartPort, NumberOfPorts, Token)
}
