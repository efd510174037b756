//go:build linux

package cli

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/testbroker"
)

var updateSample = flag.Bool("update-sample", false, "rewrite testdata/sample/*.golden")

// sampleCase is one run of `portres sample` and its golden output.
type sampleCase struct {
	name     string
	args     []string
	exit     int
	wildcard bool // the broker places the block: normalise the ports
}

var (
	tokenRE     = regexp.MustCompile(`Token=-?\d+`)
	startRE     = regexp.MustCompile(`Starting port=(\d+),  Number of Ports=(\d+)`)
	allocatedRE = regexp.MustCompile(`Port number allocated = (\d+)`)
)

// runSampleCase runs the sample in-process against socket ("" = none)
// and compares its normalised output with testdata/sample/NAME.golden.
func runSampleCase(t *testing.T, socket string, c sampleCase) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	args := append([]string{"sample"}, c.args...)
	if socket != "" {
		args = append([]string{"--socket", socket}, args...)
	}
	if code := Main(args, strings.NewReader(""), &stdout, &stderr); code != c.exit {
		t.Errorf("exit status %d, want %d; stderr %q", code, c.exit, stderr.String())
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr: %q (the sample prints everything to stdout)", stderr.String())
	}
	out := stdout.String()
	if m := startRE.FindStringSubmatch(out); m != nil {
		start, _ := strconv.Atoi(m[1])
		count, _ := strconv.Atoi(m[2])
		if p := allocatedRE.FindStringSubmatch(out); p != nil {
			if port, _ := strconv.Atoi(p[1]); port < start || port >= start+count {
				t.Errorf("port %d allocated outside the block %d+%d", port, start, count)
			}
		}
		if c.wildcard {
			out = startRE.ReplaceAllString(out, "Starting port=<port>,  Number of Ports=$2")
			out = allocatedRE.ReplaceAllString(out, "Port number allocated = <port>")
		}
	}
	out = tokenRE.ReplaceAllString(out, "Token=<token>")
	path := filepath.Join("testdata", "sample", c.name+".golden")
	if *updateSample {
		if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run Sample -update-sample)", err)
	}
	if out != string(want) {
		t.Errorf("sample %s output:\n%s\nwant (%s):\n%s", strings.Join(c.args, " "), out, path, want)
	}
}

// The validation failures need no broker.
func TestSampleValidation(t *testing.T) {
	for _, c := range []sampleCase{
		{name: "usage", args: nil, exit: 1},
		{name: "usage", args: []string{"2", "2", "17", "5000"}, exit: 1},
		{name: "usage", args: []string{"2", "2", "17", "5000", "20", "1"}, exit: 1},
		{name: "start_out_of_range", args: []string{"2", "2", "17", "70000", "20"}, exit: 1},
		{name: "start_out_of_range", args: []string{"2", "2", "17", "-5", "20"}, exit: 1},
		{name: "negative_count", args: []string{"2", "2", "17", "5000", "-1"}, exit: 1},
		// Every argument is the C program's: -h and --help are arguments
		// (argc != 6: the usage), -1 is a number (socket(-1, ...) fails).
		{name: "usage", args: []string{"-h"}, exit: 1},
		{name: "usage", args: []string{"--help"}, exit: 1},
		{name: "usage", args: []string{"--socket", "/nonexistent", "2", "2", "17", "5000", "20"}, exit: 1},
		{name: "bad_family", args: []string{"-1", "2", "17", "5000", "20"}, exit: 1},
		{name: "bad_family", args: []string{"--5", "2", "17", "5000", "20"}, exit: 1},
	} {
		t.Run(c.name, func(t *testing.T) { runSampleCase(t, "", c) })
	}
}

