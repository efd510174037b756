// Package wire defines the messages exchanged between portres clients and
// the portresd broker over a Unix SOCK_SEQPACKET socket.
//
// Every datagram is one message. A request carries a client-chosen ID; the
// broker answers each request with one or more responses carrying the same
// ID (a Show answer is split over several datagrams, all but the last
// flagged More). A Bind request carries exactly one file descriptor in an
// SCM_RIGHTS control message. The encoding is little-endian and fixed
// layout, versioned by the first two bytes; Decode* never panics on any
// input (see FuzzDecodeRequest, FuzzDecodeResponse).
package wire
