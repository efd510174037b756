//go:build linux

package enforce

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// The bind guard (docs/KERNEL.md, "eBPF cgroup bind guard") is a
// BPF_PROG_TYPE_CGROUP_SOCK_ADDR program, written with cilium/ebpf's asm
// package (no clang), loaded twice (the expected attach type is fixed at
// load time) and linked to a cgroup v2 directory on INET4_BIND and
// INET6_BIND. For every bind(2) by a socket created in that cgroup or
// below it runs:
//
//	if bpf_get_netns_cookie(ctx) != cookie       → allow (another netns)
//	port = ntohs(ctx->user_port)
//	if port == 0                                 → allow (autobind)
//	idx = port           if ctx->protocol == IPPROTO_TCP
//	idx = 1<<16 | port   if ctx->protocol == IPPROTO_UDP
//	otherwise                                    → allow
//	if !guarded[idx]                             → allow
//	if allow[bpf_get_socket_cookie(ctx)] == idx  → allow (the broker binds it, there)
//	bpf_set_retval(-EACCES); reject
//
// cookie is a constant patched into the instructions at load time.
// allow is a hash map of socket cookies: the broker puts the cookie of
// the socket it is about to bind there (SO_COOKIE), with the index of
// the one port it binds it to; it takes it out at once if the bind
// fails, else later, in batches (a bound socket binds no more). The port
// matters: the client still holds the socket and could bind it itself,
// to another guarded port, while the broker's allowance stands. A socket
// cookie is never reused while the system runs, so the exception is
// exactly that socket; a process id (what the guard once compared) can
// be reused by anyone while the broker is down.
//
// guarded is a BPF_MAP_TYPE_ARRAY of 2*65536 one-byte values indexed by
// idx rather than a hash: a lookup is an index computation, every key
// exists (no "not found" case, no preallocation limits, no -E2BIG on a
// full map), and updates are plain stores. It costs about 1 MiB of
// kernel memory (the kernel rounds array values up to 8 bytes), and is
// BPF_F_MMAPABLE (kernel 5.5): the broker maps it and guards ports by
// storing into it.
//
// ctx->protocol is the socket's sk_protocol: for an AF_INET/AF_INET6
// socket created with protocol 0 the kernel fills in IPPROTO_TCP or
// IPPROTO_UDP (the tests check it), so protocol 0 sockets are covered.
// An MPTCP socket binds its first TCP subflow, which the hook sees as TCP.
//
// bpf_set_retval fails the bind by itself: the kernel keeps an error
// retval even when the program then returns 1 (measured on 6.18), so the
// call sits only on the reject path. It needs kernel 5.18. On an older
// kernel the program is loaded without it and rejected binds fail with
// the kernel's default EPERM instead of EACCES; Errno reports which one
// the guard produces.
//
// Kernel features needed: cgroup v2, CGROUP_SOCK_ADDR bind hooks (4.17),
// bpf_get_netns_cookie for sock_addr programs (5.7), SO_NETNS_COOKIE
// (5.14), and either bpf_link for cgroups (5.7) or legacy multi-attach;
// BPF_MAP_UPDATE_BATCH on arrays (5.6) is used when present. Loading
// needs CAP_BPF and CAP_NET_ADMIN (or root). Before 5.11 BPF memory is
// charged to RLIMIT_MEMLOCK, which must then allow about 1.1 MiB; the
// guard does not raise it (cilium/ebpf's rlimit package would probe and
// change the limit at init in every program linking this package).
//
// Unpinned, the guard lives as long as its file descriptors: when the
// process that made it exits, the links close and the program is
// detached. Pinned (pin.go), it lives until its pins are removed
// (UninstallGuard) or the system stops. Only sockets created inside the cgroup (or below) are checked: a socket
// keeps the cgroup of the process that created it, whatever cgroup the
// process that binds it is in. bind(0) reaches the program with port 0
// and is let through, since the kernel picks the port afterwards, and
// connect()/sendto() autobind never reaches it: ip_local_reserved_ports
// keeps guarded ports out of automatic assignment.

