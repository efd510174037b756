//go:build linux

package sockdiag

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// PortBits is a bitmap of the 65,536 ports of one protocol: bit p%64 of
// word p/64 is port p.
type PortBits = [1024]atomic.Uint64

// sportOffset is where a destroy announcement carries the socket's
// local port (network order): after the netlink header (16 bytes) and
// inet_diag_msg's family, state, timer and retrans (4 bytes).
const sportOffset = 16 + 4

// FilterPorts makes the kernel deliver only announcements of sockets
// whose local port is set in the returned bitmap; every other destroyed
// socket of the host (the broker's own placeholders and probes, every
// client connection) no longer wakes the watcher. The bitmap is an eBPF
// array map mapped into this process: setting a bit is one atomic
// operation, no system call. A socket filter on the watcher's netlink
// socket reads it when the kernel announces a destroyed socket, in the
// closing thread. It needs CAP_BPF (or root); on error the watcher stays
// as it was, delivering every announcement.
func (w *Watcher) FilterPorts() (*PortBits, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "portres_watched", Type: ebpf.Array, KeySize: 4, ValueSize: 8,
		MaxEntries: 1024, Flags: unix.BPF_F_MMAPABLE})
	if err != nil {
		return nil, fmt.Errorf("sockdiag: filter: map: %w", err)
	}
	mem, err := unix.Mmap(m.FD(), 0, 1024*8, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("sockdiag: filter: map the bitmap: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "portres_destroy", Type: ebpf.SocketFilter, License: "GPL",
		Instructions: filterInstructions(m.FD())})
	if err != nil {
		unix.Munmap(mem)
		m.Close()
		return nil, fmt.Errorf("sockdiag: filter: program: %w", err)
	}
	if err := unix.SetsockoptInt(w.fd, unix.SOL_SOCKET, unix.SO_ATTACH_BPF, prog.FD()); err != nil {
		prog.Close()
		unix.Munmap(mem)
		m.Close()
		return nil, fmt.Errorf("sockdiag: filter: attach: %w", err)
	}
	// Attached, the program holds its map; the mapping holds the memory.
	prog.Close()
	m.Close()
	w.mem = mem
	return (*PortBits)(unsafe.Pointer(&mem[0])), nil
}

// filterInstructions: keep the announcement (return a length past its
// end) if the bit of its local port is set in the map, else drop it
// (return 0). A message too short to hold a port is dropped by LD_ABS.
func filterInstructions(mapFD int) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),                 // LD_ABS reads the packet through R6
		asm.LoadAbs(sportOffset, asm.Half),          // R0 = local port, host order
		asm.Mov.Reg(asm.R7, asm.R0),                 // R7 = port
		asm.Mov.Reg(asm.R2, asm.R7),                 //
		asm.RSh.Imm(asm.R2, 6),                      // R2 = port / 64
		asm.StoreMem(asm.RFP, -4, asm.R2, asm.Word), // key
		asm.LoadMapPtr(asm.R1, mapFD),               //
		asm.Mov.Reg(asm.R2, asm.RFP),                //
		asm.Add.Imm(asm.R2, -4),                     //
		asm.FnMapLookupElem.Call(),                  // R0 = &word, or nil
		asm.JEq.Imm(asm.R0, 0, "drop"),              //
		asm.LoadMem(asm.R0, asm.R0, 0, asm.DWord),   // R0 = word
		asm.And.Imm(asm.R7, 63),                     //
		asm.RSh.Reg(asm.R0, asm.R7),                 //
		asm.And.Imm(asm.R0, 1),                      //
		asm.JEq.Imm(asm.R0, 0, "drop"),              //
		asm.Mov.Imm(asm.R0, 0x7fffffff),             // keep it whole
		asm.Return(),                                //
		asm.Mov.Imm(asm.R0, 0).WithSymbol("drop"),   //
		asm.Return(),                                //
	}
}
