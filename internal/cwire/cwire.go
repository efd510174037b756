//go:build linux && cgo

// Package cwire hands libportres's C decoders (libportres/src/wire.c) to
// Go, for the differential fuzz tests that hold them to the Go decoders
// of internal/wire: the same inputs accepted, the same fields decoded.
// Nothing but tests uses it.
package cwire

/*
#cgo CFLAGS: -std=c11 -D_GNU_SOURCE -I${SRCDIR}/../../libportres/src -I${SRCDIR}/../../libportres/include
#include <stdlib.h>
#include "wire.c"

// entries walks r's entries into the caller's arrays (n of them).
static void entries(const struct wire_response *r, struct wire_entry *out, uint16_t *ports) {
	const uint8_t *p = r->entries;
	size_t left = r->entries_len;
	for (uint32_t i = 0; i < r->nentries; i++) {
		wire_next_entry(&p, &left, &out[i]);
		ports += wire_bound_ports(&out[i], ports);
	}
}
*/
import "C"

import (
	"net/netip"
	"unsafe"

	"github.com/portres/portres/internal/wire"
)

// DecodeRequest decodes b with the C decoder; ok is false if it refuses.
func DecodeRequest(b []byte) (r wire.Request, ok bool) {
	cb := C.CBytes(b) // an allocation of exactly len(b): a sanitizer sees overreads
	defer C.free(cb)
	var q C.struct_wire_request
	if C.wire_decode_request((*C.uint8_t)(cb), C.size_t(len(b)), &q) != 0 {
		return r, false
	}
	r = wire.Request{ID: uint32(q.id), Op: wire.Op(q.op), Proto: uint8(q.proto), Flags: uint16(q.flags),
		Start: uint16(q.start), Count: uint16(q.count), Port: uint16(q.port), Token: uint64(q.token), Target: uint32(q.target)}
	addr := C.GoBytes(unsafe.Pointer(&q.addr[0]), 16)
	switch q.addr_len {
	case 4:
		r.Addr = netip.AddrFrom4([4]byte(addr[:4]))
	case 16:
		r.Addr = netip.AddrFrom16([16]byte(addr))
	}
	return r, true
}

// DecodeResponse decodes b with the C decoder; ok is false if it refuses.
func DecodeResponse(b []byte) (r wire.Response, ok bool) {
	cb := C.CBytes(b)
	defer C.free(cb)
	var cr C.struct_wire_response
	if C.wire_decode_response((*C.uint8_t)(cb), C.size_t(len(b)), &cr) != 0 {
		return r, false
	}
	r = wire.Response{ID: uint32(cr.id), Code: uint32(cr.code), Flags: uint16(cr.flags), Proto: uint8(cr.proto),
		Start: uint16(cr.start), Count: uint16(cr.count), Port: uint16(cr.port), Token: uint64(cr.token),
		Msg: C.GoStringN(cr.msg, C.int(cr.msg_len))}
	n := int(cr.nentries)
	if n == 0 {
		return r, true
	}
	es := make([]C.struct_wire_entry, n)
	ports := make([]C.uint16_t, len(b)*8+1) // at most one bound port per bitmap bit
	C.entries(&cr, &es[0], &ports[0])
	at := 0
	for _, e := range es {
		we := wire.Entry{Proto: uint8(e.proto), Kind: uint8(e.kind), Flags: uint16(e.flags), Start: uint16(e.start),
			Count: uint16(e.count), PID: int32(e.pid), UID: uint32(e.uid), Token: uint64(e.token),
			Command: C.GoStringN(e.command, C.int(e.command_len))}
		for i := 0; i < int(e.nbound); i++ {
			we.Bound = append(we.Bound, uint16(ports[at+i]))
		}
		at += int(e.nbound)
		r.Entries = append(r.Entries, we)
	}
	return r, true
}
