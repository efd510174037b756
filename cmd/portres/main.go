// Command portres is the command-line client of portresd: acquire, run,
// show, persistent, dynamicport and sample. On Windows, where the system
// owns the port pool, sample and persistent add|delete|lookup call the
// system's API and the other commands say they need Linux.
package main

import (
	"os"

	"github.com/portres/portres/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