// guardMapEntries is the size of the guarded-ports array: one entry per
// TCP port, then one per UDP port.
const guardMapEntries = 2 * 65536

// Offsets in struct bpf_sock_addr (include/uapi/linux/bpf.h).
const (
	sockAddrUserPort = 24 // __u32 user_port, network byte order
	sockAddrProtocol = 36 // __u32 protocol
)

// allowEntries bounds the allow map: sockets the broker is binding at
// this moment (a handful; entries a crash left behind are cleared when
// the guard is adopted).
const allowEntries = 1024

// BindGuard is a cgroup eBPF program (CGROUP_SOCK_ADDR on INET4_BIND and
// INET6_BIND) that refuses bind(2) to guarded ports with EACCES for every
// socket of the cgroup but the ones the broker is binding (Allow), in one
// network namespace only. Pinned in a bpffs (GuardOptions.PinDir), it
// outlives the process that made it: the next broker adopts it with its
// map, so the guarded ports stay guarded across a crash or a restart.
// Its methods are safe for concurrent use.
type BindGuard struct {
	mu      sync.Mutex
	guarded *ebpf.Map // array, index (proto==UDP)<<16 | port, value u8
	allow   *ebpf.Map // hash, socket cookie → 1: sockets the broker binds
	progs   []*ebpf.Program
	links   []link.Link
	errno   unix.Errno
	cookie  uint64
	pin     string   // bpffs directory of the pins; "" when not pinned
	lock    *os.File // flock on pin: one broker per pinned guard
	adopted bool     // the map and links were found pinned
	spent   []uint64 // allowances of sockets bound or closed since, not yet deleted
	// mem is the guarded map mapped into the process (nil if it could
	// not be): slot i, 8 bytes (the kernel rounds array values up), holds
	// entry i in its first byte.
	mem []byte
}

// guardSlot is the size of one entry of the guarded map in its mapping.
const guardSlot = 8

// slot is entry idx of the mapped guarded map.
func (g *BindGuard) slot(idx uint32) *uint64 {
	return (*uint64)(unsafe.Pointer(&g.mem[int(idx)*guardSlot]))
}

// GuardOptions configures OpenBindGuard.
type GuardOptions struct {
	// Cgroup is the cgroup v2 directory the program is attached to (e.g.
	// /sys/fs/cgroup/unified, or a child cgroup in tests).
	Cgroup string
	// PinDir is a directory on a bpffs where the map and the links are
	// pinned, so that the guard outlives the process; "" leaves it
	// unpinned, detached when the process exits or calls Close. When no
	// bpffs holds PinDir's nearest existing ancestor and that ancestor is
	// an empty directory, a bpffs is mounted there (as on /sys/fs/bpf).
	PinDir string
}

// NewBindGuard loads an unpinned guard and attaches it to the cgroup v2
// directory cgroupPath; see OpenBindGuard.
func NewBindGuard(cgroupPath string) (*BindGuard, error) {
	return OpenBindGuard(GuardOptions{Cgroup: cgroupPath})
}

// OpenBindGuard loads the program and attaches it to opts.Cgroup, or,
// when a guard is pinned in opts.PinDir, adopts it: its map (with every
// port it guards) is kept, and its links are switched atomically to the
// freshly loaded program, so no bind gets through in between. Only binds
// made in the caller's network namespace (netns cookie via getsockopt
// SO_NETNS_COOKIE on a throwaway socket) are checked; sockets passed to
// Allow are let through. Errors wrap the cause and say what is missing
// (root/CAP_BPF, cgroup v2, kernel support, a bpffs); the broker falls
// back to placeholders then.
func OpenBindGuard(opts GuardOptions) (*BindGuard, error) {
	if err := checkCgroup2(opts.Cgroup); err != nil {
		return nil, err
	}
	cookie, err := netnsCookie()
	if err != nil {
		return nil, err
	}
	g := &BindGuard{cookie: cookie, errno: unix.EACCES, pin: opts.PinDir}
	if !bindGuardSetRetval {
		g.errno = unix.EPERM
	}
	if err := g.open(opts.Cgroup); err != nil {
		g.closeFDs()
		return nil, err
	}
	return g, nil
}

