package winsock

import (
	"unsafe"

	"golang.org/x/sys/windows"
)

var (
	iphlpapi                = windows.NewLazySystemDLL("iphlpapi.dll")
	procCreatePersistentTcp = iphlpapi.NewProc("CreatePersistentTcpPortReservation")
	procCreatePersistentUdp = iphlpapi.NewProc("CreatePersistentUdpPortReservation")
	procDeletePersistentTcp = iphlpapi.NewProc("DeletePersistentTcpPortReservation")
	procDeletePersistentUdp = iphlpapi.NewProc("DeletePersistentUdpPortReservation")
	procLookupPersistentTcp = iphlpapi.NewProc("LookupPersistentTcpPortReservation")
	procLookupPersistentUdp = iphlpapi.NewProc("LookupPersistentUdpPortReservation")
)

func pick(proto int, tcp, udp *windows.LazyProc) *windows.LazyProc {
	if proto == IPPROTO_UDP {
		return udp
	}
	return tcp
}

func createPersistent(proto int, start, count uint16, token *uint64) uint32 {
	r, _, _ := pick(proto, procCreatePersistentTcp, procCreatePersistentUdp).Call(uintptr(start), uintptr(count), uintptr(unsafe.Pointer(token)))
	return uint32(r)
}

func deletePersistent(proto int, start, count uint16) uint32 {
	r, _, _ := pick(proto, procDeletePersistentTcp, procDeletePersistentUdp).Call(uintptr(start), uintptr(count))
	return uint32(r)
}

func lookupPersistent(proto int, start, count uint16, token *uint64) uint32 {
	r, _, _ := pick(proto, procLookupPersistentTcp, procLookupPersistentUdp).Call(uintptr(start), uintptr(count), uintptr(unsafe.Pointer(token)))
	return uint32(r)
}
