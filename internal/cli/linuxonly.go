package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

// linuxOnly is a command that exists on Linux only, for the platforms
// without portresd: it says so, and where to look on Windows.
func linuxOnly(name string) *cobra.Command {
	return &cobra.Command{
		Use:                name,
		Short:              "Linux only",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return fmt.Errorf("%s needs Linux and portresd. On Windows the system owns the port pool: \"netsh int ipv4 show excludedportrange protocol=tcp\" (or udp) lists the reservations; here portres offers sample and persistent add|delete|lookup, over the system's API", cmd.CommandPath())
		},
	}
}
