/*
 * errors.c: the Winsock and Win32 numbers' names and descriptions, the
 * same as the Go package's (errors.go), and the errno mapping of the
 * Winsock layer.
 */
#include "internal.h"

#include <errno.h>
#include <stddef.h>

struct code_info {
	int code;
	const char *name, *text;
};

static const struct code_info codes[] = {
	{0, "NO_ERROR", "success"},
	{5, "ERROR_ACCESS_DENIED", "access denied"},
	{6, "WSA_INVALID_HANDLE", "invalid event handle"},
	{32, "ERROR_SHARING_VIOLATION", "ports in use or overlapping a reservation"},
	{87, "ERROR_INVALID_PARAMETER", "invalid parameter"},
	{995, "WSA_OPERATION_ABORTED", "operation aborted"},
	{996, "WSA_IO_INCOMPLETE", "overlapped I/O event not in a signaled state"},
	{997, "WSA_IO_PENDING", "overlapped I/O operation in progress"},
	{1168, "ERROR_NOT_FOUND", "not found"},
	{10004, "WSAEINTR", "interrupted"},
	{10013, "WSAEACCES", "permission denied"},
	{10014, "WSAEFAULT", "bad address"},
	{10022, "WSAEINVAL", "invalid argument"},
	{10024, "WSAEMFILE", "too many open files"},
	{10035, "WSAEWOULDBLOCK", "resource temporarily unavailable"},
	{10036, "WSAEINPROGRESS", "operation in progress"},
	{10038, "WSAENOTSOCK", "not a socket"},
	{10041, "WSAEPROTOTYPE", "protocol wrong type for socket"},
	{10043, "WSAEPROTONOSUPPORT", "protocol not supported"},
	{10044, "WSAESOCKTNOSUPPORT", "socket type not supported"},
	{10045, "WSAEOPNOTSUPP", "operation not supported"},
	{10047, "WSAEAFNOSUPPORT", "address family not supported"},
	{10048, "WSAEADDRINUSE", "address already in use"},
	{10049, "WSAEADDRNOTAVAIL", "cannot assign requested address"},
	{10050, "WSAENETDOWN", "port reservation broker unreachable"},
	{10055, "WSAENOBUFS", "no buffer space: no free port left in the reservation, or no room in the kernel list"},
	{10069, "WSAEDQUOT", "disk quota exceeded: a per-user limit of the broker is reached"},
	{10093, "WSANOTINITIALISED", "WSAStartup has not been called"},
};

static const struct code_info *find(int code)
{
	for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
		if (codes[i].code == code)
			return &codes[i];
	return NULL;
}

const char *portres_error_name(int code)
{
	const struct code_info *c = find(code);
	return c ? c->name : "UNKNOWN_ERROR";
}

const char *portres_error_text(int code)
{
	const struct code_info *c = find(code);
	return c ? c->text : "unknown error";
}

int portres_wsa_from_errno(int e)
{
	switch (e) {
	case EINTR: return PORTRES_WSAEINTR;
	case EACCES: case EPERM: return PORTRES_WSAEACCES;
	case EFAULT: return PORTRES_WSAEFAULT;
	case EINVAL: return PORTRES_WSAEINVAL;
	case EMFILE: case ENFILE: return PORTRES_WSAEMFILE;
	case EAGAIN: return 10035;
	case EINPROGRESS: return 10036;
	case EBADF: case ENOTSOCK: return PORTRES_WSAENOTSOCK;
	case EPROTOTYPE: return 10041;
	case EPROTONOSUPPORT: return 10043;
	case ESOCKTNOSUPPORT: return 10044;
	case EOPNOTSUPP: return PORTRES_WSAEOPNOTSUPP;
	case EAFNOSUPPORT: return PORTRES_WSAEAFNOSUPPORT;
	case EADDRINUSE: return PORTRES_WSAEADDRINUSE;
	case EADDRNOTAVAIL: return PORTRES_WSAEADDRNOTAVAIL;
	case ENETDOWN: return PORTRES_WSAENETDOWN;
	case ENOBUFS: case ENOMEM: return PORTRES_WSAENOBUFS;
	case ECANCELED: return PORTRES_WSA_OPERATION_ABORTED;
	}
	return PORTRES_WSAEINVAL;
}
