package cli

import (
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// manCmd writes the man pages of portres and its subcommands, generated
// from their definitions, into a directory (`make man` uses it). Hidden:
// it is for packaging, not for users.
func manCmd(*env) *cobra.Command {
	return &cobra.Command{
		Use:    "gen-man DIR",
		Short:  "Write man pages for portres and its subcommands into DIR",
		Args:   cobra.ExactArgs(1),
		Hidden: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			root := cmd.Root()
			root.DisableAutoGenTag = true
			hdr := &doc.GenManHeader{Title: "PORTRES", Section: "1", Source: "portres " + root.Version, Manual: "portres manual"}
			if err := doc.GenManTree(root, hdr, args[0]); err != nil {
				return fmt.Errorf("portres gen-man: %w", err)
			}
			return nil
		},
	}
}

func init() { extraCommands = append(extraCommands, manCmd) }
