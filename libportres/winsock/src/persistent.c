/*
 * persistent.c: Create/Delete/LookupPersistent{Tcp,Udp}PortReservation,
 * as iphlpapi.dll has them: StartPort in network byte order, a Win32
 * result. They need no WSAStartup (iphlpapi is not Winsock) and use the
 * process's shared broker connection.
 */
#include "ws.h"
#include "iphlpapi.h"

enum which { CREATE, DELETE, LOOKUP };

static ULONG call(enum which w, int proto, USHORT start, USHORT count, PULONG64 token)
{
	if (w != DELETE && !token)
		return ERROR_INVALID_PARAMETER;
	portres_error err;
	portres_client *c = ws_shared(&err);
	if (!c) {
		ws_fail_err(&err);
		return (ULONG)err.code;
	}
	uint64_t t = 0;
	int code;
	switch (w) {
	case CREATE: code = portres_persistent_create(c, proto, ntohs(start), count, &t, &err); break;
	case DELETE: code = portres_persistent_delete(c, proto, ntohs(start), count, &err); break;
	default: code = portres_persistent_lookup(c, proto, ntohs(start), count, &t, &err); break;
	}
	if (code) {
		ws_shared_broken(c, code);
		ws_fail_err(&err);
		return (ULONG)code;
	}
	if (token)
		*token = t;
	return NO_ERROR;
}

ULONG CreatePersistentTcpPortReservation(USHORT s, USHORT n, PULONG64 t) { return call(CREATE, PORTRES_TCP, s, n, t); }
ULONG CreatePersistentUdpPortReservation(USHORT s, USHORT n, PULONG64 t) { return call(CREATE, PORTRES_UDP, s, n, t); }
ULONG DeletePersistentTcpPortReservation(USHORT s, USHORT n) { return call(DELETE, PORTRES_TCP, s, n, NULL); }
ULONG DeletePersistentUdpPortReservation(USHORT s, USHORT n) { return call(DELETE, PORTRES_UDP, s, n, NULL); }
ULONG LookupPersistentTcpPortReservation(USHORT s, USHORT n, PULONG64 t) { return call(LOOKUP, PORTRES_TCP, s, n, t); }
ULONG LookupPersistentUdpPortReservation(USHORT s, USHORT n, PULONG64 t) { return call(LOOKUP, PORTRES_UDP, s, n, t); }
