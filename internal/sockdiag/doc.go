//go:build linux

// Package sockdiag reads the kernel's TCP and UDP socket tables through
// netlink NETLINK_SOCK_DIAG (inet_diag) instead of the /proc/net/{tcp,udp}
// text tables: a SOCK_DIAG_BY_FAMILY dump per address family, with the
// local port range filtered in the kernel by an INET_DIAG_REQ_BYTECODE
// program (INET_DIAG_BC_S_GE, INET_DIAG_BC_S_LE). Only the sockets asked
// for cross to user space, in binary, so reading a 100-port range among
// thousands of sockets costs a small fraction of a /proc scan.
//
// Files:
//
//   - portset.go: PortSet, the bitset of ports results come in.
//   - ports.go: Ports and OnlyTimeWait, the package's API, and the retry
//     of a dump the kernel could not deliver whole.
//   - inetdiag.go: the inet_diag wire format (request, port filter,
//     reply) written out by hand: golang.org/x/sys/unix has the netlink
//     constants but none of the inet_diag structures.
//   - netlink.go: one netlink socket, one dump at a time: framing,
//     multipart replies, NLMSG_DONE and NLMSG_ERROR, sequence numbers,
//     EINTR, and only messages from the kernel accepted.
//
// What the kernel lists, and so what these functions see, is the caller's
// network namespace: TCP sockets that listen or have a connection in any
// state (SYN-SENT through TIME-WAIT, including SYN-RECV requests) and
// every bound UDP socket. A TCP socket that is bound but neither
// listening nor connected is not reported. Kernels since 6.8 can dump
// those too (state bit TCP_BOUND_INACTIVE, `ss --bound-inactive`; seen on
// 6.18, where they are listed in state CLOSE), but portres's own
// placeholder sockets are exactly such sockets, so that bit is left out
// of every request: the results match the /proc tables.
//
// The kernel walks its whole hash tables for every dump, whatever the
// filter: a dump costs at least that walk (about 0.4 ms per family on a
// 24 GB machine with an empty namespace, more with many sockets), so one
// dump shared by many checks beats one dump per check.
//
// Every call opens its own netlink socket (SOCK_CLOEXEC) and closes it
// before returning; calls may run concurrently. The syscalls block the
// calling thread rather than parking in Go's netpoller, which is faster
// for a request the kernel answers at once, and a receive timeout
// (SO_RCVTIMEO) bounds a dump that never ends. When the kernel has no
// sock_diag support (no NETLINK_SOCK_DIAG, no inet_diag handler for the
// protocol, or netlink forbidden by a sandbox) the error wraps
// errors.ErrUnsupported, so a caller can fall back to /proc.
package sockdiag
