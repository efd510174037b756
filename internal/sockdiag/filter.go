//go:build linux

package sockdiag

import (
	"encoding/binary"
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

// sportOffset and cookieOffset are where a destroy announcement (a
// netlink header, then inet_diag_msg) carries the socket's local port
// and its cookie.
const (
	sportOffset  = unix.NLMSG_HDRLEN + msgSport
	cookieOffset = unix.NLMSG_HDRLEN + msgCookie
)

// PortCookies names, per port, the one socket whose destroy the filter
// lets through: 0 lets any socket's through (whatever the bitmap lets).
type PortCookies [65536]atomic.Uint64

// Set makes the filter deliver, of the destroyed sockets of port, only
// the one with cookie (0: any).
func (c *PortCookies) Set(port uint16, cookie uint64) {
	c[port].Store(filterCookie(cookie))
}

// filterCookie is cookie as the filter reads it: LD_ABS loads each
// 32-bit half of the announcement's cookie (host order) as if it were in
// network order.
func filterCookie(cookie uint64) uint64 {
	var lo, hi [4]byte
	binary.NativeEndian.PutUint32(lo[:], uint32(cookie))
	binary.NativeEndian.PutUint32(hi[:], uint32(cookie>>32))
	return uint64(binary.BigEndian.Uint32(lo[:])) | uint64(binary.BigEndian.Uint32(hi[:]))<<32
}

// FilterPorts makes the kernel deliver only announcements of sockets
// whose local port is set in the returned bitmap and, where the returned
// cookies name a socket for the port, only that socket's; every other
// destroyed socket of the host (the broker's own placeholders and
// probes, connections a listener accepted, every client connection) no
// longer wakes the watcher. The bitmap and the cookies are eBPF array
// maps mapped into this process: setting a bit or a cookie is one
// atomic operation, no system call. A socket filter on the watcher's
// netlink socket reads them when the kernel announces a destroyed
// socket. It needs CAP_BPF (or root); on error the watcher stays as it
// was, delivering every announcement.
func (w *Watcher) FilterPorts() (*PortBits, *PortCookies, error) {
	bits, bitsMem, err := mappedArray("portres_watched", 1024)
	if err != nil {
		return nil, nil, err
	}
	cookies, cookiesMem, err := mappedArray("portres_sockets", 65536)
	if err != nil {
		bits.Close()
		unix.Munmap(bitsMem)
		return nil, nil, err
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "portres_destroy", Type: ebpf.SocketFilter, License: "GPL",
		Instructions: filterInstructions(bits.FD(), cookies.FD())})
	if err == nil {
		if err = unix.SetsockoptInt(w.fd, unix.SOL_SOCKET, unix.SO_ATTACH_BPF, prog.FD()); err != nil {
			err = fmt.Errorf("sockdiag: filter: attach: %w", err)
		}
		// Attached, the program holds its maps; the mappings hold the
		// memory, for the life of the process (never unmapped: the
		// broker stores into them until it exits).
		prog.Close()
	} else {
		err = fmt.Errorf("sockdiag: filter: program: %w", err)
	}
	bits.Close()
	cookies.Close()
	if err != nil {
		unix.Munmap(bitsMem)
		unix.Munmap(cookiesMem)
		return nil, nil, err
	}
	return (*PortBits)(unsafe.Pointer(&bitsMem[0])), (*PortCookies)(unsafe.Pointer(&cookiesMem[0])), nil
}

// mappedArray makes an eBPF array of n 8-byte values and maps it.
func mappedArray(name string, n int) (*ebpf.Map, []byte, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: name, Type: ebpf.Array, KeySize: 4, ValueSize: 8,
		MaxEntries: uint32(n), Flags: unix.BPF_F_MMAPABLE})
	if err != nil {
		return nil, nil, fmt.Errorf("sockdiag: filter: map %s: %w", name, err)
	}
	mem, err := unix.Mmap(m.FD(), 0, n*8, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("sockdiag: filter: map %s into memory: %w", name, err)
	}
	return m, mem, nil
}

// filterInstructions: keep the announcement (return a length past its
// end) if the bit of its local port is set in the bitmap and the port's
// cookie (0: any) is the announced socket's, else drop it (return 0). A
// message too short to hold what is read is dropped by LD_ABS.
func filterInstructions(bitsFD, cookiesFD int) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),                        // LD_ABS reads the packet through R6
		asm.LoadAbs(sportOffset, asm.Half),                 // R0 = local port, host order
		asm.Mov.Reg(asm.R7, asm.R0),                        // R7 = port
		asm.Mov.Reg(asm.R2, asm.R7),                        //
		asm.RSh.Imm(asm.R2, 6),                             // R2 = port / 64
		asm.StoreMem(asm.RFP, -4, asm.R2, asm.Word),        // key
		asm.LoadMapPtr(asm.R1, bitsFD),                     //
		asm.Mov.Reg(asm.R2, asm.RFP),                       //
		asm.Add.Imm(asm.R2, -4),                            //
		asm.FnMapLookupElem.Call(),                         // R0 = &word, or nil
		asm.JEq.Imm(asm.R0, 0, "drop"),                     //
		asm.LoadMem(asm.R0, asm.R0, 0, asm.DWord),          // R0 = word
		asm.Mov.Reg(asm.R2, asm.R7),                        //
		asm.And.Imm(asm.R2, 63),                            //
		asm.RSh.Reg(asm.R0, asm.R2),                        //
		asm.And.Imm(asm.R0, 1),                             //
		asm.JEq.Imm(asm.R0, 0, "drop"),                     //
		asm.StoreMem(asm.RFP, -8, asm.R7, asm.Word),        // key: the port
		asm.LoadMapPtr(asm.R1, cookiesFD),                  //
		asm.Mov.Reg(asm.R2, asm.RFP),                       //
		asm.Add.Imm(asm.R2, -8),                            //
		asm.FnMapLookupElem.Call(),                         // R0 = &cookie, or nil
		asm.JEq.Imm(asm.R0, 0, "keep"),                     //
		asm.LoadMem(asm.R7, asm.R0, 0, asm.DWord),          // R7 = the port's cookie, as LD_ABS reads it
		asm.JEq.Imm(asm.R7, 0, "keep"),                     // any socket
		asm.LoadAbs(cookieOffset, asm.Word),                // R0 = low half
		asm.Mov.Reg(asm.R2, asm.R7),                        //
		asm.LSh.Imm(asm.R2, 32),                            //
		asm.RSh.Imm(asm.R2, 32),                            // R2 = the port's low half
		asm.JNE.Reg(asm.R0, asm.R2, "drop"),                //
		asm.LoadAbs(cookieOffset+4, asm.Word),              // R0 = high half
		asm.RSh.Imm(asm.R7, 32),                            //
		asm.JNE.Reg(asm.R0, asm.R7, "drop"),                //
		asm.Mov.Imm(asm.R0, 0x7fffffff).WithSymbol("keep"), // keep it whole
		asm.Return(),                                       //
		asm.Mov.Imm(asm.R0, 0).WithSymbol("drop"),          //
		asm.Return(),                                       //
	}
}
