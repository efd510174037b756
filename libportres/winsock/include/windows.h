/*
 * windows.h for libportres-winsock: the base types of Windows and the C
 * runtime pieces its port reservation samples use (_portres_base.h), and
 * (unless WIN32_LEAN_AND_MEAN, as on Windows) the sockets of winsock2.h.
 * Not the Windows API: only what is declared exists.
 */
#ifndef _PORTRES_WINDOWS_H
#define _PORTRES_WINDOWS_H
#include "_portres_base.h"
#ifndef WIN32_LEAN_AND_MEAN
#include "winsock2.h" /* as Windows' windows.h brings sockets unless lean */
#endif

_PORTRES_BEGIN
/* SleepEx waits ms milliseconds (INFINITE: for ever); if alertable, it
 * returns early with WAIT_IO_COMPLETION after running the completion
 * routines queued to this thread. */
DWORD SleepEx(DWORD ms, BOOL alertable);
void Sleep(DWORD ms);
#define WAIT_IO_COMPLETION 0x000000C0L
_PORTRES_END
#endif