// bindGuardSetRetval lets tests load the EPERM fallback program on a
// kernel that has bpf_set_retval.
var bindGuardSetRetval = true

// open creates or adopts the maps, loads the programs and links them.
func (g *BindGuard) open(cgroupPath string) (err error) {
	if g.pin != "" {
		if err := EnsureBPFFS(g.pin); err != nil {
			return err
		}
		if g.lock, err = lockPinDir(g.pin); err != nil {
			return err
		}
	}
	if g.guarded, err = g.openMap(pinPorts, guardedSpec()); err != nil {
		return err
	}
	if mem, err := unix.Mmap(g.guarded.FD(), 0, guardMapEntries*guardSlot, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err == nil {
		g.mem = mem
	}
	if g.allow, err = g.openMap(pinAllow, allowSpec()); err != nil {
		return err
	}
	if err := g.clearAllow(); err != nil {
		return err
	}
	for _, at := range []ebpf.AttachType{ebpf.AttachCGroupInet4Bind, ebpf.AttachCGroupInet6Bind} {
		prog, err := g.load(at)
		if err != nil {
			return err
		}
		g.progs = append(g.progs, prog)
		l, err := g.link(cgroupPath, at, prog)
		if err != nil {
			return err
		}
		g.links = append(g.links, l)
	}
	return nil
}

// load loads the program for attach type at. The first load probes
// bpf_set_retval; if the verifier refuses it (kernel < 5.18), that and
// every later load go without it and g.errno becomes EPERM.
func (g *BindGuard) load(at ebpf.AttachType) (*ebpf.Program, error) {
	spec := &ebpf.ProgramSpec{
		Name:       "portres_bind",
		Type:       ebpf.CGroupSockAddr,
		AttachType: at,
		License:    "Dual MIT/GPL",
	}
	var first error
	if g.errno == unix.EACCES {
		spec.Instructions = g.instructions(true)
		prog, err := ebpf.NewProgram(spec)
		if err == nil {
			return prog, nil
		}
		var verr *ebpf.VerifierError
		if !errors.As(err, &verr) {
			return nil, fmt.Errorf("bind guard: load program: %w", explainBPFErr(err))
		}
		// Most likely "unknown func bpf_set_retval#187" (kernel < 5.18):
		// retry without it.
		first = err
		g.errno = unix.EPERM
	}
	spec.Instructions = g.instructions(false)
	prog, err := ebpf.NewProgram(spec)
	if err != nil {
		if first != nil {
			return nil, fmt.Errorf("bind guard: load program: %w; without bpf_set_retval: %w", first, err)
		}
		return nil, fmt.Errorf("bind guard: load program: %w", explainBPFErr(err))
	}
	return prog, nil
}

// instructions assembles the program; see the comment at the top of the
// file. setRetval selects bpf_set_retval(-EACCES) before rejecting.
func (g *BindGuard) instructions(setRetval bool) asm.Instructions {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1), // R6 = ctx, kept across calls
		asm.FnGetNetnsCookie.Call(), // R1 = ctx: the socket's netns
		asm.LoadImm(asm.R1, int64(g.cookie), asm.DWord),
		asm.JNE.Reg(asm.R0, asm.R1, "allow"),

		asm.LoadMem(asm.R7, asm.R6, sockAddrUserPort, asm.Word),
		asm.HostTo(asm.BE, asm.R7, asm.Half), // ntohs, zero-extends
		asm.JEq.Imm(asm.R7, 0, "allow"),
		asm.LoadMem(asm.R8, asm.R6, sockAddrProtocol, asm.Word),
		asm.JEq.Imm(asm.R8, unix.IPPROTO_TCP, "lookup"),
		asm.JNE.Imm(asm.R8, unix.IPPROTO_UDP, "allow"),
		asm.Or.Imm(asm.R7, 1<<16),

		asm.StoreMem(asm.RFP, -4, asm.R7, asm.Word).WithSymbol("lookup"),
		asm.LoadMapPtr(asm.R1, g.guarded.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "allow"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.Byte),
		asm.JEq.Imm(asm.R1, 0, "allow"),

		asm.Mov.Reg(asm.R1, asm.R6),
		asm.FnGetSocketCookie.Call(), // the binding socket
		asm.StoreMem(asm.RFP, -16, asm.R0, asm.DWord),
		asm.LoadMapPtr(asm.R1, g.allow.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -16),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "reject"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.Word),
		asm.JEq.Reg(asm.R1, asm.R7, "allow"), // the broker binds it, to this port
	}
	if setRetval {
		insns = append(insns,
			asm.Mov.Imm(asm.R1, -int32(unix.EACCES)).WithSymbol("reject"),
			asm.FnSetRetval.Call(),
			asm.Mov.Imm(asm.R0, 0),
		)
	} else {
		insns = append(insns, asm.Mov.Imm(asm.R0, 0).WithSymbol("reject"))
	}
	return append(insns,
		asm.Return(), // reject
		asm.Mov.Imm(asm.R0, 1).WithSymbol("allow"),
		asm.Return(),
	)
}

