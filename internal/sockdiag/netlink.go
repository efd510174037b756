//go:build linux

package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// recvBufSize holds any one datagram of a dump: the kernel fills a
	// dump skb up to at most 32 KiB (or one page when the reader's buffer
	// is smaller), and MSG_TRUNC is checked regardless.
	recvBufSize = 64 << 10
	// recvTimeout bounds the wait for the kernel's next datagram.
	recvTimeout = 5 * time.Second
)

// errRetry marks a dump the kernel could not deliver whole (ENOBUFS,
// NLMSG_OVERRUN, NLM_F_DUMP_INTR): run it again on a fresh socket.
var errRetry = errors.New("dump incomplete")

// bufPool keeps receive buffers across calls: a sweep may run thousands.
var bufPool = sync.Pool{New: func() any { return new([recvBufSize]byte) }}

// lastSeq numbers the requests of the whole process, so that no reply
// to one dump is taken for part of another.
var lastSeq atomic.Uint32

// unavailableError is the kernel lacking sock_diag (or netlink being
// forbidden). It matches errors.ErrUnsupported and the cause.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string   { return "sock_diag unavailable: " + e.err.Error() }
func (e *unavailableError) Unwrap() []error { return []error{errors.ErrUnsupported, e.err} }

// conn is one NETLINK_SOCK_DIAG socket, used for one dump at a time.
type conn struct {
	fd        int
	buf       *[recvBufSize]byte
	abandoned bool // a dump was stopped before NLMSG_DONE
}

// dial opens a sock_diag socket.
func dial() (*conn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		err = fmt.Errorf("open netlink socket: %w", err)
		switch {
		case errors.Is(err, unix.EPROTONOSUPPORT), errors.Is(err, unix.EAFNOSUPPORT),
			errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
			err = &unavailableError{err}
		}
		return nil, err
	}
	// Connected to the kernel (port id 0), the socket refuses what other
	// processes send it (ECONNREFUSED to them); dump checks the sender
	// as well.
	if err := unix.Connect(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("connect netlink socket to the kernel: %w", err)
	}
	tv := unix.NsecToTimeval(recvTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set netlink receive timeout: %w", err)
	}
	return &conn{fd: fd, buf: bufPool.Get().(*[recvBufSize]byte)}, nil
}

// close closes the socket; a dump in progress is discarded by the kernel.
func (c *conn) close() {
	unix.Close(c.fd)
	bufPool.Put(c.buf)
	c.buf = nil
}

// dump sends req and passes the payload of every message of the reply
// but NLMSG_DONE, NLMSG_ERROR and NLMSG_NOOP to each, with its type, until
// the kernel's NLMSG_DONE. If each returns true the dump is abandoned and
// c can serve no other. Only messages from the kernel (port id 0) that
// carry the request's sequence number are taken. It returns errRetry,
// wrapped, when the dump was cut short by the kernel.
func (c *conn) dump(req diagRequest, each func(typ uint16, data []byte) (stop bool)) error {
	if c.abandoned {
		return errors.New("netlink socket busy with an abandoned dump")
	}
	seq := lastSeq.Add(1)
	msg := req.marshal(seq)
	for {
		err := unix.Sendto(c.fd, msg, 0, nil) // connected to the kernel
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("sendto: %w", err)
		}
		break
	}
	for {
		n, _, flags, from, err := unix.Recvmsg(c.fd, c.buf[:], nil, 0)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.ENOBUFS:
			return fmt.Errorf("recvmsg: %w: %w", errRetry, err)
		case err == unix.EAGAIN:
			return fmt.Errorf("recvmsg: no reply within %v: %w", recvTimeout, err)
		case err != nil:
			return fmt.Errorf("recvmsg: %w", err)
		case flags&unix.MSG_TRUNC != 0:
			return fmt.Errorf("recvmsg: datagram longer than %d bytes", len(c.buf))
		}
		if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
			continue // not from the kernel: never trust it
		}
		done, stop, err := readMessages(c.buf[:n], seq, each)
		if stop {
			c.abandoned = true
		}
		if done || stop || err != nil {
			return err
		}
	}
}

// readMessages handles the netlink messages of one datagram of the reply
// to request seq, passing the payloads to each as dump describes. done
// is the reply's end (NLMSG_DONE, or NLMSG_ERROR with err set unless it
// was an acknowledgement); stop is each having asked to stop.
func readMessages(b []byte, seq uint32, each func(typ uint16, data []byte) bool) (done, stop bool, err error) {
	ne := binary.NativeEndian
	for len(b) >= unix.NLMSG_HDRLEN {
		l := ne.Uint32(b[0:])
		if l < unix.NLMSG_HDRLEN || uint64(l) > uint64(len(b)) {
			return true, false, fmt.Errorf("malformed netlink message (length %d of %d bytes)", l, len(b))
		}
		typ, flags, mseq := ne.Uint16(b[4:]), ne.Uint16(b[6:]), ne.Uint32(b[8:])
		data := b[unix.NLMSG_HDRLEN:l]
		b = b[min(nlmsgAlign(l), uint32(len(b))):]
		if mseq != seq {
			continue // left over from another request
		}
		if flags&unix.NLM_F_DUMP_INTR != 0 {
			return true, false, fmt.Errorf("%w: tables changed during the dump (NLM_F_DUMP_INTR)", errRetry)
		}
		switch typ {
		case unix.NLMSG_NOOP:
			continue
		case unix.NLMSG_OVERRUN:
			return true, false, fmt.Errorf("%w: NLMSG_OVERRUN", errRetry)
		case unix.NLMSG_DONE:
			// The dump's own result follows the header.
			if len(data) >= 4 {
				if e := int32(ne.Uint32(data)); e < 0 {
					return true, false, fmt.Errorf("kernel ended it with: %w", unix.Errno(-e))
				}
			}
			return true, false, nil
		case unix.NLMSG_ERROR:
			if len(data) < 4 {
				return true, false, errors.New("truncated NLMSG_ERROR")
			}
			e := int32(ne.Uint32(data))
			if e == 0 {
				return true, false, nil // an acknowledgement: nothing more comes
			}
			errno := unix.Errno(-e)
			err := fmt.Errorf("kernel refused it: %w", errno)
			if errno == unix.ENOENT || errno == unix.EOPNOTSUPP {
				// No inet_diag handler for this family or protocol.
				err = &unavailableError{err}
			}
			return true, false, err
		}
		if each(typ, data) {
			return false, true, nil
		}
	}
	return false, false, nil
}

// nlmsgAlign rounds l up to NLMSG_ALIGNTO.
func nlmsgAlign(l uint32) uint32 {
	return (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
}
