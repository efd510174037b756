//go:build linux

package sockdiag

import (
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// nlmsg appends one netlink message, padded to NLMSG_ALIGNTO.
func nlmsg(b []byte, typ, flags uint16, seq uint32, payload []byte) []byte {
	ne := binary.NativeEndian
	h := make([]byte, unix.NLMSG_HDRLEN)
	ne.PutUint32(h[0:], uint32(unix.NLMSG_HDRLEN+len(payload)))
	ne.PutUint16(h[4:], typ)
	ne.PutUint16(h[6:], flags)
	ne.PutUint32(h[8:], seq)
	b = append(append(b, h...), payload...)
	for len(b)%unix.NLMSG_ALIGNTO != 0 {
		b = append(b, 0)
	}
	return b
}

func errnoPayload(e unix.Errno) []byte {
	p := make([]byte, 4)
	binary.NativeEndian.PutUint32(p, uint32(-int32(e)))
	return p
}

func TestReadMessages(t *testing.T) {
	diag := make([]byte, sizeofMsg)
	multi := uint16(unix.NLM_F_MULTI)
	cases := []struct {
		name       string
		b          []byte
		n          int // messages passed on
		done, stop bool
		err        error // errors.Is target; nil: no error
	}{
		{"part", nlmsg(nlmsg(nil, unix.SOCK_DIAG_BY_FAMILY, multi, 5, diag), unix.SOCK_DIAG_BY_FAMILY, multi, 5, diag), 2, false, false, nil},
		{"done", nlmsg(nlmsg(nil, unix.SOCK_DIAG_BY_FAMILY, multi, 5, diag), unix.NLMSG_DONE, multi, 5, make([]byte, 4)), 1, true, false, nil},
		{"stale", nlmsg(nlmsg(nil, unix.SOCK_DIAG_BY_FAMILY, multi, 4, diag), unix.NLMSG_DONE, multi, 4, nil), 0, false, false, nil},
		{"noop", nlmsg(nil, unix.NLMSG_NOOP, 0, 5, nil), 0, false, false, nil},
		{"done error", nlmsg(nil, unix.NLMSG_DONE, multi, 5, errnoPayload(unix.ENOMEM)), 0, true, false, unix.ENOMEM},
		{"no handler", nlmsg(nil, unix.NLMSG_ERROR, 0, 5, errnoPayload(unix.ENOENT)), 0, true, false, errors.ErrUnsupported},
		{"refused", nlmsg(nil, unix.NLMSG_ERROR, 0, 5, errnoPayload(unix.EINVAL)), 0, true, false, unix.EINVAL},
		{"ack", nlmsg(nil, unix.NLMSG_ERROR, 0, 5, make([]byte, 4)), 0, true, false, nil},
		{"short error", nlmsg(nil, unix.NLMSG_ERROR, 0, 5, nil), 0, true, false, errors.New("")},
		{"interrupted", nlmsg(nil, unix.SOCK_DIAG_BY_FAMILY, multi|unix.NLM_F_DUMP_INTR, 5, diag), 0, true, false, errRetry},
		{"overrun", nlmsg(nil, unix.NLMSG_OVERRUN, 0, 5, nil), 0, true, false, errRetry},
		{"malformed", nlmsg(nil, unix.SOCK_DIAG_BY_FAMILY, multi, 5, diag)[:40], 0, true, false, errors.New("")},
		{"stop", nlmsg(nlmsg(nil, 99, multi, 5, diag), unix.SOCK_DIAG_BY_FAMILY, multi, 5, diag), 1, false, true, nil},
	}
	for _, c := range cases {
		n := 0
		done, stop, err := readMessages(c.b, 5, func(typ uint16, data []byte) bool {
			n++
			return typ == 99
		})
		switch {
		case c.err == nil && err != nil, c.err != nil && err == nil:
			t.Errorf("%s: error %v, want %v", c.name, err, c.err)
		case c.err != nil && c.err.Error() != "" && !errors.Is(err, c.err):
			t.Errorf("%s: error %v, want one matching %v", c.name, err, c.err)
		}
		if n != c.n || done != c.done || stop != c.stop {
			t.Errorf("%s: %d messages, done %v, stop %v; want %d, %v, %v", c.name, n, done, stop, c.n, c.done, c.stop)
		}
	}
}

func TestFilterBytecode(t *testing.T) {
	r := diagRequest{family: unix.AF_INET6, proto: unix.IPPROTO_UDP, states: allStates, lo: 0x1234, hi: 0x5678}
	b := r.marshal(7)
	if len(b) != unix.NLMSG_HDRLEN+sizeofReqV2+sizeofNlAttr+sizeofFilter {
		t.Fatalf("request is %d bytes", len(b))
	}
	ne := binary.NativeEndian
	if ne.Uint32(b) != uint32(len(b)) || ne.Uint16(b[4:]) != unix.SOCK_DIAG_BY_FAMILY || ne.Uint32(b[8:]) != 7 {
		t.Errorf("bad header % x", b[:16])
	}
	q := b[unix.NLMSG_HDRLEN:]
	if q[0] != unix.AF_INET6 || q[1] != unix.IPPROTO_UDP || ne.Uint32(q[4:]) != allStates {
		t.Errorf("bad inet_diag_req_v2 % x", q[:8])
	}
	a := q[sizeofReqV2:]
	if ne.Uint16(a) != 20 || ne.Uint16(a[2:]) != inetDiagReqBytecode {
		t.Errorf("bad attribute header % x", a[:4])
	}
	ops := a[4:]
	want := [][4]uint16{{bcSGE, 8, 20}, {0, 0, 0x1234}, {bcSLE, 8, 12}, {0, 0, 0x5678}}
	for i, w := range want {
		op := ops[4*i:]
		if uint16(op[0]) != w[0] || uint16(op[1]) != w[1] || ne.Uint16(op[2:]) != w[2] {
			t.Errorf("op %d = % x, want %v", i, op[:4], w)
		}
	}
	full := diagRequest{family: unix.AF_INET, proto: unix.IPPROTO_TCP, lo: 0, hi: 0xffff}
	if n := len(full.marshal(1)); n != unix.NLMSG_HDRLEN+sizeofReqV2 {
		t.Errorf("unfiltered request is %d bytes, want no bytecode", n)
	}
}
