//go:build linux

package cli

import (
	"fmt"

	"github.com/portres/portres"
	"github.com/spf13/cobra"
)

func dynamicPortCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dynamicport",
		Short: "Show or set the range wildcard reservations are drawn from",
	}
	var proto string
	show := &cobra.Command{
		Use:   "show [--proto tcp|udp]",
		Short: "Show the dynamic port range (both protocols unless --proto)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			protos := []portres.Proto{portres.TCP, portres.UDP}
			if proto != "" {
				p, err := portres.ParseProto(proto)
				if err != nil {
					return err
				}
				protos = protos[:0]
				protos = append(protos, p)
			}
			c, err := e.dial(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			var out []rangeJSON
			for _, p := range protos {
				start, num, err := c.DynamicPortRange(cmd.Context(), p)
				if err != nil {
					return err
				}
				if e.json {
					out = append(out, rangeJSON{Proto: p.String(), Start: start, Count: num, End: int(start) + int(num) - 1})
					continue
				}
				fmt.Fprintf(e.stdout, "Protocol %s Dynamic Port Range\n---------------------------------\nStart Port      : %d\nNumber of Ports : %d\n\n", p, start, num)
			}
			if e.json {
				return e.printJSON(out)
			}
			return nil
		},
	}
	protoFlagDef(show, &proto, "tcp or udp")
	var setProto string
	var start, num uint16
	var system bool
	set := &cobra.Command{
		Use:   "set (--proto tcp|udp | --system) --start N --num N",
		Short: "Set the dynamic port range (at least 255 ports, start >= 1025, end <= 65535)",
		Long: `set changes the range wildcard reservations (--start 0) of one protocol are
placed in: at least 255 ports, start >= 1025, end <= 65535, as netsh's.
Root or the broker's admin group only.

By default it changes only where portres places wildcard blocks: the
kernel's ephemeral port range (net.ipv4.ip_local_port_range, where
bind(0) and connect() take their ports) stays as it is.

--system also sets the kernel's ephemeral port range to the same range,
in the broker's network namespace, as netsh int ipv4 set dynamicport
does on Windows. On Linux that sysctl is one range for TCP and UDP, so
--system moves both protocols' portres ranges with it and takes no
--proto. The kernel has the last word: a range it refuses (it must start
at or above net.ipv4.ip_unprivileged_port_start) is refused and nothing
changes. It prints the new range and the ones it replaced.`,
		Example: "  portres dynamicport set --proto udp --start 40000 --num 1000\n  portres dynamicport set --system --start 49152 --num 16384",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if system {
				if setProto != "" {
					return fmt.Errorf("dynamicport set --system: --proto %s: the kernel's ephemeral port range (net.ipv4.ip_local_port_range) is one range for tcp and udp, so --system sets both protocols; leave out --proto", setProto)
				}
				return e.setSystemRange(cmd, start, num)
			}
			p, err := protoFlag(setProto)
			if err != nil {
				return err
			}
			if err := e.withClient(cmd, func(c *portres.Client) error {
				return c.SetDynamicPortRange(cmd.Context(), p, start, num)
			}); err != nil {
				return err
			}
			if e.json {
				return e.printJSON(rangeJSON{Proto: p.String(), Start: start, Count: num, End: int(start) + int(num) - 1})
			}
			fmt.Fprintf(e.stdout, "Dynamic %s port range set to %d-%d (%s).\n", p, start, int(start)+int(num)-1, ports(num))
			return nil
		},
	}
	protoFlagDef(set, &setProto, "tcp or udp (not with --system)")
	portFlag(set.Flags(), &start, "start", "first port (>= 1025)")
	countFlag(set.Flags(), &num, "num", "number of ports (>= 255)")
	set.Flags().BoolVar(&system, "system", false, "also set the kernel's ephemeral port range (net.ipv4.ip_local_port_range), for tcp and udp together, like netsh")
	cmd.AddCommand(show, set)
	return cmd
}

// rangeJSON is a dynamic port range in --json output, keys in the order
// the README documents.
type rangeJSON struct {
	Proto string `json:"proto"`
	Start uint16 `json:"start"`
	Count uint16 `json:"count"`
	End   int    `json:"end"`
}

// systemJSON is dynamicport set --system's --json output.
type systemJSON struct {
	Protos []string    `json:"protos"`
	Start  uint16      `json:"start"`
	Count  uint16      `json:"count"`
	End    int         `json:"end"`
	Old    []rangeJSON `json:"old"`
	Sysctl sysctlJSON  `json:"ip_local_port_range"`
}

// sysctlJSON is the kernel's ephemeral range before and after.
type sysctlJSON struct {
	Start    uint16 `json:"start"`
	End      int    `json:"end"`
	OldStart uint16 `json:"old_start"`
	OldEnd   uint16 `json:"old_end"`
}

// setSystemRange is dynamicport set --system.
func (e *env) setSystemRange(cmd *cobra.Command, start, num uint16) error {
	var ch *portres.SystemRangeChange
	if err := e.withClient(cmd, func(c *portres.Client) (err error) {
		ch, err = c.SetSystemDynamicPortRange(cmd.Context(), start, num)
		return err
	}); err != nil {
		return err
	}
	end := int(ch.Start) + int(ch.Count) - 1
	old := func(p portres.Proto, r portres.PortRange) rangeJSON {
		return rangeJSON{Proto: p.String(), Start: r.Start, Count: r.End - r.Start + 1, End: int(r.End)}
	}
	if e.json {
		return e.printJSON(systemJSON{Protos: []string{"tcp", "udp"}, Start: ch.Start, Count: ch.Count, End: end,
			Old:    []rangeJSON{old(portres.TCP, ch.OldTCP), old(portres.UDP, ch.OldUDP)},
			Sysctl: sysctlJSON{Start: ch.Start, End: end, OldStart: ch.OldKernel.Start, OldEnd: ch.OldKernel.End}})
	}
	fmt.Fprintf(e.stdout, "Dynamic tcp and udp port range set to %d-%d (%s); it was tcp %d-%d, udp %d-%d.\n",
		ch.Start, end, ports(ch.Count), ch.OldTCP.Start, ch.OldTCP.End, ch.OldUDP.Start, ch.OldUDP.End)
	fmt.Fprintf(e.stdout, "net.ipv4.ip_local_port_range set to %d %d; it was %d %d.\n", ch.Start, end, ch.OldKernel.Start, ch.OldKernel.End)
	return nil
}
