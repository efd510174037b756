package broker

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// takeLock flocks SOCKET.lock: the lock, not a probe of the socket, says
// whether another broker is alive, so a stale socket file is replaced
// safely and a live one never is.
func (b *Broker) takeLock() error {
	dir := filepath.Dir(b.cfg.Socket)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("portresd: socket directory: %w", err)
	}
	f, err := os.OpenFile(b.cfg.Socket+".lock", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("portresd: lock file: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		pid, _ := os.ReadFile(f.Name())
		f.Close()
		return fmt.Errorf("portresd: another portresd (pid %s) owns %s: %w", string(pid), b.cfg.Socket, err)
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())), 0)
	b.lock = f
	return nil
}

func (b *Broker) listen() error {
	os.Remove(b.cfg.Socket) // stale: we hold the lock
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: b.cfg.Socket, Net: "unixpacket"})
	if err != nil {
		return fmt.Errorf("portresd: listen on %s: %w", b.cfg.Socket, err)
	}
	ln.SetUnlinkOnClose(false)
	b.ln = ln
	if err := os.Chmod(b.cfg.Socket, b.cfg.SocketMode); err != nil {
		return fmt.Errorf("portresd: chmod %s: %w", b.cfg.Socket, err)
	}
	return nil
}
