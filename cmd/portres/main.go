// Command portres is the command-line client of portresd: acquire, run,
// show, persistent, dynamicport and sample.
package main

import (
	"os"

	"github.com/portres/portres/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
