// Package portres gives Go programs Windows-style TCP and UDP port
// reservations on Linux, through the portresd broker.
//
// A program reserves a block of ports (Client.Acquire: a specific block,
// or a wildcard one the broker places in the dynamic range), gets an
// opaque 64-bit token, and binds sockets from the block
// (Reservation.Listen, ListenPacket, Dialer, or Client.BindFD for a
// socket it made). Nobody else can bind those ports while the
// reservation lives: the broker makes the kernel refuse them (an eBPF
// bind guard, or placeholder sockets) and keeps them out of automatic
// port assignment. A runtime reservation ends with Release, or when its
// Client is closed or its process exits, as on Windows it ends with the
// socket it was acquired on. Persistent reservations
// (Client.CreatePersistent) survive restarts and reboots.
//
// The shortest use is one call:
//
//	ln, err := portres.Listen(ctx, "tcp", ":0") // a port nobody else can take
//	defer ln.Close()                             // releases it
//
// Errors are *Error values carrying the Winsock or Win32 code Windows
// would report (WSAEADDRINUSE, ERROR_NOT_FOUND, ...); errors.Is matches
// them against those codes and against their syscall equivalents.
//
// The Client survives restarts of the broker: it reconnects by itself and
// takes its reservations back (see Client and OnRestart). The package
// github.com/portres/portres/winsock offers the same through the
// Winsock API (WSAIoctl with SIO_ACQUIRE_PORT_RESERVATION and friends) for
// code ported from Windows.
package portres
