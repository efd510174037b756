// Package cli implements the portres command: one file per subcommand,
// with standard streams and the broker socket injected so every command is
// tested in-process.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/buildinfo"
	"github.com/spf13/cobra"
)

// env is what a command may touch.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	socket string
	json   bool
	// exit is the process exit status a command asks for (portres run
	// passes its child's through); 0 unless set.
	exit int
}

// exitError carries an exit status without a message.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// codeError is an error printed as usual but ending the command with the
// exit status code (portres run: 126 and 127, as env and timeout use).
type codeError struct {
	code int
	err  error
}

func (e codeError) Error() string { return e.err.Error() }
func (e codeError) Unwrap() error { return e.err }

// errorJSON is how an error reads with --json, on stderr.
type errorJSON struct {
	Error struct {
		Op      string `json:"op,omitempty"`
		Code    uint32 `json:"code,omitempty"` // the Winsock or Win32 number, for broker errors
		Name    string `json:"name,omitempty"` // its name: WSAEADDRINUSE, ...
		Message string `json:"message"`
	} `json:"error"`
}

// Main runs the portres command line and returns the process exit status.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	root := newRoot(e)
	if cmd, _, err := root.Find(args); err == nil && cmd.DisableFlagParsing && cmd.Name() == "sample" {
		// Flags before "sample" are portres's (--socket), parsed on the
		// way down; everything after it is the C program's argv, "-1"
		// and "-h" included (sample parses no flags).
		root.TraverseChildren = true
	}
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := root.ExecuteContext(ctx)
	var ee exitError
	status := 1
	if ce := (codeError{}); errors.As(err, &ce) {
		status = ce.code
	}
	switch {
	case errors.As(err, &ee):
		return int(ee)
	case err != nil && e.json:
		var out errorJSON
		out.Error.Message = err.Error()
		var pe *portres.Error
		if errors.As(err, &pe) {
			out.Error.Op, out.Error.Code, out.Error.Name = pe.Op, uint32(pe.Code), pe.Code.Name()
		}
		js, _ := json.Marshal(out)
		stderr.Write(append(jsonTermSafe(js), '\n'))
		return status
	case err != nil:
		msg := err.Error()
		// A broker's message may quote another process's command line
		// ("overlaps tcp reservation 40000-40009 of pid 42 (cmd)"). Other
		// errors come from cobra and this package, about the user's own
		// arguments, and keep their layout (cobra's suggestions span lines).
		var pe *portres.Error
		if errors.As(err, &pe) {
			msg = termSafe(msg)
		}
		if !strings.HasPrefix(msg, "portres") {
			msg = "portres: " + msg
		}
		fmt.Fprintln(stderr, msg)
		return status
	}
	return e.exit
}

func newRoot(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:   "portres",
		Short: "Windows-style TCP/UDP port reservations for Linux",
		Long: `portres talks to the portresd broker: reserve blocks of TCP or UDP ports,
hand them to programs, and see who holds what.`,
		Version:       buildinfo.Version(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("portres {{.Version}}\n")
	root.PersistentFlags().StringVar(&e.socket, "socket", "", "broker socket (default $PORTRES_SOCKET, else /run/portres/portres.sock or $XDG_RUNTIME_DIR/portres.sock)")
	root.PersistentFlags().BoolVar(&e.json, "json", false, "print JSON (stable, documented in the README)")
	root.Long += platformNote
	root.AddCommand(platformCommands(e)...)
	for _, c := range extraCommands {
		root.AddCommand(c(e))
	}
	return root
}

// extraCommands lets other files add subcommands (sample, gen-man).
var extraCommands []func(*env) *cobra.Command

// printJSON writes v as indented JSON, with every character a terminal
// could act on escaped (jsonTermSafe). Strings that are not valid UTF-8
// are coerced by encoding/json: each invalid byte becomes U+FFFD.
func (e *env) printJSON(v any) error {
	js, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = e.stdout.Write(append(jsonTermSafe(js), '\n'))
	return err
}

// protoFlag parses --proto.
func protoFlag(s string) (portres.Proto, error) {
	if s == "" {
		return 0, errors.New("--proto is required (tcp or udp)")
	}
	return portres.ParseProto(s)
}

// tokenString formats a token as JSON shows it: a hex string, since
// 64-bit numbers do not survive every JSON reader.
func tokenString(t uint64) string {
	if t == 0 {
		return ""
	}
	return fmt.Sprintf("%#016x", t)
}

// reservationJSON is the stable JSON form of a reservation.
type reservationJSON struct {
	Proto string `json:"proto"`
	Start uint16 `json:"start"`
	End   uint16 `json:"end"`
	Count uint16 `json:"count"`
	Token string `json:"token,omitempty"`
}
