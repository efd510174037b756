//go:build linux

package broker

import (
	"os"

	"golang.org/x/sys/unix"
)

// notify sends state ("READY=1", "STOPPING=1", ...) to the service
// manager's notification socket, $NOTIFY_SOCKET, as sd_notify(3) does; it
// does nothing when the variable is unset (not started by systemd with
// Type=notify). An abstract socket is named with a leading '@'.
func notify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Sendto(fd, []byte(state), 0, &unix.SockaddrUnix{Name: path})
}
