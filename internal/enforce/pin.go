//go:build linux

package enforce

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// A pinned guard (GuardOptions.PinDir) is four objects in a bpffs
// directory: the guarded-ports map, the allow map and one link per
// attach type. The links keep the program attached to its cgroup after
// the broker exits, and the map keeps what it guards, so a crash or a
// restart of the broker never opens a reserved port. The next broker
// adopts the map as it is, loads its own program (the netns cookie is a
// constant of the program) and switches the links to it atomically
// (BPF_LINK_UPDATE). A flock on the directory keeps two brokers from
// sharing one pinned guard.
const (
	pinPorts = "ports"
	pinAllow = "allow"
	pinBind4 = "bind4"
	pinBind6 = "bind6"
)

// BPFFSRoot is where a bpffs is mounted by convention.
const BPFFSRoot = "/sys/fs/bpf"

// DefaultPinDir is where the broker pins its guard by default:
// /sys/fs/bpf/portres/net-COOKIE, one directory per network namespace
// (the cookie never names another namespace while the system runs), so
// brokers of different namespaces never adopt each other's guard.
func DefaultPinDir() (string, error) {
	cookie, err := netnsCookie()
	if err != nil {
		return "", err
	}
	return filepath.Join(BPFFSRoot, "portres", fmt.Sprintf("net-%x", cookie)), nil
}

// guardedSpec is the guarded-ports array.
func guardedSpec() *ebpf.MapSpec {
	// Mappable (kernel 5.5, older than anything else the guard needs):
	// the broker guards and unguards ports with stores, not system calls.
	// A map pinned by a broker before that is replaced at adoption, its
	// entries copied.
	return &ebpf.MapSpec{Name: "portres_guard", Type: ebpf.Array, KeySize: 4, ValueSize: 1, MaxEntries: guardMapEntries,
		Flags: unix.BPF_F_MMAPABLE}
}

// allowSpec is the hash of the sockets the broker is binding: socket
// cookie → the one port each may bind (the guarded map's index).
func allowSpec() *ebpf.MapSpec {
	return &ebpf.MapSpec{Name: "portres_allow", Type: ebpf.Hash, KeySize: 8, ValueSize: 4, MaxEntries: allowEntries}
}

// IsBPFFS reports whether path is on a bpffs.
func IsBPFFS(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}

// EnsureBPFFS makes dir, which must end up on a bpffs. If its nearest
// existing ancestor is not on one, a bpffs is mounted there first,
// provided that ancestor is an empty directory (as /sys/fs/bpf is on
// systems that mount none): nothing is ever hidden by the mount.
func EnsureBPFFS(dir string) error {
	dir = filepath.Clean(dir)
	base := dir
	for {
		if _, err := os.Stat(base); err == nil {
			break
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("bind guard: pin directory %s: %w", dir, err)
		}
		parent := filepath.Dir(base)
		if parent == base {
			break
		}
		base = parent
	}
	if !IsBPFFS(base) {
		ents, err := os.ReadDir(base)
		if err != nil {
			return fmt.Errorf("bind guard: pin directory %s: %w", dir, err)
		}
		if len(ents) > 0 {
			return fmt.Errorf("bind guard: pin directory %s is not on a bpffs, and %s is not empty, so none is mounted there (mount one: mount -t bpf bpf %s)", dir, base, BPFFSRoot)
		}
		if err := unix.Mount("bpf", base, "bpf", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0700"); err != nil {
			return fmt.Errorf("bind guard: mount a bpffs on %s: %w", base, explainBPFErr(err))
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("bind guard: pin directory %s: %w", dir, err)
	}
	return nil
}

// lockPinDir takes the flock that makes a broker the only user of the
// pinned guard in dir.
func lockPinDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("bind guard: pin directory: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("bind guard: the guard pinned in %s is in use by another portresd", dir)
		}
		return nil, fmt.Errorf("bind guard: lock %s: %w", dir, err)
	}
	return f, nil
}

// openMap adopts the map pinned as name if it matches spec, else creates
// one (pinning it when the guard is pinned). A pinned map of another
// shape (an older layout) is replaced; its non-zero entries are copied
// first, so nothing it guarded is let go.
func (g *BindGuard) openMap(name string, spec *ebpf.MapSpec) (*ebpf.Map, error) {
	var old *ebpf.Map
	if g.pin != "" {
		path := filepath.Join(g.pin, name)
		m, err := ebpf.LoadPinnedMap(path, nil)
		switch {
		case err == nil:
			if spec.Compatible(m) == nil {
				g.adopted = true
				return m, nil
			}
			old = m
			if err := m.Unpin(); err != nil {
				m.Close()
				return nil, fmt.Errorf("bind guard: replace pinned map %s: %w", path, err)
			}
		case !errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("bind guard: load pinned map %s: %w", path, explainBPFErr(err))
		}
	}
	m, err := ebpf.NewMap(spec)
	if err != nil {
		if old != nil {
			old.Close()
		}
		return nil, fmt.Errorf("bind guard: create map %s: %w", name, explainBPFErr(err))
	}
	if old != nil {
		copyNonZero(old, m)
		old.Close()
	}
	if g.pin != "" {
		if err := m.Pin(filepath.Join(g.pin, name)); err != nil {
			m.Close()
			return nil, fmt.Errorf("bind guard: pin map %s: %w", name, err)
		}
	}
	return m, nil
}

