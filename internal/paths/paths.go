//go:build linux

// Package paths computes the default locations of the broker's socket
// and state database, shared by the daemon and its clients.
package paths

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Environment variables that override the defaults.
const (
	EnvSocket = "PORTRES_SOCKET"
	EnvState  = "PORTRES_STATE"
)

// System locations, used by a root daemon.
const (
	SystemSocket = "/run/portres/portres.sock"
	SystemState  = "/var/lib/portres/state.db"
)

// DaemonSocket is where portresd listens by default: $PORTRES_SOCKET, else
// /run/portres/portres.sock for root, else $XDG_RUNTIME_DIR/portres.sock
// (or FallbackDir/portres.sock without XDG_RUNTIME_DIR, a directory
// portresd creates with EnsurePrivateDir and refuses if it is not private).
func DaemonSocket() string {
	if p := os.Getenv(EnvSocket); p != "" {
		return p
	}
	if os.Geteuid() == 0 {
		return SystemSocket
	}
	return userSocket()
}

// ClientSocket is where clients look for the broker: $PORTRES_SOCKET, else
// the system socket for root, else the per-user socket when it exists,
// else the system socket (a non-root client of a system daemon).
//
// Without XDG_RUNTIME_DIR the per-user socket lives in FallbackDir, which
// any local user could have created first: a socket there is used only if
// the directory passes CheckPrivateDir (it is the user's own, mode 0700),
// as portresd would have insisted. Otherwise ClientSocket ignores it, as if
// no per-user broker ran, and returns the system socket.
func ClientSocket() string {
	if p := os.Getenv(EnvSocket); p != "" {
		return p
	}
	if uid := os.Geteuid(); uid != 0 {
		if p := userSocket(); exists(p) && trustedDir(filepath.Dir(p), uid) {
			return p
		}
	}
	return SystemSocket
}

// State is the default database path: $PORTRES_STATE, else
// /var/lib/portres/state.db for root, else
// $XDG_STATE_HOME/portres/state.db (~/.local/state/portres/state.db).
func State() string {
	if p := os.Getenv(EnvState); p != "" {
		return p
	}
	if os.Geteuid() == 0 {
		return SystemState
	}
	dir := os.Getenv("XDG_STATE_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = fmt.Sprintf("/tmp/portres-%d", os.Geteuid())
		}
		dir = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(dir, "portres", "state.db")
}

// tmpBase is where FallbackDir lives; tests move it.
var tmpBase = "/tmp"

// FallbackDir is the per-user socket directory used without
// XDG_RUNTIME_DIR: /tmp/portres-UID. Anyone may create a name in /tmp, so
// it must pass CheckPrivateDir before a socket in it is trusted.
func FallbackDir(uid int) string {
	return filepath.Join(tmpBase, fmt.Sprintf("portres-%d", uid))
}

// ErrNotPrivate is wrapped by the errors of CheckPrivateDir and
// EnsurePrivateDir for a path that exists but is not a private directory.
var ErrNotPrivate = errors.New("not a private directory")

// CheckPrivateDir reports whether dir is a directory (not a symbolic link
// to one) owned by uid with no group or other permission bits, so that
// nobody but uid (and root) can place or replace a socket in it.
func CheckPrivateDir(dir string, uid int) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("check private directory: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	var what string
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		what = "is a symbolic link"
	case !fi.IsDir():
		what = fmt.Sprintf("is a %s, not a directory", kind(fi.Mode()))
	case !ok:
		what = "has no owner information"
	case int(st.Uid) != uid:
		what = fmt.Sprintf("is owned by uid %d", st.Uid)
	case fi.Mode().Perm()&0o077 != 0:
		what = fmt.Sprintf("has mode %04o", fi.Mode().Perm())
	default:
		return nil
	}
	return fmt.Errorf("check private directory %s: %s; want a directory owned by uid %d with mode 0700: %w",
		dir, what, uid, ErrNotPrivate)
}

// EnsurePrivateDir creates dir with mode 0700 if it is missing (its parent
// must exist; no symbolic link is followed) and then checks it with
// CheckPrivateDir: an existing dir that is not uid's own and private is
// refused, never repaired.
func EnsurePrivateDir(dir string, uid int) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create private directory: %w", err)
	}
	return CheckPrivateDir(dir, uid)
}

// trustedDir reports whether a client may use a per-user socket in dir.
// XDG_RUNTIME_DIR is the user's own by contract; FallbackDir is checked.
func trustedDir(dir string, uid int) bool {
	return filepath.Clean(dir) != FallbackDir(uid) || CheckPrivateDir(dir, uid) == nil
}

// kind names the type of file with mode m, for error messages.
func kind(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "regular file"
	case m.IsDir():
		return "directory"
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "special file"
}

func userSocket() string {
	if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" {
		return filepath.Join(dir, "portres.sock")
	}
	return filepath.Join(FallbackDir(os.Geteuid()), "portres.sock")
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
