//go:build linux

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
	runCTests(t, []cTest{{"winsock_test", ""}, {"winsock_test", "asan"}, {"threads_test", ""}, {"threads_test", "tsan"}})
}

// TestClientCalls runs libportres/tests/client_test.c (portres_bind_many
// past one request's PORTRES_MAX_BIND, a failure in its second request,
// portres_acquire_bind, and the errors both check before sending) plain
// and under ASan+UBSan, against a fresh broker.
func TestClientCalls(t *testing.T) {
	runCTests(t, []cTest{{"client_test", ""}, {"client_test", "asan"}})
}

// A cTest is a C test program of libportres/tests and the sanitizer it
// is built with ("" for none).
type cTest struct{ name, san string }

// runCTests builds and runs each test against a fresh broker of its own;
// the test fails on a nonzero exit, a "FAIL" line or a sanitizer report.
func runCTests(t *testing.T, tests []cTest) {
	testutil.RequireRoot(t)
	for _, c := range tests {
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

// TestUnprovidedCallsFailToCompile: a Winsock call the layer does not
// provide is a compile error that says what to use instead, in C and
// C++, not a link error or a POSIX function of the same name.
func TestUnprovidedCallsFailToCompile(t *testing.T) {
	needCC(t)
	dir := testutil.Dir(t)
	for _, c := range []struct{ compiler, ext, call, want string }{
		{"g++", "cpp", "WSARecv(s, 0, 1, 0, 0, 0, 0)", "portres: WSARecv is not provided"},
		{"cc", "c", "ioctlsocket(s, 0, 0)", "portres: ioctlsocket is not provided; use fcntl(2)"},
		{"cc", "c", "WSAEventSelect(s, 0, 0)", "portres: WSAEventSelect is not provided"},
	} {
		if _, err := exec.LookPath(c.compiler); err != nil {
			t.Skipf("needs %s: %v", c.compiler, err)
		}
		src := filepath.Join(dir, "missing."+c.ext)
		code := "#include <winsock2.h>\nint f(SOCKET s) { return (int)" + c.call + "; }\n"
		if err := os.WriteFile(src, []byte(code), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(c.compiler, "-I"+filepath.Join(srcDir, "winsock", "include"), "-c", "-o", filepath.Join(dir, "missing.o"), src).CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("%s with %s: %v\n%s\nwant a compile error saying %q", c.compiler, c.call, err, out, c.want)
		}
	}
}
