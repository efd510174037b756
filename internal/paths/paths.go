// Package paths computes the default locations of the broker's socket
// and state database, shared by the daemon and its clients.
package paths

import (
	"fmt"
	"os"
	"path/filepath"
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
// (or /tmp/portres-UID/portres.sock without XDG_RUNTIME_DIR).
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
func ClientSocket() string {
	if p := os.Getenv(EnvSocket); p != "" {
		return p
	}
	if os.Geteuid() != 0 {
		if p := userSocket(); exists(p) {
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

func userSocket() string {
	if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" {
		return filepath.Join(dir, "portres.sock")
	}
	return fmt.Sprintf("/tmp/portres-%d/portres.sock", os.Geteuid())
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
