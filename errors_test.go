package portres

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestErrnoIs(t *testing.T) {
	cases := []struct {
		e      Errno
		target error
		want   bool
	}{
		{WSAEADDRINUSE, syscall.EADDRINUSE, true},
		{ERROR_SHARING_VIOLATION, syscall.EADDRINUSE, true},
		{WSAEACCES, os.ErrPermission, true},
		{WSAEACCES, syscall.EACCES, true},
		{ERROR_ACCESS_DENIED, os.ErrPermission, true},
		{ERROR_NOT_FOUND, os.ErrNotExist, true},
		{WSAEINVAL, os.ErrInvalid, true},
		{ERROR_INVALID_PARAMETER, syscall.EINVAL, true},
		{WSAENOBUFS, syscall.ENOBUFS, true},
		{WSAEDQUOT, syscall.EDQUOT, true},
		{WSAENOTSOCK, syscall.ENOTSOCK, true},
		{WSAEOPNOTSUPP, syscall.EOPNOTSUPP, true},
		{WSAEMFILE, syscall.EMFILE, true},
		{WSA_OPERATION_ABORTED, os.ErrClosed, true},
		{WSAENETDOWN, syscall.ENETDOWN, true},
		{WSAEADDRINUSE, syscall.EACCES, false},
		{WSAEINVAL, os.ErrPermission, false},
		{NO_ERROR, syscall.Errno(0), false},
	}
	for _, c := range cases {
		if got := errors.Is(c.e, c.target); got != c.want {
			t.Errorf("errors.Is(%s, %v) = %v, want %v", c.e.Name(), c.target, got, c.want)
		}
	}
	for code := range errnoNames {
		if !strings.Contains(code.Error(), code.Name()) || errnoText[code] == "" {
			t.Errorf("%d has no name or text", uint32(code))
		}
	}
	if Errno(4242).Name() != "Errno(4242)" {
		t.Errorf("unknown code named %q", Errno(4242).Name())
	}
}

func TestErrorMessageAndNesting(t *testing.T) {
	e := &Error{Op: "acquire", Proto: TCP, Start: 40000, Count: 10, Token: 0x2a, Code: WSAEADDRINUSE,
		Msg: "tcp 40000-40009 overlaps tcp reservation 40005-40014 of pid 42 (nginx)", Err: context.Canceled}
	want := "portres: acquire tcp ports 40000-40009 reservation 0x2a: WSAEADDRINUSE (10048): address already in use: tcp 40000-40009 overlaps tcp reservation 40005-40014 of pid 42 (nginx)"
	if e.Error() != want {
		t.Errorf("message:\n got %s\nwant %s", e.Error(), want)
	}
	var wrapped error = &net.OpError{Op: "listen", Err: e}
	for _, target := range []error{WSAEADDRINUSE, syscall.EADDRINUSE, context.Canceled} {
		if !errors.Is(wrapped, target) {
			t.Errorf("errors.Is(wrapped, %v) = false", target)
		}
	}
	var pe *Error
	if !errors.As(wrapped, &pe) || pe.Code != WSAEADDRINUSE {
		t.Errorf("errors.As did not find the *Error")
	}
	if p := (&Error{Op: "bind", Port: 80, Code: WSAEACCES}).Error(); p != "portres: bind port 80: WSAEACCES (10013): permission denied" {
		t.Errorf("bind message: %s", p)
	}
}

func TestParseProto(t *testing.T) {
	for s, want := range map[string]Proto{"tcp": TCP, "UDP": UDP} {
		if p, err := ParseProto(s); err != nil || p != want {
			t.Errorf("ParseProto(%q) = %v, %v", s, p, err)
		}
	}
	if _, err := ParseProto("sctp"); err == nil {
		t.Error("ParseProto(sctp) succeeded")
	}
	if Proto(1).String() != "proto(1)" {
		t.Error(Proto(1).String())
	}
}
