/*
 * ws2ipdef.h for libportres-winsock: IPv6 socket addresses under their
 * Windows names. AF_INET6 is the platform's number: 10 on Linux (23 on
 * Windows).
 */
#ifndef _PORTRES_WS2IPDEF_H
#define _PORTRES_WS2IPDEF_H
#include "winsock2.h"

typedef struct sockaddr_in6 SOCKADDR_IN6, *PSOCKADDR_IN6, *LPSOCKADDR_IN6;
typedef struct in6_addr IN6_ADDR;
#endif
