//go:build linux

// Package enforce makes the kernel honour portres's reservations. Each
// mechanism has its own file:
//
//   - sysctl.go: net.ipv4.ip_local_reserved_ports keeps reserved ports
//     out of automatic assignment (bind to port 0, connect autobind) for
//     TCP and UDP, v4 and v6. Explicit binds still succeed, so it is only
//     half the job. The list is shared with everything else in the
//     network namespace: ReservedPorts merges portres's entries with the
//     foreign ones and only ever removes what it added itself.
//   - ranges.go: the inclusive port Range and the set algebra (parse,
//     format, merge, union, subtract) the mechanisms share.
//
// Facts about ip_local_reserved_ports, measured on kernel 6.18 in a fresh
// network namespace (see docs/KERNEL.md; the tests re-check the first four):
//
//   - A new namespace starts with an empty list; reading it gives "\n".
//   - The kernel serves the text only at offset 0: a second read() returns
//     0 bytes, so os.ReadFile (512-byte first read) cuts long lists. Read
//     once with a large buffer.
//   - One write() replaces the whole list and takes at most 4095 bytes.
//     A longer write returns a short count (4096 bytes give 4092, cut at a
//     comma) and the kernel keeps the head; os.File.Write would then loop
//     and a second write() would replace the list with the tail.
//   - Ports 0 through 65535 are accepted ("0" and "0-65535" are valid);
//     65536, a reversed range ("100-50") or spaces fail with EINVAL and
//     keep the old list.
//   - The kernel sorts and merges what it is given: "5,3,4" reads back as
//     "3-5", "10-20,21-30" as "10-30".
//   - A lone "\n" empties the list; a zero-length write changes nothing.
//   - Only root of the namespace's owning user namespace (or a holder of
//     CAP_NET_ADMIN there) may write: others get EACCES from open(), and
//     the list is left as it was.
package enforce
