//go:build linux

package sockdiag

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// The inet_diag wire format (linux/inet_diag.h). x/sys/unix has
// NETLINK_SOCK_DIAG and SOCK_DIAG_BY_FAMILY but none of these.
const (
	sizeofReqV2 = 56 // struct inet_diag_req_v2
	sizeofMsg   = 72 // struct inet_diag_msg
	// Offsets in inet_diag_msg: family, state, timer, retrans (1 byte
	// each), then the socket id: idiag_sport (network order),
	// idiag_dport, idiag_src[4], idiag_dst[4], idiag_if, then
	// idiag_cookie, two u32 in host order, low half first.
	msgSport     = 4
	msgCookie    = 44
	sizeofNlAttr = 4  // struct nlattr
	sizeofFilter = 16 // four struct inet_diag_bc_op

	inetDiagReqBytecode = 1 // INET_DIAG_REQ_BYTECODE
	bcSGE               = 2 // INET_DIAG_BC_S_GE: local port >= next op's "no"
	bcSLE               = 3 // INET_DIAG_BC_S_LE: local port <= next op's "no"

	tcpTimeWait      = 6  // TCP_TIME_WAIT
	tcpBoundInactive = 13 // TCP_BOUND_INACTIVE (kernel 6.8+), a dump-only state

	// allStates asks for every state but TCP_BOUND_INACTIVE: listening,
	// every connection state, TIME-WAIT and SYN-RECV requests
	// (TCP_NEW_SYN_RECV), and both states a UDP socket can be in. Bound
	// but inactive TCP sockets would include portres's own placeholders
	// (see the package comment).
	allStates = ^uint32(0) &^ (1 << tcpBoundInactive)
)

// diagRequest is one SOCK_DIAG_BY_FAMILY dump request.
type diagRequest struct {
	family uint8  // AF_INET or AF_INET6
	proto  uint8  // IPPROTO_TCP or IPPROTO_UDP
	states uint32 // bit s set: dump sockets in state s
	lo, hi uint16 // local port range, inclusive
}

// filtered reports whether the request needs a port filter in the kernel.
func (r diagRequest) filtered() bool { return r.lo != 0 || r.hi != 0xffff }

// marshal returns the netlink message asking for r's dump, with seq.
func (r diagRequest) marshal(seq uint32) []byte {
	n := unix.NLMSG_HDRLEN + sizeofReqV2
	if r.filtered() {
		n += sizeofNlAttr + sizeofFilter
	}
	b := make([]byte, n)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(n))
	ne.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(b[8:], seq)
	// nlmsg_pid 0: the kernel fills in the socket's port id.

	q := b[unix.NLMSG_HDRLEN:]
	q[0] = r.family
	q[1] = r.proto
	// idiag_ext 0: no extensions; pad 0.
	ne.PutUint32(q[4:], r.states)
	// The socket id stays zero: match any address, port and interface;
	// the cookie is ignored by dumps.

	if r.filtered() {
		a := q[sizeofReqV2:]
		ne.PutUint16(a[0:], sizeofNlAttr+sizeofFilter)
		ne.PutUint16(a[2:], inetDiagReqBytecode)
		putFilter(a[sizeofNlAttr:], r.lo, r.hi)
	}
	return b
}

// putFilter writes the bytecode accepting local ports in [lo,hi]. Each
// op jumps "yes" bytes ahead when its condition holds and "no" bytes
// otherwise; a socket is accepted when the program ends exactly at its
// length, rejected when a jump lands 4 bytes past it. The port for
// S_GE/S_LE sits in the "no" field of the op that follows, in host byte
// order.
//
//	0: S_GE  yes 8  no 20 (reject)
//	4:       port lo
//	8: S_LE  yes 8  no 12 (reject)
//	12:      port hi
func putFilter(b []byte, lo, hi uint16) {
	ne := binary.NativeEndian
	op := func(off int, code, yes uint8, no uint16) {
		b[off], b[off+1] = code, yes
		ne.PutUint16(b[off+2:], no)
	}
	op(0, bcSGE, 8, sizeofFilter+4)
	op(4, 0, 0, lo)
	op(8, bcSLE, 8, sizeofFilter-8+4)
	op(12, 0, 0, hi)
}

// diagSocket is what is read from one struct inet_diag_msg.
type diagSocket struct {
	family uint8
	state  uint8
	port   uint16 // local port
	cookie uint64 // the socket's cookie (SO_COOKIE)
}

// parseMsg decodes the head of an inet_diag_msg; ok is false when data
// is too short to be one.
func parseMsg(data []byte) (s diagSocket, ok bool) {
	if len(data) < sizeofMsg {
		return s, false
	}
	cookie := uint64(binary.NativeEndian.Uint32(data[msgCookie:])) | uint64(binary.NativeEndian.Uint32(data[msgCookie+4:]))<<32
	return diagSocket{family: data[0], state: data[1], port: binary.BigEndian.Uint16(data[msgSport:]), cookie: cookie}, true
}
