/*
 * mstcpip.h for libportres-winsock: the port reservation control codes
 * of WSAIoctl and their structures, byte for byte as on Windows
 * (INET_PORT_RANGE 4 bytes, INET_PORT_RESERVATION_TOKEN 8,
 * INET_PORT_RESERVATION_INSTANCE 16 with the token at offset 8).
 * StartPort is in network byte order; NumberOfPorts in host order.
 */
#ifndef _PORTRES_MSTCPIP_H
#define _PORTRES_MSTCPIP_H
#include "winsock2.h"

#define IOC_VOID 0x20000000u
#define IOC_OUT 0x40000000u
#define IOC_IN 0x80000000u
#define IOC_WS2 0x08000000u
#define IOC_VENDOR 0x18000000u
#define _WSAIOW(x, y) (IOC_IN | (x) | (y))

#define SIO_ACQUIRE_PORT_RESERVATION _WSAIOW(IOC_VENDOR, 100)
#define SIO_RELEASE_PORT_RESERVATION _WSAIOW(IOC_VENDOR, 101)
#define SIO_ASSOCIATE_PORT_RESERVATION _WSAIOW(IOC_VENDOR, 102)

typedef struct {
	USHORT StartPort;     /* network byte order */
	USHORT NumberOfPorts; /* host byte order */
} INET_PORT_RANGE, *PINET_PORT_RANGE;
typedef INET_PORT_RANGE INET_PORT_RESERVATION, *PINET_PORT_RESERVATION;

typedef struct {
	ULONG64 Token;
} INET_PORT_RESERVATION_TOKEN, *PINET_PORT_RESERVATION_TOKEN;

#define INVALID_PORT_RESERVATION_TOKEN ((ULONG64)0)

typedef struct {
	INET_PORT_RESERVATION Reservation;
	INET_PORT_RESERVATION_TOKEN Token;
} INET_PORT_RESERVATION_INSTANCE, *PINET_PORT_RESERVATION_INSTANCE;

typedef struct {
	ULONG AssignmentCount;
	ULONG OwningPid;
} INET_PORT_RESERVATION_INFORMATION, *PINET_PORT_RESERVATION_INFORMATION;

#ifdef __cplusplus
static_assert(sizeof(INET_PORT_RANGE) == 4, "INET_PORT_RANGE is 4 bytes");
static_assert(sizeof(INET_PORT_RESERVATION_TOKEN) == 8, "INET_PORT_RESERVATION_TOKEN is 8 bytes");
static_assert(sizeof(INET_PORT_RESERVATION_INSTANCE) == 16, "INET_PORT_RESERVATION_INSTANCE is 16 bytes");
#else
_Static_assert(sizeof(INET_PORT_RANGE) == 4, "INET_PORT_RANGE is 4 bytes");
_Static_assert(sizeof(INET_PORT_RESERVATION_TOKEN) == 8, "INET_PORT_RESERVATION_TOKEN is 8 bytes");
_Static_assert(sizeof(INET_PORT_RESERVATION_INSTANCE) == 16, "INET_PORT_RESERVATION_INSTANCE is 16 bytes");
#endif
#endif
