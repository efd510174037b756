package pool_test

import (
	"errors"
	"fmt"

	"github.com/portres/portres/internal/pool"
)

func Example() {
	// One pool per protocol; wildcard blocks come from the dynamic range.
	tcp, err := pool.New(49152, 65535)
	if err != nil {
		panic(err)
	}

	// A specific reservation, as SIO_ACQUIRE_PORT_RESERVATION with
	// StartPort 5000 and NumberOfPorts 20 would make.
	r, err := tcp.Reserve(pool.Block{Start: 5000, Count: 20}, 0, "pid 1234")
	if err != nil {
		panic(err)
	}
	fmt.Println("reserved", r.Block, "token non-zero:", r.Token != 0)

	// A wildcard reservation: the pool picks the block.
	w, _ := tcp.Reserve(pool.Block{Count: 10}, 0, "pid 1234")
	fmt.Println("wildcard", w.Block)

	// Binding port 0 on an associated socket takes a free port; an
	// explicit port of the block can be taken too.
	p1, _ := r.Take(0)
	p2, _ := r.Take(5010)
	fmt.Println("bound", p1, p2, "free", r.Free())

	// Overlaps name the reservation in the way.
	_, err = tcp.Reserve(pool.Block{Start: 5015, Count: 10}, 0, nil)
	var oe *pool.OverlapError
	if errors.As(err, &oe) {
		fmt.Println("overlap with", oe.With.Block, "held by", oe.With.Owner)
	}

	// The value for net.ipv4.ip_local_reserved_ports.
	var blocks []pool.Block
	for _, res := range tcp.All() {
		blocks = append(blocks, res.Block)
	}
	fmt.Println("reserved ports", pool.Merge(append(blocks, pool.Block{Start: 5020, Count: 5})))

	if _, err := tcp.Release(r.Token); err != nil {
		panic(err)
	}
	fmt.Println(tcp.Find(5000) == nil, tcp.Len())
	// Output:
	// reserved 5000-5019 token non-zero: true
	// wildcard 49152-49161
	// bound 5000 5010 free 18
	// overlap with 5000-5019 held by pid 1234
	// reserved ports [5000-5024 49152-49161]
	// true 1
}
