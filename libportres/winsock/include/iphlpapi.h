/*
 * iphlpapi.h for libportres-winsock: the persistent port reservation
 * functions of iphlpapi.dll. StartPort is in network byte order; the
 * result is a Win32 code: NO_ERROR, ERROR_INVALID_PARAMETER (zero start
 * or count, past 65535, NULL Token), ERROR_ACCESS_DENIED (create and
 * delete need root or portresd's admin group), ERROR_SHARING_VIOLATION
 * (overlaps a reservation or a port in use), ERROR_NOT_FOUND (lookup and
 * delete: no persistent reservation is exactly that block).
 */
#ifndef _PORTRES_IPHLPAPI_H
#define _PORTRES_IPHLPAPI_H
#include "_portres_base.h"

_PORTRES_BEGIN
ULONG CreatePersistentTcpPortReservation(USHORT StartPort, USHORT NumberOfPorts, PULONG64 Token);
ULONG CreatePersistentUdpPortReservation(USHORT StartPort, USHORT NumberOfPorts, PULONG64 Token);
ULONG DeletePersistentTcpPortReservation(USHORT StartPort, USHORT NumberOfPorts);
ULONG DeletePersistentUdpPortReservation(USHORT StartPort, USHORT NumberOfPorts);
ULONG LookupPersistentTcpPortReservation(USHORT StartPort, USHORT NumberOfPorts, PULONG64 Token);
ULONG LookupPersistentUdpPortReservation(USHORT StartPort, USHORT NumberOfPorts, PULONG64 Token);
_PORTRES_END
#endif
