//go:build linux

package broker

import (
	"os"
	"slices"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestPeerGroupsMatchesOwn(t *testing.T) {
	if os.Geteuid() == 0 {
		old, _ := syscall.Getgroups()
		if err := syscall.Setgroups([]int{4242, 77, 0}); err != nil {
			t.Fatal(err)
		}
		defer syscall.Setgroups(old)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	got, err := peerGroups(fds[0])
	if err != nil {
		t.Fatalf("SO_PEERGROUPS: %v", err)
	}
	own, _ := os.Getgroups()
	want := make([]uint32, len(own))
	for i, g := range own {
		want[i] = uint32(g)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) || (os.Geteuid() == 0 && len(got) != 3) {
		t.Errorf("peer groups %v, own groups %v", got, want)
	}
}

// TestPrintable: command lines of other processes reach terminals with
// control and format characters, invalid UTF-8 and backslashes escaped.
func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"nginx -g daemon off;":    "nginx -g daemon off;",
		"café 東京":                 "café 東京",
		"\x1b[2Jclear":            "\\x1b[2Jclear",
		"a\nb":                    "a\\nb",
		"x\x1b]0;pwned\x07":       "x\\x1b]0;pwned\\a",
		"row\ntcp 1 2 persistent": "row\\ntcp 1 2 persistent",
		"\u202egnp.exe":           "\\u202egnp.exe",
		"bad\xffutf8":             "bad\\xffutf8",
		"c1\u009b31m":             "c1\\u009b31m",
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}
