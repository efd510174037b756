package clib

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portres/portres/internal/testbroker"
	"github.com/portres/portres/internal/testutil"
)

// buildTest compiles libportres/tests/NAME.c against the libraries
// (plain, or with a sanitizer's build of them).
func buildTest(t *testing.T, name, sanitizer string) string {
	t.Helper()
	lib := libDir(t)
	flags := []string{"-std=c11", "-D_GNU_SOURCE", "-g", "-Wall", "-Wextra", "-Werror"}
	if sanitizer != "" {
		lib = sanDir(t, sanitizer)
		flags = append(flags, strings.Fields(sanitizers[sanitizer])...)
	}
	exe := filepath.Join(testutil.Dir(t), name+"-"+sanitizer)
	args := append(flags, "-I"+filepath.Join(srcDir, "include"), "-I"+filepath.Join(srcDir, "winsock", "include"), "-o", exe,
		filepath.Join(srcDir, "tests", name+".c"), filepath.Join(lib, "libportres-winsock.a"), filepath.Join(lib, "libportres.a"), "-pthread")
	if out, err := exec.Command("cc", args...).CombinedOutput(); err != nil {
		t.Fatalf("cc %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return exe
}

// TestWinsockLayer runs libportres/tests/winsock_test.c (every check of
// WSAIoctl and its buffers, the reservations' lifetime, overlapped
// completion and its abort by closesocket, events, the persistent
// functions, WSAStartup and WSACleanup) plain and under ASan+UBSan, and
// threads_test.c (one client shared by eight threads, and Winsock
// sockets of eight more) plain and under ThreadSanitizer, each against a
// fresh broker.
func TestWinsockLayer(t *testing.T) {
	testutil.RequireRoot(t)
	for _, c := range []struct{ name, san string }{
		{"winsock_test", ""}, {"winsock_test", "asan"}, {"threads_test", ""}, {"threads_test", "tsan"},
	} {
		t.Run(c.name+"/"+c.san, func(t *testing.T) {
			exe := buildTest(t, c.name, c.san)
			b := testbroker.Start(t, nil)
			cmd := exec.Command(exe)
			cmd.Env = append(os.Environ(), "PORTRES_SOCKET="+b.Config.Socket, "TSAN_OPTIONS=halt_on_error=1")
			out, err := cmd.CombinedOutput()
			if err != nil || strings.Contains(string(out), "FAIL") || strings.Contains(string(out), "Sanitizer") {
				t.Fatalf("%s: %v\n%s", c.name, err, out)
			}
			t.Logf("%s", out)
		})
	}
}
