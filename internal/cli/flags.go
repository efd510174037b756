package cli

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// uint16Flag is a port or a number of ports on the command line: 0 to
// 65535, with an error that says so instead of strconv's.
type uint16Flag struct {
	v    *uint16
	what string // "a port", "a number of ports"
}

func (f uint16Flag) String() string { return strconv.Itoa(int(*f.v)) }
func (f uint16Flag) Type() string   { return "N" }

func (f uint16Flag) Set(s string) error {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > 65535 {
		return fmt.Errorf("%q is not %s (0-65535)", s, f.what)
	}
	*f.v = uint16(n)
	return nil
}

// portFlag defines --name as a port (0-65535).
func portFlag(fs *pflag.FlagSet, v *uint16, name, usage string) {
	fs.Var(uint16Flag{v, "a port"}, name, usage)
}

// countFlag defines --name as a number of ports (0-65535).
func countFlag(fs *pflag.FlagSet, v *uint16, name, usage string) {
	fs.Var(uint16Flag{v, "a number of ports"}, name, usage)
}

// protoFlagDef defines --proto, completing to tcp and udp.
func protoFlagDef(cmd *cobra.Command, v *string, usage string) {
	cmd.Flags().StringVar(v, "proto", "", usage)
	cmd.RegisterFlagCompletionFunc("proto", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"tcp", "udp"}, cobra.ShellCompDirectiveNoFileComp
	})
}

// ports says "1 port" or "N ports".
func ports(n uint16) string {
	if n == 1 {
		return "1 port"
	}
	return fmt.Sprintf("%d ports", n)
}

// block says "tcp 80" or "tcp 40000-40009".
func block(proto fmt.Stringer, start, count uint16) string {
	if count == 1 {
		return fmt.Sprintf("%s %d", proto, start)
	}
	return fmt.Sprintf("%s %d-%d", proto, start, int(start)+int(count)-1)
}
