//go:build linux

// Package fdpass sends and receives messages carrying file descriptors
// over Unix SOCK_SEQPACKET connections (SCM_RIGHTS).
//
// Received descriptors are close-on-exec (the net package reads with
// MSG_CMSG_CLOEXEC on Linux), a truncated control message (MSG_CTRUNC) or
// a truncated datagram (MSG_TRUNC) is an error, and every descriptor that
// arrives with a message that is refused is closed, so nothing leaks.
package fdpass

import (
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// MaxFDs is the most descriptors one message may carry: a bind of many
// sockets of one block sends up to this many at once.
const MaxFDs = 64

// ErrTruncated is returned when a datagram or its control data was cut.
var ErrTruncated = errors.New("fdpass: message or control data truncated")

// Send writes msg as one datagram on c, with the descriptors fds (may be
// none) attached. The caller keeps owning fds and must keep them open
// until Send returns.
func Send(c *net.UnixConn, msg []byte, fds ...int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	_, _, err := c.WriteMsgUnix(msg, oob, nil)
	return err
}

// Recv reads one datagram into buf and returns its length and the
// descriptors it carried, which the caller owns and must close with
// unix.Close. They are raw numbers on purpose: wrapping a passed socket in
// an *os.File and calling Fd would switch the sender's shared file
// description to blocking mode. On error no descriptor is left open.
func Recv(c *net.UnixConn, buf []byte) (int, []int, error) {
	oob := make([]byte, unix.CmsgSpace(MaxFDs*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	files, perr := parseRights(oob[:oobn])
	if err == nil {
		err = perr
	}
	if err == nil && flags&(unix.MSG_CTRUNC|unix.MSG_TRUNC) != 0 {
		err = fmt.Errorf("%w (flags %#x)", ErrTruncated, flags)
	}
	if err != nil {
		for _, fd := range files {
			unix.Close(fd)
		}
		return n, nil, err
	}
	return n, files, nil
}

func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("fdpass: parse control message: %w", err)
	}
	var files []int
	var firstErr error
	for i := range msgs {
		fds, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("fdpass: control message type %d: %w", msgs[i].Header.Type, err)
			}
			continue
		}
		files = append(files, fds...)
	}
	return files, firstErr
}
