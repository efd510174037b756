//go:build linux

package portres_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/netip"
	"syscall"

	"github.com/portres/portres"
)

// A program reserves ten TCP ports for itself, serves HTTP on one of
// them, and dials out from another. The reservation ends with the client
// (or the process).
func Example() {
	ctx := context.Background()
	c, err := portres.Dial(ctx, "") // $PORTRES_SOCKET or /run/portres/portres.sock
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	r, err := c.Acquire(ctx, portres.TCP, 0, 10) // 10 ports in the dynamic range
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("reserved", r.Count(), r.Proto(), "ports")

	ln, err := r.Listen(ctx, "tcp", "127.0.0.1:0") // any free port of the block
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	go http.Serve(ln, http.NotFoundHandler())
	server := netip.MustParseAddrPort(ln.Addr().String())
	fmt.Println("serving from the block:", r.Contains(server.Port()))

	conn, err := r.Dialer().DialContext(ctx, "tcp", server.String()) // local port from the block too
	if err != nil {
		log.Fatal(err)
	}
	local := netip.MustParseAddrPort(conn.LocalAddr().String())
	fmt.Println("dialing from the block:", r.Contains(local.Port()))
	conn.Close()

	// Another acquire over the same ports fails; the message names the
	// reservation in the way and its owner.
	_, err = c.Acquire(ctx, portres.TCP, r.Start(), 1)
	fmt.Println(errors.Is(err, portres.WSAEADDRINUSE), errors.Is(err, syscall.EADDRINUSE))

	// Output:
	// reserved 10 tcp ports
	// serving from the block: true
	// dialing from the block: true
	// true true
}