// copyNonZero copies the entries of from whose value is not all zero
// bytes and whose key fits to, best effort.
func copyNonZero(from, to *ebpf.Map) {
	key := make([]byte, from.KeySize())
	val := make([]byte, from.ValueSize())
	it := from.Iterate()
	for it.Next(&key, &val) {
		for _, v := range val {
			if v != 0 {
				if len(key) == int(to.KeySize()) {
					one := make([]byte, to.ValueSize())
					one[0] = 1
					to.Update(key, one, ebpf.UpdateAny)
				}
				break
			}
		}
	}
}

// clearAllow empties the allow map: entries a crashed broker left there
// name sockets that were never bound through it or are bound already.
func (g *BindGuard) clearAllow() error {
	var keys []uint64
	var k uint64
	var v uint32
	it := g.allow.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, k)
	}
	for _, k := range keys {
		if err := g.allow.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("bind guard: clear the allow map: %w", err)
		}
	}
	return nil
}

// link attaches prog to cgroupPath for at, or adopts the link pinned for
// at and switches it to prog, atomically, if it is attached to that
// cgroup. A pinned link to another cgroup (the configuration changed) is
// replaced once the new one is attached.
func (g *BindGuard) link(cgroupPath string, at ebpf.AttachType, prog *ebpf.Program) (link.Link, error) {
	name := pinBind4
	if at == ebpf.AttachCGroupInet6Bind {
		name = pinBind6
	}
	path := filepath.Join(g.pin, name)
	var stale link.Link
	if g.pin != "" {
		l, err := link.LoadPinnedLink(path, nil)
		switch {
		case err == nil:
			if linkedTo(l, cgroupPath) {
				if err := l.Update(prog); err != nil {
					l.Close()
					return nil, fmt.Errorf("bind guard: switch the pinned link %s to the new program: %w", path, explainBPFErr(err))
				}
				return l, nil
			}
			stale = l
		case !errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("bind guard: load pinned link %s: %w", path, explainBPFErr(err))
		}
	}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroupPath, Attach: at, Program: prog})
	if err != nil {
		if stale != nil {
			stale.Close()
		}
		return nil, fmt.Errorf("bind guard: attach to cgroup %s (%s): %w", cgroupPath, at, explainBPFErr(err))
	}
	if stale != nil {
		// The old link stays attached until the new one is pinned in
		// its place; then both guard, for a moment, the same map.
		if err := stale.Unpin(); err != nil {
			l.Close()
			stale.Close()
			return nil, fmt.Errorf("bind guard: replace pinned link %s: %w", path, err)
		}
		stale.Close()
	}
	if g.pin != "" {
		if err := l.Pin(path); err != nil {
			l.Close()
			return nil, fmt.Errorf("bind guard: pin link %s: %w (the kernel may lack bpf_link for cgroups, 5.7)", path, err)
		}
	}
	return l, nil
}

// linkedTo reports whether l is a cgroup link to the cgroup at path (a
// cgroup's id is its directory's inode number).
func linkedTo(l link.Link, path string) bool {
	info, err := l.Info()
	if err != nil || info.Cgroup() == nil {
		return false
	}
	var st unix.Stat_t
	return unix.Stat(path, &st) == nil && info.Cgroup().CgroupId == st.Ino
}

// Adopted reports whether the guard was found pinned, left by an earlier
// broker, rather than made anew.
func (g *BindGuard) Adopted() bool { return g.adopted }

// PinDir is the bpffs directory the guard is pinned in; "" when it is
// not pinned.
func (g *BindGuard) PinDir() string { return g.pin }

// Allow lets the socket fd bind port of proto through the guard (that
// port only) until done is called: the broker binding a client's
// socket, or probing a port. It returns the socket's cookie, and costs a
// getsockopt and a map update. done(spent) ends the allowance: at once
// (a second map update) unless spent says the socket can make no use of
// it any more, being bound (a socket binds once) or about to be closed
// by the caller (a cookie is never reused); spent cookies are deleted in
// batches of spentBatch, one system call each.
func (g *BindGuard) Allow(fd int, proto uint8, port uint16) (cookie uint64, done func(spent bool), err error) {
	base, err := guardBase(proto)
	if err != nil {
		return 0, nil, err
	}
	cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
	if err != nil {
		return 0, nil, fmt.Errorf("bind guard: getsockopt SO_COOKIE: %w", err)
	}
	done, err = g.allowCookie(cookie, base|uint32(port))
	return cookie, done, err
}

