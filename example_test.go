package portres_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
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
	fmt.Println("reserved", r) // e.g. "tcp 32768-32777"

	ln, err := r.Listen(ctx, "tcp", ":0") // any free port of the block
	if err != nil {
		log.Fatal(err)
	}
	go http.Serve(ln, http.NotFoundHandler())

	conn, err := r.Dialer(ctx).DialContext(ctx, "tcp", ln.Addr().String()) // local port from the block too
	if err != nil {
		log.Fatal(err)
	}
	conn.Close()

	if _, err := c.Acquire(ctx, portres.TCP, r.Start(), 1); errors.Is(err, syscall.EADDRINUSE) {
		fmt.Println(err) // names the reservation in the way and its owner
	}
}
