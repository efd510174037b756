//go:build linux

package broker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/portres/portres/internal/fdpass"
	"github.com/portres/portres/internal/paths"
	"golang.org/x/sys/unix"
)

// fileID identifies a file by device and inode; the zero value is none.
type fileID struct{ dev, ino uint64 }

func idOf(st *unix.Stat_t) fileID { return fileID{uint64(st.Dev), st.Ino} }

// takeLock flocks SOCKET.lock: the lock, not a probe of the socket, says
// whether another broker is alive, so a stale socket file is replaced
// safely and a live one never is. The lock file is never opened through a
// symbolic link and is written only if it is a regular file of our own.
func (b *Broker) takeLock() error {
	if err := b.socketDir(); err != nil {
		return err
	}
	f, err := openLock(b.cfg.Socket + ".lock")
	if err != nil {
		return err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		pid := make([]byte, 32)
		n, _ := f.ReadAt(pid, 0)
		f.Close()
		return fmt.Errorf("portresd: another portresd (pid %s) owns %s: %w",
			strings.TrimSpace(string(pid[:n])), b.cfg.Socket, err)
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())), 0)
	b.lock = f
	return nil
}

// socketDir makes sure the socket's directory exists. The per-user
// fallback /tmp/portres-UID, a name anyone could have taken first, must be
// ours and private (paths.EnsurePrivateDir); any other directory is
// created 0755 if missing.
func (b *Broker) socketDir() error {
	dir, err := filepath.Abs(filepath.Dir(b.cfg.Socket))
	if err != nil {
		return fmt.Errorf("portresd: socket directory: %w", err)
	}
	if uid := os.Geteuid(); dir == paths.FallbackDir(uid) {
		if err := paths.EnsurePrivateDir(dir, uid); err != nil {
			return fmt.Errorf("portresd: socket directory: %w", err)
		}
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("portresd: socket directory: %w", err)
	}
	return nil
}

// openLock opens (creating it 0644) the lock file at path without
// following a symbolic link, and checks that it is a regular file owned by
// us with a single link (not a hard link to a file elsewhere).
func openLock(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("portresd: lock file %s: a symbolic link is there; want a regular file owned by uid %d",
			path, os.Geteuid())
	}
	if err != nil {
		return nil, fmt.Errorf("portresd: lock file: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("portresd: lock file %s: fstat: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || int(st.Uid) != os.Geteuid() || st.Nlink != 1 {
		f.Close()
		return nil, fmt.Errorf("portresd: lock file %s: %s is there; want a regular file owned by uid %d with one link",
			path, describe(&st), os.Geteuid())
	}
	return f, nil
}

// listen removes a stale socket left by a previous broker (we hold the
// lock, so no live broker owns it), listens, records the new socket's
// identity for removeSocket and sets its mode.
func (b *Broker) listen() error {
	if err := removeStale(b.cfg.Socket); err != nil {
		return err
	}
	ln, err := fdpass.Listen(b.cfg.Socket)
	if err != nil {
		return fmt.Errorf("portresd: %w", err)
	}
	b.ln = ln
	return b.adoptSocket()
}

// removeStale unlinks path if it is a socket owned by us, the leftover of
// a previous broker; anything else there (a regular file, a directory, a
// symbolic link, someone else's socket) is refused and left alone.
func removeStale(path string) error {
	var st unix.Stat_t
	err := unix.Lstat(path, &st)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("portresd: stat socket path %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("portresd: socket path %s: %s is there, not a socket left by a previous portresd (owned by uid %d); refusing to replace it",
			path, describe(&st), os.Geteuid())
	}
	if err := unix.Unlink(path); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("portresd: remove stale socket %s: %w", path, err)
	}
	return nil
}

// adoptSocket records the device and inode of the socket just bound at
// the configured path and sets its mode, through an O_PATH descriptor so
// that neither step can be diverted through a symbolic link put there.
func (b *Broker) adoptSocket() error {
	path := b.cfg.Socket
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("portresd: open socket %s: %w", path, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("portresd: stat socket %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("portresd: socket %s: %s is there after listening", path, describe(&st))
	}
	b.sock = idOf(&st)
	mode := uint32(b.cfg.SocketMode.Perm())
	if err := unix.Chmod("/proc/self/fd/"+strconv.Itoa(fd), mode); err != nil {
		return fmt.Errorf("portresd: chmod %s: %w", path, err)
	}
	return nil
}

// removeSocket unlinks the socket path at exit only if it still is the
// socket this broker created; whatever has replaced it is left alone.
func (b *Broker) removeSocket() {
	var st unix.Stat_t
	if b.sock == (fileID{}) || unix.Lstat(b.cfg.Socket, &st) != nil {
		return
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || idOf(&st) != b.sock {
		b.log.Warn("socket path replaced; leaving it", "socket", b.cfg.Socket, "found", describe(&st))
		return
	}
	if err := unix.Unlink(b.cfg.Socket); err != nil && !errors.Is(err, unix.ENOENT) {
		b.log.Warn("removing socket", "socket", b.cfg.Socket, "err", err)
	}
}

// describe names what st is and who owns it, for error messages.
func describe(st *unix.Stat_t) string {
	var kind string
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		kind = "a regular file"
		if st.Nlink > 1 {
			kind = fmt.Sprintf("a regular file with %d links", st.Nlink)
		}
	case unix.S_IFDIR:
		kind = "a directory"
	case unix.S_IFLNK:
		kind = "a symbolic link"
	case unix.S_IFSOCK:
		kind = "a socket"
	case unix.S_IFIFO:
		kind = "a named pipe"
	case unix.S_IFCHR, unix.S_IFBLK:
		kind = "a device"
	default:
		kind = "a special file"
	}
	return fmt.Sprintf("%s owned by uid %d", kind, st.Uid)
}