// spentBatch is how many spent allowances wait for one batch delete:
// far below allowEntries, so that they never crowd out live ones.
const spentBatch = 64

// allowCookie lets the socket with cookie bind the port of the guarded
// map's index idx until done is called.
func (g *BindGuard) allowCookie(cookie uint64, idx uint32) (func(spent bool), error) {
	g.mu.Lock()
	m := g.allow
	g.mu.Unlock()
	if m == nil {
		return nil, errors.New("bind guard: closed")
	}
	if err := m.Update(cookie, idx, ebpf.UpdateAny); err != nil {
		return nil, fmt.Errorf("bind guard: allow socket %#x: %w", cookie, err)
	}
	return func(spent bool) {
		if !spent {
			m.Delete(cookie)
			return
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		g.spent = append(g.spent, cookie)
		if len(g.spent) >= spentBatch {
			g.flushSpentLocked()
		}
	}, nil
}

// flushSpentLocked deletes the spent allowances. Caller holds g.mu.
func (g *BindGuard) flushSpentLocked() {
	if len(g.spent) == 0 || g.allow == nil {
		g.spent = g.spent[:0]
		return
	}
	if n, err := g.allow.BatchDelete(g.spent, nil); err != nil {
		// Before 5.6, or a key already gone: one by one.
		for _, c := range g.spent[n:] {
			g.allow.Delete(c)
		}
	}
	g.spent = g.spent[:0]
}

// Reconcile makes the guarded ports exactly tcp and udp, in one batch
// write of the whole map: a port guarded in both the old and the new set
// is never let go in between. A broker calls it at start-up, once it
// knows which runtime blocks survived.
func (g *BindGuard) Reconcile(tcp, udp *Bitmap) error {
	keys := make([]uint32, guardMapEntries)
	vals := make([]uint8, guardMapEntries)
	for i := range keys {
		keys[i] = uint32(i)
		m := tcp
		if i >= 1<<16 {
			m = udp
		}
		if port := i & 0xffff; port != 0 && m != nil && m[port/64]&(1<<(port%64)) != 0 {
			vals[i] = 1
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.guarded == nil {
		return errors.New("bind guard: closed")
	}
	done, err := g.guarded.BatchUpdate(keys, vals, nil)
	if err == nil && done == len(keys) {
		return nil
	}
	if err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("bind guard: reconcile: %w", err)
	}
	for i := range keys {
		if err := g.guarded.Update(keys[i], vals[i], ebpf.UpdateAny); err != nil {
			return fmt.Errorf("bind guard: reconcile port %d: %w", keys[i]&0xffff, err)
		}
	}
	return nil
}

// GuardedPorts returns the ports of proto the guard keeps, as a bitmap.
func (g *BindGuard) GuardedPorts(proto uint8) (*Bitmap, error) {
	base, err := guardBase(proto)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.guarded == nil {
		return nil, errors.New("bind guard: closed")
	}
	var bm Bitmap
	var k uint32
	var v uint8
	it := g.guarded.Iterate()
	for it.Next(&k, &v) {
		if v != 0 && k&^0xffff == base && k&0xffff != 0 {
			p := k & 0xffff
			bm[p/64] |= 1 << (p % 64)
		}
	}
	return &bm, it.Err()
}

// UninstallGuard removes the guard pinned in dir: its links are
// unpinned (the program is detached once no process holds them), its
// maps unpinned, the directory removed. It fails while a broker uses the
// guard. A dir without a guard is not an error; removed says whether
// there was one.
func UninstallGuard(dir string) (removed bool, err error) {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if !IsBPFFS(dir) {
		return false, fmt.Errorf("bind guard: %s is not on a bpffs", dir)
	}
	lock, err := lockPinDir(dir)
	if err != nil {
		return false, err
	}
	defer lock.Close()
	var errs []error
	for _, name := range []string{pinBind4, pinBind6} {
		l, err := link.LoadPinnedLink(filepath.Join(dir, name), nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("bind guard: load pinned link %s: %w", name, err))
			continue
		}
		removed = true
		if err := l.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("bind guard: unpin link %s: %w", name, err))
		}
		l.Close()
	}
	for _, name := range []string{pinPorts, pinAllow} {
		path := filepath.Join(dir, name)
		if err := os.Remove(path); err == nil {
			removed = true
		} else if !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("bind guard: unpin map %s: %w", name, err))
		}
	}
	if len(errs) == 0 {
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("bind guard: remove %s: %w", dir, err))
		}
	}
	return removed, errors.Join(errs...)
}
