//go:build linux

package sockdiag

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// sock_diag multicast groups (linux/sock_diag.h): the kernel announces
// each destroyed socket of the family and protocol there.
const (
	groupTCP4Destroy = 1 // SKNLGRP_INET_TCP_DESTROY
	groupUDP4Destroy = 2 // SKNLGRP_INET_UDP_DESTROY
	groupTCP6Destroy = 3 // SKNLGRP_INET6_TCP_DESTROY
	groupUDP6Destroy = 4 // SKNLGRP_INET6_UDP_DESTROY
)

// Watcher reports the local ports of destroyed TCP or UDP sockets (IPv4
// and IPv6) in the caller's network namespace, as the kernel announces
// them: the moment a bound socket's last descriptor closes. It needs
// CAP_NET_ADMIN. Next and Pause are for one reader; Drain may be called
// by others meanwhile (what it reads, Next does not return); Close may be
// called at any time and ends a waiting Next or Pause.
type Watcher struct {
	// The netlink socket, non-blocking, and an eventfd that Close
	// writes. Next waits for either in poll(2) on its own thread rather
	// than in the runtime's poller: an announcement wakes that thread
	// directly, not the poller and then the goroutine (a second wake-up).
	fd, efd int
	mu      sync.Mutex   // held while reading the socket (buf)
	waiting sync.RWMutex // read-held while polling; Close takes it to close the descriptors
	buf     *[recvBufSize]byte
	closed  atomic.Bool
}

// Watch starts watching destroyed sockets of proto (6 = TCP, 17 = UDP).
func Watch(proto uint8) (_ *Watcher, err error) {
	var groups []int
	switch proto {
	case unix.IPPROTO_TCP:
		groups = []int{groupTCP4Destroy, groupTCP6Destroy}
	case unix.IPPROTO_UDP:
		groups = []int{groupUDP4Destroy, groupUDP6Destroy}
	default:
		return nil, fmt.Errorf("sockdiag: watch: protocol %d is neither TCP nor UDP", proto)
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sockdiag: watch: open netlink socket: %w", err)
	}
	defer func() {
		if err != nil && fd >= 0 {
			unix.Close(fd)
		}
	}()
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sockdiag: watch: bind: %w", err)
	}
	for _, g := range groups {
		if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, g); err != nil {
			return nil, fmt.Errorf("sockdiag: watch: join group %d: %w", g, err)
		}
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("sockdiag: watch: eventfd: %w", err)
	}
	return &Watcher{fd: fd, efd: efd, buf: bufPool.Get().(*[recvBufSize]byte)}, nil
}

// Closed is a destroyed socket as the kernel announces it.
type Closed struct {
	Port   uint16 // its local port
	Cookie uint64 // its cookie (SO_COOKIE): which socket of the port it was
}

// Next waits for the next destroyed sockets and returns them (one
// datagram may announce several). It returns an error wrapping
// unix.ENOBUFS when the kernel dropped announcements (the reader fell
// behind: rescan), and os.ErrClosed once Close was called.
func (w *Watcher) Next() ([]Closed, error) {
	for {
		ports, err := w.read(true)
		if err != unix.EAGAIN {
			return ports, err
		}
		w.waiting.RLock()
		if w.closed.Load() {
			w.waiting.RUnlock()
			return nil, os.ErrClosed
		}
		fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}, {Fd: int32(w.efd), Events: unix.POLLIN}}
		_, err = unix.Poll(fds, -1)
		w.waiting.RUnlock()
		if err != nil && err != unix.EINTR {
			return nil, fmt.Errorf("sockdiag: watch: poll: %w", err)
		}
	}
}

// Drain returns, without waiting, the destroyed sockets announced and
// not yet read (by Next or an earlier Drain).
func (w *Watcher) Drain() ([]Closed, error) {
	var all []Closed
	for {
		ports, err := w.read(false)
		switch {
		case err == unix.EAGAIN:
			return all, nil
		case err != nil:
			return all, err
		}
		all = append(all, ports...)
	}
}

// read reads announcements until it has some (one datagram may carry
// several), or the socket is empty: unix.EAGAIN. untilSome false returns
// after one datagram, announcing or not.
func (w *Watcher) read(untilSome bool) ([]Closed, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		if w.closed.Load() {
			return nil, os.ErrClosed
		}
		n, from, err := unix.Recvfrom(w.fd, w.buf[:], unix.MSG_DONTWAIT)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			return nil, err
		}
		if err != nil {
			return nil, fmt.Errorf("sockdiag: watch: receive: %w", err)
		}
		if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
			continue // only the kernel speaks here
		}
		var ports []Closed
		// Announcements carry sequence number 0.
		_, _, err = readMessages(w.buf[:n], 0, func(typ uint16, data []byte) bool {
			if s, ok := parseMsg(data); ok && typ == unix.SOCK_DIAG_BY_FAMILY && s.port != 0 {
				ports = append(ports, Closed{Port: s.port, Cookie: s.cookie})
			}
			return false
		})
		if err != nil {
			return nil, fmt.Errorf("sockdiag: watch: %w", err)
		}
		if len(ports) > 0 || !untilSome {
			return ports, nil
		}
	}
}

// Pause waits for d, or until Close is called, without reading: what
// the kernel announces meanwhile waits in the socket's buffer, and the
// next Next calls return it without waiting. A reader that need not act
// at once trades its wake-ups for batches so (past the buffer, the
// kernel drops announcements: Next reports ENOBUFS).
func (w *Watcher) Pause(d time.Duration) {
	w.waiting.RLock() // Close wakes it, then waits for it, as for Next
	defer w.waiting.RUnlock()
	if w.closed.Load() {
		return
	}
	fds := []unix.PollFd{{Fd: int32(w.efd), Events: unix.POLLIN}}
	unix.Poll(fds, int(d.Milliseconds()))
}

// Close stops watching; a Next waiting returns os.ErrClosed.
func (w *Watcher) Close() error {
	if w.closed.Swap(true) {
		return os.ErrClosed
	}
	unix.Write(w.efd, []byte{1, 0, 0, 0, 0, 0, 0, 0}) // wakes a waiting Next or Pause
	w.waiting.Lock()
	defer w.waiting.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	// The bitmap stays mapped: the broker may still read it (a mapping
	// of 8 KiB, gone with the process).
	unix.Close(w.efd)
	return unix.Close(w.fd)
}