// Errno is the error a rejected bind gets: unix.EACCES, or unix.EPERM on
// kernels without bpf_set_retval (before 5.18), where the guard is loaded
// without it.
func (g *BindGuard) Errno() unix.Errno { return g.errno }

// Guard refuses foreign binds to ports [lo, hi] of proto (6 TCP, 17 UDP).
// Port 0 is ignored (the program never rejects it).
func (g *BindGuard) Guard(proto uint8, lo, hi uint16) error {
	return g.set(proto, lo, hi, 1)
}

// Unguard lets binds to ports [lo, hi] of proto through again.
func (g *BindGuard) Unguard(proto uint8, lo, hi uint16) error {
	return g.set(proto, lo, hi, 0)
}

func (g *BindGuard) set(proto uint8, lo, hi uint16, v uint8) error {
	base, err := guardBase(proto)
	if err != nil {
		return err
	}
	if lo > hi {
		return fmt.Errorf("bind guard: invalid port range %d-%d", lo, hi)
	}
	if lo == 0 {
		lo = 1
	}
	if hi == 0 {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.guarded == nil {
		return errors.New("bind guard: closed")
	}
	if g.mem != nil {
		var val [guardSlot]byte
		val[0] = v
		word := binary.NativeEndian.Uint64(val[:])
		for port := int(lo); port <= int(hi); port++ {
			atomic.StoreUint64(g.slot(base|uint32(port)), word)
		}
		return nil
	}
	n := int(hi) - int(lo) + 1
	keys := make([]uint32, n)
	vals := make([]uint8, n)
	for i := range keys {
		keys[i] = base | uint32(int(lo)+i)
		vals[i] = v
	}
	done, err := g.guarded.BatchUpdate(keys, vals, nil)
	if err == nil && done == n {
		return nil
	}
	if err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("bind guard: update %s ports %d-%d: %w", protoName(proto), lo, hi, err)
	}
	// No batch operations (kernel < 5.6) or a short batch: one by one.
	for i := range keys {
		if err := g.guarded.Update(keys[i], vals[i], ebpf.UpdateAny); err != nil {
			return fmt.Errorf("bind guard: update %s port %d: %w", protoName(proto), keys[i]&0xffff, err)
		}
	}
	return nil
}