func TestSample(t *testing.T) {
	b := testbroker.Start(t, nil)
	c := b.Dial(t)
	for _, tc := range []sampleCase{
		{name: "udp4_specific", args: []string{"2", "2", "17", "5000", "20"}},
		{name: "tcp6_wildcard", args: []string{"10", "1", "6", "0", "5"}, wildcard: true},
		{name: "tcp4_specific", args: []string{"2", "1", "6", "40000", "3"}},
		{name: "udp6_wildcard", args: []string{"10", "2", "17", "0", "4"}, wildcard: true},
		{name: "tcp4_default_protocol", args: []string{"2", "1", "0", "40100", "1"}},
		{name: "zero_ports", args: []string{"2", "2", "17", "5000", "0"}, exit: 1},
		{name: "udp_stream", args: []string{"2", "1", "17", "5000", "1"}, exit: 1},
		{name: "raw_socket", args: []string{"2", "3", "17", "5000", "1"}, exit: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runSampleCase(t, b.Config.Socket, tc)
			if infos, err := c.Show(context.Background()); err != nil || len(infos) != 0 {
				t.Errorf("after the sample the broker holds %+v, %v", infos, err)
			}
		})
	}
}

// A block that overlaps another reservation fails with WSAEADDRINUSE.
func TestSampleConflict(t *testing.T) {
	b := testbroker.Start(t, nil)
	r, err := b.Dial(t).Acquire(context.Background(), portres.UDP, 6000, 10)
	if err != nil {
		t.Fatal(err)
	}
	runSampleCase(t, b.Config.Socket, sampleCase{name: "conflict", args: []string{"2", "2", "17", "6005", "10"}, exit: 1})
	r.Release(context.Background())
	// The sample's first socket is closed: nothing of it is left.
	deadline := time.Now().Add(5 * time.Second)
	for {
		infos, _ := b.Dial(t).Show(context.Background())
		if len(infos) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the broker still holds %+v", infos)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSampleHelp: `portres help sample` prints the command's help; after
// "sample", -h and --help are the C program's arguments (its usage, exit
// 1, as TestSampleValidation checks).
func TestSampleHelp(t *testing.T) {
	var stdout bytes.Buffer
	if code := Main([]string{"help", "sample"}, strings.NewReader(""), &stdout, &stdout); code != 0 {
		t.Fatalf("exit status %d: %s", code, stdout.String())
	}
	for _, want := range []string{"sample <addressfamily> <type> <protocol> <StartingPort> <NumberOfPorts>", "associates the FIRST", "byte for byte", "On Windows it calls the system's Winsock"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("help does not say %q:\n%s", want, stdout.String())
		}
	}
	if strings.Contains(stdout.String(), "-h, --help") {
		t.Errorf("help lists a --help flag, which sample does not take:\n%s", stdout.String())
	}
}

// TestSampleUsageBytes: the usage is the C text byte for byte, its last
// line without a newline (the C format string has none).
func TestSampleUsageBytes(t *testing.T) {
	var stdout bytes.Buffer
	Main([]string{"sample"}, strings.NewReader(""), &stdout, &stdout)
	want := "usage: portres sample <addressfamily> <type> <protocol> <StartingPort> <NumberOfPorts>\n" +
		"Opens a socket for the specified family, type, & protocol\n" +
		"and then acquires a runtime port reservation for the protocol specified\n" +
		"portres sample example usage\n" +
		"   portres sample 2 2 17 5000 20\n" +
		"   where AF_INET=2 SOCK_DGRAM=2 IPPROTO_UDP=17 StartPort=5000 NumPorts=20"
	if got := stdout.String(); got != want {
		t.Errorf("usage:\n%q\nwant\n%q", got, want)
	}
}

func TestWtoi(t *testing.T) {
	for s, want := range map[string]int{
		"5000": 5000, " \t42": 42, "+7": 7, "-1": -1, "12abc": 12, "abc": 0, "": 0, "-": 0,
		"70000": 70000, "99999999999": 2147483647, "-99999999999": -2147483648, "0x10": 0,
	} {
		if got := wtoi(s); got != want {
			t.Errorf("wtoi(%q) = %d, want %d", s, got, want)
		}
	}
}
