//go:build linux

package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// ErrUnsafeFile: a file the store would open (the database, its
// temporary copy during creation, PATH.sysctl) is a symbolic link, not a
// regular file, not owned by the process's effective uid, writable by
// group or others, or was replaced while being opened. portresd runs as
// root: following such a file could make it write wherever someone else
// points it. The store refuses it, names the path, the owner and what it
// expects, and writes nothing.
var ErrUnsafeFile = errors.New("store: refusing unsafe file")

// openFlags are added to every open of a store file: never follow a
// symlink in the last component, never leak the descriptor into a child,
// never block in open (a FIFO or a device put in the file's place is
// refused by the fstat that follows rather than hanging the daemon).
const openFlags = syscall.O_NOFOLLOW | syscall.O_CLOEXEC | syscall.O_NONBLOCK

// fileID pins the file a sequence of opens must keep finding: the first
// open through it records the device and inode, later ones must find the
// same (Open verifies a file read-only, then reopens it for writing; the
// path must not be swapped in between). file is the last descriptor
// opened through it, which bbolt owns and closes.
type fileID struct {
	dev, ino uint64
	set      bool
	file     *os.File
}

// opener returns a bbolt Options.OpenFile that opens through openOwned,
// pinned to id, for operation op. It never creates the file: the store
// creates its files itself, and a path that vanished is an error.
func (id *fileID) opener(op string) func(string, int, os.FileMode) (*os.File, error) {
	return func(name string, flag int, perm os.FileMode) (*os.File, error) {
		f, err := openOwned(op, name, flag&^os.O_CREATE, perm, id)
		if err == nil {
			id.file = f
		}
		return f, err
	}
}

// openOwned opens path with flag plus openFlags and checks the
// descriptor with fstat: a regular file owned by the effective uid and
// not writable by group or others. If id is non-nil, the file must also
// be the one id recorded (recording it on first use). A refusal wraps
// ErrUnsafeFile and names op, path, what was found and what is expected;
// other failures are returned as os.OpenFile's *fs.PathError.
func openOwned(op, path string, flag int, perm os.FileMode, id *fileID) (*os.File, error) {
	f, err := os.OpenFile(path, flag|openFlags, perm)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			if fi, lerr := os.Lstat(path); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
				return nil, symlinkError(op, path)
			}
		}
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if err := checkOwned(op, path, fi); err != nil {
		f.Close()
		return nil, err
	}
	if id != nil {
		st := fi.Sys().(*syscall.Stat_t)
		dev, ino := uint64(st.Dev), uint64(st.Ino)
		if id.set && (id.dev != dev || id.ino != ino) {
			f.Close()
			return nil, fmt.Errorf("%w: %s %s: the file was replaced while it was being opened (device %d inode %d, was device %d inode %d)",
				ErrUnsafeFile, op, path, dev, ino, id.dev, id.ino)
		}
		id.dev, id.ino, id.set = dev, ino, true
	}
	return f, nil
}

// checkOwned refuses fi (the fstat of path) unless it is a regular file
// owned by the effective uid and not writable by group or others.
func checkOwned(op, path string, fi fs.FileInfo) error {
	euid := os.Geteuid()
	want := fmt.Sprintf("want a regular file owned by uid %d (this process's effective uid) and writable by nobody else", euid)
	st := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%w: %s %s: a %s owned by uid %d, %s", ErrUnsafeFile, op, path, fileType(fi.Mode()), st.Uid, want)
	case int(st.Uid) != euid:
		return fmt.Errorf("%w: %s %s: owned by uid %d (gid %d, mode %#o), %s; chown it or move it away",
			ErrUnsafeFile, op, path, st.Uid, st.Gid, fi.Mode().Perm(), want)
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("%w: %s %s: mode %#o is writable by group or others (owner uid %d), %s; chmod go-w it",
			ErrUnsafeFile, op, path, fi.Mode().Perm(), st.Uid, want)
	}
	return nil
}

// symlinkError is the refusal of a symlink at path, naming its target.
func symlinkError(op, path string) error {
	target, err := os.Readlink(path)
	if err != nil {
		target = "?"
	}
	return fmt.Errorf("%w: %s %s: a symbolic link (to %q); files opened as root are never followed through symlinks, "+
		"want a regular file owned by uid %d in its place", ErrUnsafeFile, op, path, target, os.Geteuid())
}

// fileType names the type of a non-regular file for error messages.
func fileType(m fs.FileMode) string {
	switch {
	case m&fs.ModeDir != 0:
		return "directory"
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	case m&fs.ModeNamedPipe != 0:
		return "FIFO"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	}
	return "non-regular file (" + m.Type().String() + ")"
}

// fileError wraps err from operation op on path, unless it is a refusal
// that already names both.
func fileError(op, path string, err error) error {
	if errors.Is(err, ErrUnsafeFile) {
		return err
	}
	return fmt.Errorf("store: %s %s: %w", op, path, err)
}
