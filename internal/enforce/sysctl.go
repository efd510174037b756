//go:build linux

package enforce

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// DefaultReservedPortsPath is the sysctl net.ipv4.ip_local_reserved_ports.
// It is per network namespace (the namespace of the thread that opens it)
// and covers TCP, UDP, IPv4 and IPv6 alike.
const DefaultReservedPortsPath = "/proc/sys/net/ipv4/ip_local_reserved_ports"

const (
	// MaxReservedPortsWrite is the longest text, newline included, that
	// one write() to ip_local_reserved_ports takes whole. A longer write
	// returns a short count with the list cut at a comma, and a second
	// write would replace the list with the rest (docs/KERNEL.md; measured on
	// kernel 6.18: 4095 bytes taken, 4096 cut to 4092).
	MaxReservedPortsWrite = 4095

	// readBufSize is the buffer of the single read(). The kernel serves
	// this file only at offset 0 (a second read returns 0 bytes), so a
	// short buffer silently truncates the list.
	readBufSize = 64 << 10
)

var (
	// ErrListTooLong is returned by Apply when the merged list would not
	// fit one write() (MaxReservedPortsWrite); nothing is written.
	ErrListTooLong = errors.New("enforce: ip_local_reserved_ports list too long for one write")
	// ErrVerify is returned by Apply when the list read back after the
	// write differs from the list written (a concurrent writer, or a
	// write the kernel cut short).
	ErrVerify = errors.New("enforce: ip_local_reserved_ports does not hold the list written")
)

// ReservedPorts owns portres's share of net.ipv4.ip_local_reserved_ports
// in the caller's network namespace. The list is shared with every other
// user of the namespace: ReservedPorts remembers which entries it added
// and only ever removes those, keeping foreign entries in place. It is
// safe for concurrent use; writers outside the process can still race
// with it between the read and the write of Apply (see ErrVerify).
type ReservedPorts struct {
	path string

	mu     sync.Mutex
	added  []Range
	writes atomic.Uint64

	// write performs the single write(); a seam for tests.
	write func(path string, b []byte) (int, error)
}

// NewReservedPorts returns a ReservedPorts for the sysctl file at path
// (usually DefaultReservedPortsPath). added lists the entries portres
// added earlier, as recorded in the store, or nil.
func NewReservedPorts(path string, added []Range) *ReservedPorts {
	return &ReservedPorts{path: path, added: MergeRanges(added), write: writeOnce}
}

// Writes returns how many times r has written the kernel list.
func (r *ReservedPorts) Writes() uint64 { return r.writes.Load() }

// Path returns the sysctl file r manages.
func (r *ReservedPorts) Path() string { return r.path }

// Added returns the entries portres currently owns in the list, merged.
func (r *ReservedPorts) Added() []Range {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.added)
}

// Read returns the kernel's current list, as printed (sorted and merged
// by the kernel). It does one read() of up to 64 KiB at offset 0.
func (r *ReservedPorts) Read() ([]Range, error) {
	fd, err := unix.Open(r.path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, r.opError("read", os.NewSyscallError("open", err))
	}
	defer unix.Close(fd)
	buf := make([]byte, readBufSize)
	n, err := unix.Read(fd, buf)
	if err != nil {
		return nil, r.opError("read", os.NewSyscallError("read", err))
	}
	if n == len(buf) {
		return nil, r.opError("read", fmt.Errorf("list fills the %d-byte buffer and may be cut", n))
	}
	rs, err := ParseRanges(string(buf[:n]))
	if err != nil {
		return nil, r.opError("read", err)
	}
	return rs, nil
}

// Apply makes portres's entries exactly want, leaving foreign ones alone.
// It reads the kernel list K and computes
//
//	foreign  = K − added          (present and not ours)
//	newList  = merge(foreign ∪ want)
//	newAdded = want − foreign     (a port present before portres wanted it stays foreign)
//
// then writes newList with one write() (skipped when K already equals
// it), reads it back and checks the kernel holds exactly newList.
//
// Returns ErrListTooLong, writing nothing, if the text would not fit one
// write. If the write fails the kernel keeps its old list and Added is
// unchanged. If the read-back differs it returns ErrVerify and Added
// becomes the part of (old added ∪ newAdded) still present, so that
// nothing portres may have added leaks and nothing else is claimed.
func (r *ReservedPorts) Apply(want []Range) error { return r.ApplyRecorded(want, nil) }

