//go:build linux

package store

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"slices"
	"sync"
)

// The runtime file records the broker's runtime reservations so that a
// broker that restarts, or crashed, can restore them (live restore). It
// lives beside the socket, under /run for root (a tmpfs: gone at
// reboot, like the reservations), and is tagged with the boot id and the
// network namespace, so a file from another boot or namespace restores
// nothing.
//
// It is an array of fixed-size slots, one per live reservation: an
// acquire is one pwrite of one slot, a release one pwrite clearing it, so
// the cost of either does not grow with the number of reservations and
// the file never needs compacting. Nothing is fsynced: the file only has
// to survive the broker's process, not the machine, and the kernel keeps
// what a write() handed it when the writer dies. Each slot carries a
// CRC-32C: a slot a crash tore mid-write reads as empty.
//
// Slot 0 is the header:
//
//	magic "PRRH" | version u32 | netns u64 | boot id (36 bytes) | zeros
//
// every other slot is empty (all zeros, or a bad CRC) or a reservation:
//
//	magic "PRRS" | crc32c of bytes 8..128 u32 | token u64 | proto u8 |
//	flags u8 | start u16 | count u16 | command length u8 | 0 | pid i32 |
//	uid u32 | gid u32 | 0 u32 | process start time u64 |
//	created (unix ns) i64 | command (72 bytes)
//
// little-endian. The process start time is /proc/PID/stat field 22: with
// the pid it names the owner for the life of the system.
const (
	runtimeSlot    = 128
	runtimeVersion = 1
	runtimeCmdMax  = runtimeSlot - 56
)

var (
	runtimeHeaderMagic = [4]byte{'P', 'R', 'R', 'H'}
	runtimeSlotMagic   = [4]byte{'P', 'R', 'R', 'S'}
	crc32c             = crc32.MakeTable(crc32.Castagnoli)
)

// Runtime reservation flags (RuntimeRecord.Flags).
const (
	RuntimeDelegated   uint8 = 1 << iota // handed to another process (portres run)
	RuntimeAdmin                         // the owner is root or in the admin group
	RuntimeNotExcluded                   // not in ip_local_reserved_ports when acquired
	RuntimePidOwned                      // the portserver's: ends with its owner's process, not a connection
)

// RuntimeRecord is one runtime reservation as the runtime file keeps it.
type RuntimeRecord struct {
	Token        uint64
	Proto        uint8
	Flags        uint8
	Start, Count uint16
	PID          int32
	UID, GID     uint32
	StartTime    uint64 // the owner's process start time (clock ticks since boot)
	Created      int64  // unix nanoseconds
	Command      string // the owner's command line, cut to 72 bytes
}

// RuntimeSlot is where a record sits in the runtime file (never 0).
type RuntimeSlot int32

// Runtime is an open runtime file. Its methods are safe for concurrent
// use.
type Runtime struct {
	path string
	f    *os.File

	mu    sync.Mutex
	free  []RuntimeSlot // cleared slots, reused first
	next  RuntimeSlot   // the first slot never used
	ended []RuntimeSlot // slots of ended reservations, to clear (Flush)
}

// OpenRuntime opens (creating it 0600) the runtime file at path, never
// through a symbolic link and only if it is a regular file of this uid
// writable by nobody else, and returns the records it holds for boot and
// netns, each with its slot. A file of another boot, namespace or
// version is emptied: it restores nothing. Unreadable slots are skipped
// and reused.
func OpenRuntime(path, boot string, netns uint64) (*Runtime, map[RuntimeSlot]RuntimeRecord, error) {
	f, err := openOwned("runtime state", path, os.O_RDWR|os.O_CREATE, 0o600, nil)
	if err != nil {
		return nil, nil, fileError("open runtime state", path, err)
	}
	rt := &Runtime{path: path, f: f, next: 1}
	recs, err := rt.load(boot, netns)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return rt, recs, nil
}

// load reads the file, or starts it afresh if it is not of boot and netns.
func (rt *Runtime) load(boot string, netns uint64) (map[RuntimeSlot]RuntimeRecord, error) {
	data, err := io.ReadAll(io.NewSectionReader(rt.f, 0, 1<<40))
	if err != nil {
		return nil, fileError("read runtime state", rt.path, err)
	}
	header := runtimeHeader(boot, netns)
	recs := map[RuntimeSlot]RuntimeRecord{}
	if len(data) < runtimeSlot || string(data[:runtimeSlot]) != string(header) {
		// New, or of another boot, namespace or version: nothing in it
		// is ours to restore.
		if err := rt.f.Truncate(0); err != nil {
			return nil, fileError("reset runtime state", rt.path, err)
		}
		if _, err := rt.f.WriteAt(header, 0); err != nil {
			return nil, fileError("write runtime state", rt.path, err)
		}
		return recs, nil
	}
	n := RuntimeSlot(len(data) / runtimeSlot)
	for s := RuntimeSlot(1); s < n; s++ {
		if r, ok := decodeRuntime(data[int(s)*runtimeSlot : int(s+1)*runtimeSlot]); ok {
			recs[s] = r
		} else {
			rt.free = append(rt.free, s)
		}
	}
	rt.next = n
	slices.Reverse(rt.free) // lowest first out of the end
	return recs, nil
}

