//go:build linux

package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/portres/portres"
	"github.com/spf13/cobra"
)

func statusCmd(e *env) *cobra.Command {
	var fleet bool
	cmd := &cobra.Command{
		Use:   "status [--fleet]",
		Short: "Show the broker: version, enforcement and why, the kernel list, limits, counts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.withClient(cmd, func(c *portres.Client) error {
				st, err := c.Status(cmd.Context())
				if err != nil {
					return err
				}
				if fleet {
					return e.printFleetStatus(st)
				}
				if e.json {
					return e.printJSON(st)
				}
				return e.printStatus(st)
			})
		},
	}
	cmd.Flags().BoolVar(&fleet, "fleet", false, "the broker's fleet (portresd --etcd): whether it reaches etcd, the registered members, the fleet range")
	return cmd
}

func (e *env) printStatus(st *portres.Status) error {
	w := tabwriter.NewWriter(e.stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintf(w, "portresd\t%s\n", termSafe(st.Version))
	fmt.Fprintf(w, "Enforcement\t%s (asked: %s): %s\n", termSafe(st.Enforcement.Mode), termSafe(st.Enforcement.Requested), termSafe(st.Enforcement.Why))
	kl := st.KernelList
	if kl.Writable {
		fmt.Fprintf(w, "Kernel list\t%s: writable, %d of %d bytes used\n", termSafe(kl.Path), kl.Bytes, kl.MaxBytes)
	} else {
		fmt.Fprintf(w, "Kernel list\t%s: not writable: persistent and delegated blocks are not kept from automatic assignment\n", termSafe(kl.Path))
	}
	fmt.Fprintf(w, "Privileged ports\tbelow %d: need CAP_NET_BIND_SERVICE or the admin group\n", st.UnprivilegedPortStart)
	var dyn []string
	for _, d := range st.Dynamic {
		dyn = append(dyn, fmt.Sprintf("%s %d-%d", d.Proto, d.Start, d.End))
	}
	fmt.Fprintf(w, "Dynamic ranges\t%s\n", strings.Join(dyn, ", "))
	l := st.Limits
	fmt.Fprintf(w, "Per-user limits\t%s ports, %s reservations, %s connections, %s requests/s (root and the admin group exempt)\n",
		limit(l.UserPorts), limit(l.UserReservations), limit(l.UserConnections), limit(l.UserRate))
	fmt.Fprintf(w, "Kept for admins\t%d descriptors, %d bytes of the kernel list\n", l.FDReserve, l.ListReserve)
	n := st.Counts
	fmt.Fprintf(w, "Held\t%d runtime and %d persistent reservations, %d ports; %d placeholder sockets\n", n.Runtime, n.Persistent, n.Ports, n.Placeholders)
	fmt.Fprintf(w, "Clients\t%d connections of %d uids; %d of %d descriptors in use\n", n.Clients, n.Users, n.FDs, n.FDLimit)
	if r := st.Restore; r.State != "" {
		fmt.Fprintf(w, "Live restore\truntime reservations kept in %s across restarts; restored ones wait %s for their owners (%d waiting)\n", termSafe(r.State), r.Grace, r.Waiting)
	} else {
		fmt.Fprintf(w, "Live restore\toff: a restart of the broker drops every runtime reservation\n")
	}
	return w.Flush()
}

// limit prints a limit, -1 as "unlimited".
func limit(v int) string {
	if v < 0 {
		return "unlimited"
	}
	return fmt.Sprint(v)
}
