//go:build linux

// Package store keeps portresd's durable state in a bbolt file: the
// persistent port reservations (Windows' CreatePersistentTcpPortReservation),
// the per-protocol dynamic port ranges, and which ip_local_reserved_ports
// entries portres added, so a restarted daemon removes only its own.
//
// Every write is one bbolt Update, committed with fdatasync before the
// method returns: an acknowledged reservation survives a crash.
//
// # Safety of an existing file
//
// Open never changes a file it does not recognise. It first opens the
// file read-only (shared flock) and checks the meta bucket's magic and
// schema (ErrForeign otherwise); then that the file is not shorter than
// the database it describes, that every reachable page lies inside it
// with a sane header (bbolt's own check trusts headers and can run out
// of memory on a damaged one, see pages.go), bbolt's consistency check
// and the schema invariants (ErrCorrupt otherwise), and last that both
// of bbolt's meta pages pass validation (magic, version, checksum). bbolt
// itself silently falls back to the other meta page when one fails, which
// loses acknowledged writes if the damaged page was the newer; Open
// refuses such a store with a *MetaPageError (ErrCorrupt) naming the
// intact transaction, and OpenWithOptions with Options.Repair accepts it
// by committing one transaction over the damaged page. Only then does it
// reopen the file read-write: bbolt's read-write open may itself write.
// A new store is built under a temporary name in the same directory and
// linked into place, so a crash during creation never leaves a half-made
// store at the path; an empty file at the path is therefore refused.
//
// # Files opened as root
//
// Every open of the database (bbolt's own, through Options.OpenFile, the
// read-only verification and the read-write open), of the temporary file
// a new store is built in, and of PATH.sysctl uses O_NOFOLLOW, O_CLOEXEC
// and O_NONBLOCK, then fstat: the file must be a regular file owned by
// the effective uid and writable by nobody else, and the read-write open
// must find the inode the verification passed. Anything else is refused
// with ErrUnsafeFile before a byte is written. The parent directory is
// created mode 0700.
//
// # Layout (schema 1)
//
// All integers are big-endian, so keys sort numerically.
//
//	bucket "meta"
//	    "magic"  = "portres-store"
//	    "schema" = uint32 1
//	bucket "persistent"                    one key per persistent reservation
//	    key   proto uint8 | start uint16 | count uint16          (5 bytes)
//	    value token uint64 | created int64 (Unix ns, MinInt64 for none) | uid uint32 (20 bytes)
//	bucket "dynamic"                       the dynamic port range per protocol
//	    key   proto uint8                                        (1 byte)
//	    value lo uint16 | hi uint16                              (4 bytes)
//	bucket "sysctl"                        schema 1 kept its ip_local_reserved_ports
//	                                       bookkeeping here ("added", "boot", "netns");
//	                                       now empty, still validated if present
//
// What portres added to ip_local_reserved_ports lives beside the database
// in PATH.sysctl: a header "portres-sysctl-1 LEN", then LEN bytes of three
// lines (boot id, netns inode, merged ranges), rewritten in place with one
// pwrite and no fsync (see SetSysctlAdded).
//
// Invariants checked by Check: a persistent block has proto 6 or 17,
// start >= 1, count >= 1 and does not run past 65535; blocks of one
// protocol do not overlap; tokens are non-zero and unique; dynamic ranges
// have lo <= hi; the sysctl entries are merged.
package store