func runtimeHeader(boot string, netns uint64) []byte {
	b := make([]byte, runtimeSlot)
	copy(b, runtimeHeaderMagic[:])
	binary.LittleEndian.PutUint32(b[4:], runtimeVersion)
	binary.LittleEndian.PutUint64(b[8:], netns)
	copy(b[16:52], boot)
	return b
}

// Put writes r into a free slot and returns it.
func (rt *Runtime) Put(r *RuntimeRecord) (RuntimeSlot, error) {
	rt.mu.Lock()
	var s RuntimeSlot
	if n := len(rt.free); n > 0 {
		s, rt.free = rt.free[n-1], rt.free[:n-1]
	} else {
		s = rt.next
		rt.next++
	}
	rt.mu.Unlock()
	if _, err := rt.f.WriteAt(encodeRuntime(r), int64(s)*runtimeSlot); err != nil {
		rt.release(s)
		return 0, fileError("write runtime state", rt.path, err)
	}
	return s, nil
}

// Clear empties slot s and makes it free. The slot is reused only once
// it is cleared on disk, so a later Put can never be overwritten by it.
func (rt *Runtime) Clear(s RuntimeSlot) error {
	if s <= 0 {
		return nil
	}
	var zero [runtimeSlot]byte
	if _, err := rt.f.WriteAt(zero[:], int64(s)*runtimeSlot); err != nil {
		return fileError("clear runtime state", rt.path, err)
	}
	rt.release(s)
	return nil
}

// Release marks slot s for clearing by the next Flush, off the path of
// the request that ended its reservation. Until then a crash leaves the
// record behind: the reservation is restored, unclaimed, for the grace
// period (and loses any overlap to newer records).
func (rt *Runtime) Release(s RuntimeSlot) {
	if s <= 0 {
		return
	}
	rt.mu.Lock()
	rt.ended = append(rt.ended, s)
	rt.mu.Unlock()
}

// Flush clears the slots Release marked and makes them free.
func (rt *Runtime) Flush() error {
	rt.mu.Lock()
	todo := rt.ended
	rt.ended = nil
	rt.mu.Unlock()
	var first error
	for _, s := range todo {
		if err := rt.Clear(s); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (rt *Runtime) release(s RuntimeSlot) {
	rt.mu.Lock()
	rt.free = append(rt.free, s)
	rt.mu.Unlock()
}

// Path is the runtime file's path.
func (rt *Runtime) Path() string { return rt.path }

// Close closes the file; what it records stays for the next broker.
func (rt *Runtime) Close() error { return rt.f.Close() }

// Remove empties the file: nothing is left to restore.
func (rt *Runtime) Remove() error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if err := rt.f.Truncate(runtimeSlot); err != nil {
		return fileError("reset runtime state", rt.path, err)
	}
	rt.free, rt.next = nil, 1
	return nil
}

func encodeRuntime(r *RuntimeRecord) []byte {
	b := make([]byte, runtimeSlot)
	copy(b, runtimeSlotMagic[:])
	le := binary.LittleEndian
	le.PutUint64(b[8:], r.Token)
	b[16], b[17] = r.Proto, r.Flags
	le.PutUint16(b[18:], r.Start)
	le.PutUint16(b[20:], r.Count)
	cmd := r.Command
	if len(cmd) > runtimeCmdMax {
		cmd = cmd[:runtimeCmdMax]
	}
	b[22] = uint8(len(cmd))
	le.PutUint32(b[24:], uint32(r.PID))
	le.PutUint32(b[28:], r.UID)
	le.PutUint32(b[32:], r.GID)
	le.PutUint64(b[40:], r.StartTime)
	le.PutUint64(b[48:], uint64(r.Created))
	copy(b[56:], cmd)
	le.PutUint32(b[4:], crc32.Checksum(b[8:], crc32c))
	return b
}

// decodeRuntime reads a slot; ok is false for an empty or torn one.
func decodeRuntime(b []byte) (RuntimeRecord, bool) {
	le := binary.LittleEndian
	if len(b) != runtimeSlot || string(b[:4]) != string(runtimeSlotMagic[:]) || le.Uint32(b[4:]) != crc32.Checksum(b[8:], crc32c) {
		return RuntimeRecord{}, false
	}
	r := RuntimeRecord{Token: le.Uint64(b[8:]), Proto: b[16], Flags: b[17], Start: le.Uint16(b[18:]), Count: le.Uint16(b[20:]),
		PID: int32(le.Uint32(b[24:])), UID: le.Uint32(b[28:]), GID: le.Uint32(b[32:]),
		StartTime: le.Uint64(b[40:]), Created: int64(le.Uint64(b[48:]))}
	n := int(b[22])
	if n > runtimeCmdMax || r.Token == 0 || r.Count == 0 {
		return RuntimeRecord{}, false
	}
	r.Command = string(b[56 : 56+n])
	return r, true
}

func (r RuntimeRecord) String() string {
	return fmt.Sprintf("proto %d %d+%d token %#x pid %d", r.Proto, r.Start, r.Count, r.Token, r.PID)
}
