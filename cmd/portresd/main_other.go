//go:build !linux

// Command portresd is the portres broker daemon. It runs on Linux only:
// elsewhere it says so and exits 1.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, `portresd: the portres broker runs on Linux only. On Windows the system itself
owns the port pool: see "netsh int ipv4 show excludedportrange protocol=tcp"
(and protocol=udp); "portres sample" and "portres persistent add|delete|lookup"
call the Windows API directly.`)
	os.Exit(1)
}
