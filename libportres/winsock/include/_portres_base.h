/*
 * _portres_base.h: the Windows base types and C runtime pieces the port
 * reservation API and its documented samples use, for programs built on
 * Linux against libportres-winsock. Included by windows.h and winsock2.h;
 * not meant to be included directly.
 *
 * Honest differences from Windows, by design:
 *   - WCHAR is wchar_t, which is 32 bits on Linux (UTF-32), not 16.
 *   - wprintf follows the Microsoft directives the samples use: in a wide
 *     format, %s and %ws are wide strings, %hs and %S narrow ones, %I64d
 *     and %I64u 64-bit integers; it writes UTF-8 to stdout.
 *   - Only what is declared here exists: other Windows functions are not
 *     emulated and fail to compile.
 */
#ifndef _PORTRES_BASE_H
#define _PORTRES_BASE_H

/* The system headers come first, so that the names redefined below
 * (wprintf, socket, bind, getsockname) keep their real declarations. */
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <wchar.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#ifdef __cplusplus
#define _PORTRES_EXTERN_C extern "C"
#define _PORTRES_BEGIN extern "C" {
#define _PORTRES_END }
#else
#define _PORTRES_EXTERN_C
#define _PORTRES_BEGIN
#define _PORTRES_END
#endif

typedef int BOOL;
typedef unsigned char BYTE;
typedef unsigned short WORD;
typedef uint32_t DWORD; /* 32 bits, as on Windows (unsigned long is 64 bits here) */
typedef int32_t LONG;
typedef uint32_t ULONG;
typedef uint16_t USHORT;
typedef uint8_t UCHAR;
typedef int INT;
typedef unsigned int UINT;
typedef uint64_t ULONG64;
typedef uint64_t ULONGLONG;
typedef int64_t LONGLONG;
typedef uint64_t DWORD64;
typedef uintptr_t ULONG_PTR;
typedef uintptr_t UINT_PTR;
typedef void *PVOID, *LPVOID, *HANDLE;
typedef const void *LPCVOID;
typedef DWORD *LPDWORD, *PDWORD;
typedef ULONG *PULONG;
typedef ULONG64 *PULONG64;
typedef USHORT *PUSHORT;
typedef INT *LPINT;
typedef wchar_t WCHAR;
typedef WCHAR *LPWSTR, *PWSTR;
typedef const WCHAR *LPCWSTR, *PCWSTR;
typedef char CHAR;
typedef CHAR *LPSTR;
typedef const CHAR *LPCSTR;

#ifndef TRUE
#define TRUE 1
#endif
#ifndef FALSE
#define FALSE 0
#endif
#define INFINITE 0xFFFFFFFFu

#define MAKEWORD(a, b) ((WORD)(((BYTE)((a) & 0xff)) | ((WORD)((BYTE)((b) & 0xff))) << 8))
#define LOBYTE(w) ((BYTE)((w) & 0xff))
#define HIBYTE(w) ((BYTE)(((w) >> 8) & 0xff))

/* Win32 error codes of the port reservation functions (winerror.h). */
#define NO_ERROR 0L
#define ERROR_SUCCESS 0L
#define ERROR_ACCESS_DENIED 5L
#define ERROR_INVALID_HANDLE 6L
#define ERROR_SHARING_VIOLATION 32L
#define ERROR_INVALID_PARAMETER 87L
#define ERROR_OPERATION_ABORTED 995L
#define ERROR_IO_INCOMPLETE 996L
#define ERROR_IO_PENDING 997L
#define ERROR_NOT_FOUND 1168L

_PORTRES_BEGIN
/* The program's entry point when it defines wmain instead of main: the
 * library libportres-wmain provides main, which converts the arguments
 * from the locale's multibyte encoding (setlocale(LC_ALL, "")). */
int wmain(int argc, WCHAR **argv);

/* wprintf with Microsoft's directives (see above). */
int portres_wprintf(const wchar_t *format, ...);
/* _wtoi converts a wide string to int as the Microsoft C runtime does:
 * leading blanks, an optional sign, decimal digits; 0 if none. */
int _wtoi(const wchar_t *s);
_PORTRES_END

#define wprintf portres_wprintf

#endif