// ApplyRecorded is Apply with a durable record: before the kernel list is
// written, record (if not nil) is given every range portres may have
// added once the write lands — what it added before plus what this write
// adds, never a foreign entry — so that a crash between the write and the
// caller's bookkeeping cannot turn foreign entries into portres's (which
// a later delete would remove) nor leave portres's entries unclaimed. An
// error from record aborts before anything is written.
func (r *ReservedPorts) ApplyRecorded(want []Range, record func(claim []Range) error) error {
	return r.Update(func([]Range) ([]Range, error) { return want, nil }, record)
}

// Update is ApplyRecorded with the list planned from what the kernel
// holds: plan is given the foreign entries read from the kernel and
// returns the entries portres wants; an error from it aborts the update,
// which then returns that error unchanged and writes nothing. The broker
// uses it to admit blocks into the list's 4 KiB fairly (ListLen tells what
// a list costs) and to write several changes at once.
func (r *ReservedPorts) Update(plan func(foreign []Range) ([]Range, error), record func(claim []Range) error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	k, err := r.Read()
	if err != nil {
		return err
	}
	k = MergeRanges(k)
	foreign := SubtractRanges(k, r.added)
	want, err := plan(foreign)
	if err != nil {
		return err
	}
	newList := UnionRanges(foreign, want)
	newAdded := SubtractRanges(want, foreign)
	if record != nil {
		if err := record(UnionRanges(r.added, newAdded)); err != nil {
			return r.opError("record", err)
		}
	}
	if slices.Equal(k, newList) {
		r.added = newAdded
		return nil
	}
	text := FormatRanges(newList) + "\n" // a lone "\n" empties the list; "" is a no-op
	if len(text) > MaxReservedPortsWrite {
		return r.opError("write", fmt.Errorf("%w: %d bytes for %d ranges, limit %d",
			ErrListTooLong, len(text), len(newList), MaxReservedPortsWrite))
	}
	r.writes.Add(1)
	n, werr := r.write(r.path, []byte(text))
	if werr != nil && n <= 0 {
		return r.opError("write", werr)
	}
	got, rerr := r.Read()
	if rerr != nil {
		// State unknown: keep claiming everything we might have added.
		r.added = UnionRanges(r.added, newAdded)
		return errors.Join(r.opError("write", werr), rerr)
	}
	got = MergeRanges(got)
	if werr != nil || n != len(text) || !slices.Equal(got, newList) {
		r.added = IntersectRanges(UnionRanges(r.added, newAdded), got)
		return r.opError("verify", fmt.Errorf("%w: wrote %d of %d bytes (err %v), want %q, kernel has %q",
			ErrVerify, n, len(text), werr, FormatRanges(newList), FormatRanges(got)))
	}
	r.added = newAdded
	return nil
}

// ListLen is the number of bytes one write() of the list rs takes, its
// newline included; MaxReservedPortsWrite is the most the kernel takes
// whole.
func ListLen(rs []Range) int { return len(FormatRanges(MergeRanges(rs))) + 1 }

// Writable reports, without writing, whether the sysctl file at path can
// be opened for writing: nil if so, else the reason (a non-root broker
// gets EACCES; a read-only /proc/sys, EROFS).
func Writable(path string) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open for writing", Path: path, Err: err}
	}
	unix.Close(fd)
	return nil
}

// opError names the operation and the file, wrapping err; nil stays nil.
func (r *ReservedPorts) opError(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("enforce: %s ip_local_reserved_ports (%s): %w", op, r.path, err)
}

// writeOnce opens path and issues exactly one write() of b. It never
// retries a short write: for this sysctl a second write replaces the list.
func writeOnce(path string, b []byte) (int, error) {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_TRUNC|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, os.NewSyscallError("open", err)
	}
	n, err := unix.Write(fd, b)
	if err != nil {
		unix.Close(fd)
		return n, os.NewSyscallError("write", err)
	}
	if err := unix.Close(fd); err != nil {
		return n, os.NewSyscallError("close", err)
	}
	return n, nil
}
