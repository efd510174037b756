//go:build linux

// Package broker is the portresd daemon: it owns the host's TCP and UDP
// port pools, serves clients on a Unix SOCK_SEQPACKET socket, binds their
// sockets for them, and makes the kernel enforce reservations.
//
// Each client connection plays the role of the Windows socket on which
// SIO_ACQUIRE_PORT_RESERVATION was issued: every runtime reservation
// acquired on it ends when it closes or its process dies. Reservations
// belong to the acquiring process (SO_PEERCRED, with the pidfd's identity
// guarding against PID reuse); any other process is refused with
// WSAEACCES. A session reads requests on one goroutine (so a cancel or a
// hang-up is seen while a long acquire runs) and executes them in order on
// another.
//
// Enforcement: in bpf mode a pinned cgroup eBPF program refuses binds of
// runtime ports to every socket but the ones the broker binds
// (internal/enforce.BindGuard); in hold mode every free port of a
// runtime reservation carries a placeholder socket (internal/enforce.Hold)
// that binding a client's socket swaps for it, and the placeholder comes
// back once the client's socket is gone. Persistent and delegated blocks
// are kept out of automatic assignment through
// net.ipv4.ip_local_reserved_ports instead.
//
// Live restore (restore.go): runtime reservations are recorded in a
// runtime file, restored by the next broker for owners still alive, and
// reclaimed by them by token; the pinned guard and the kernel list keep
// enforcing them while no broker runs.
package broker
