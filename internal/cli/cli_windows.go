package cli

import (
	"context"
	"errors"

	"github.com/spf13/cobra"
)

// platformNote ends the root command's description on Windows.
const platformNote = `

On Windows the system itself owns the port pool and there is no portresd:
"portres sample" and "portres persistent add|delete|lookup" call the
system's API (ws2_32.dll, iphlpapi.dll); the other commands need Linux.
"netsh int ipv4 show excludedportrange protocol=tcp" (or udp) lists the
reservations.`

// platformCommands are the subcommands of Windows (sample and gen-man
// register themselves): persistent over iphlpapi.dll, and the Linux-only
// commands as hidden stubs that say so.
func platformCommands(e *env) []*cobra.Command {
	return []*cobra.Command{persistentCmd(e),
		linuxOnly("acquire"), linuxOnly("run"), linuxOnly("show"), linuxOnly("top"), linuxOnly("status"), linuxOnly("dynamicport")}
}

// persistentShow needs portresd's view of who holds what.
func persistentShow(*env) *cobra.Command {
	c := linuxOnly("show")
	c.Hidden = false
	c.Short = "List persistent reservations (Linux only; on Windows: netsh int ipv4 show excludedportrange)"
	return c
}

func init() { openPersistent = openWinsockPersistent }

// openFleetPersistent: fleet reservations are made through portresd's
// fleet on etcd, which runs on Linux.
var openFleetPersistent = func(context.Context, *env) (persistentAPI, error) {
	return nil, errors.New("--fleet works through portresd's fleet on etcd, on Linux; Windows has no fleet reservations")
}
