//go:build !linux && !windows

package cli

import "github.com/spf13/cobra"

// platformNote ends the root command's description.
const platformNote = "\n\nportres needs Linux (portresd) or Windows (the system's own API)."

// platformCommands: none here.
func platformCommands(*env) []*cobra.Command { return nil }