// Guarded reports whether port of proto is guarded (a map lookup).
func (g *BindGuard) Guarded(proto uint8, port uint16) (bool, error) {
	base, err := guardBase(proto)
	if err != nil {
		return false, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.guarded == nil {
		return false, errors.New("bind guard: closed")
	}
	if g.mem != nil {
		return atomic.LoadUint64(g.slot(base|uint32(port))) != 0 && port != 0, nil
	}
	var v uint8
	if err := g.guarded.Lookup(base|uint32(port), &v); err != nil {
		return false, fmt.Errorf("bind guard: look up %s port %d: %w", protoName(proto), port, err)
	}
	return v != 0 && port != 0, nil
}

// Close closes the guard's descriptors. An unpinned guard is detached
// and its maps freed; a pinned one stays attached with its map, for the
// next broker to adopt (UninstallGuard removes it). It is safe to call
// more than once.
func (g *BindGuard) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closeFDs()
}

// closeFDs is Close. Caller holds g.mu or owns g exclusively.
func (g *BindGuard) closeFDs() error {
	g.flushSpentLocked() // a pinned map outlives the guard
	if g.mem != nil {
		unix.Munmap(g.mem)
		g.mem = nil
	}
	var errs []error
	for _, l := range g.links {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("bind guard: detach: %w", err))
		}
	}
	for _, p := range g.progs {
		p.Close()
	}
	for _, m := range []*ebpf.Map{g.guarded, g.allow} {
		if m != nil {
			m.Close()
		}
	}
	if g.lock != nil {
		g.lock.Close()
	}
	g.links, g.progs, g.guarded, g.allow, g.lock = nil, nil, nil, nil, nil
	return errors.Join(errs...)
}

// guardBase is the map index of port 0 of proto.
func guardBase(proto uint8) (uint32, error) {
	switch proto {
	case unix.IPPROTO_TCP:
		return 0, nil
	case unix.IPPROTO_UDP:
		return 1 << 16, nil
	}
	return 0, fmt.Errorf("bind guard: protocol %d is neither TCP (6) nor UDP (17)", proto)
}

// checkCgroup2 fails unless path is a directory of a cgroup v2 mount.
func checkCgroup2(path string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return fmt.Errorf("bind guard: cgroup %s: %w", path, err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return fmt.Errorf("bind guard: %s is not a cgroup v2 directory (filesystem magic %#x; mount cgroup2, e.g. on /sys/fs/cgroup/unified)", path, st.Type)
	}
	return nil
}

// NetNSCookie is the cookie of the caller's network namespace
// (SO_NETNS_COOKIE, kernel 5.14): unlike the namespace's inode number, it
// names no other namespace while the system runs.
func NetNSCookie() (uint64, error) { return netnsCookie() }

// netnsCookie returns the cookie of the caller's network namespace, read
// with SO_NETNS_COOKIE (kernel 5.14) from a throwaway socket. The calling
// thread is locked so that a thread in another namespace is not used.
func netnsCookie() (uint64, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	}
	if err != nil {
		return 0, fmt.Errorf("bind guard: socket for SO_NETNS_COOKIE: %w", err)
	}
	defer unix.Close(fd)
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		if errors.Is(err, unix.ENOPROTOOPT) {
			err = fmt.Errorf("%w (needs kernel 5.14)", err)
		}
		return 0, fmt.Errorf("bind guard: getsockopt SO_NETNS_COOKIE: %w", err)
	}
	return cookie, nil
}

// explainBPFErr adds what is missing to the usual bpf(2) failures.
func explainBPFErr(err error) error {
	switch {
	case errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("%w (kernel lacks cgroup sock_addr bind programs or bpf_link)", err)
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("%w (needs root, or CAP_BPF and CAP_NET_ADMIN)", err)
	case errors.Is(err, unix.EBADF) || errors.Is(err, unix.ENOTDIR):
		return fmt.Errorf("%w (not a cgroup v2 directory)", err)
	}
	return err
}
