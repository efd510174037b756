//go:build linux

package clib

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/portres/portres/internal/testbroker"
	"github.com/portres/portres/internal/testutil"
)

// install runs make install into a fresh DESTDIR with PREFIX=/usr and
// returns the environment under which pkg-config finds the result.
func install(t *testing.T) (destdir string, env []string) {
	t.Helper()
	needCC(t)
	if _, err := exec.LookPath("pkg-config"); err != nil {
		t.Skipf("needs pkg-config: %v", err)
	}
	destdir = testutil.Dir(t)
	out, err := exec.Command("make", "-s", "-C", srcDir, "O="+testutil.Dir(t), "PREFIX=/usr", "DESTDIR="+destdir, "install").CombinedOutput()
	if err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	return destdir, append(os.Environ(), "PKG_CONFIG_SYSROOT_DIR="+destdir, "PKG_CONFIG_PATH="+destdir+"/usr/lib/pkgconfig",
		"PKG_CONFIG_LIBDIR="+destdir+"/usr/lib/pkgconfig")
}

// ccPkg compiles src with cc and `pkg-config --cflags --libs pkg`, as
// the README says a user builds against the installed library.
func ccPkg(t *testing.T, env []string, destdir, pkg, src string) string {
	t.Helper()
	pc := exec.Command("pkg-config", "--cflags", "--libs", pkg)
	pc.Env = env
	flags, err := pc.Output()
	if err != nil {
		t.Fatalf("pkg-config --cflags --libs %s: %v", pkg, err)
	}
	exe := filepath.Join(testutil.Dir(t), strings.TrimSuffix(filepath.Base(src), ".c"))
	args := append([]string{"-Wall", "-Wextra", "-Werror", "-o", exe, src}, strings.Fields(string(flags))...)
	args = append(args, "-Wl,-rpath,"+destdir+"/usr/lib") // installed outside the loader's path
	if out, err := exec.Command("cc", args...).CombinedOutput(); err != nil {
		t.Fatalf("cc %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return exe
}

// TestInstallAndExamples installs the library, checks what landed where,
// builds examples/ with pkg-config, and runs them against a broker: the
// native API, and the Winsock program with a persistent reservation and
// overlapped WSAIoctl calls completed by an event and by a completion
// routine.
func TestInstallAndExamples(t *testing.T) {
	testutil.RequireRoot(t)
	destdir, env := install(t)
	for _, f := range []string{"usr/include/portres.h", "usr/include/portres/winsock/winsock2.h",
		"usr/include/portres/winsock/Windows.h.", "usr/include/portres/winsock/mstcpip.h",
		"usr/include/portres/winsock/iphlpapi.h", "usr/include/portres/winsock/ws2ipdef.h",
		"usr/lib/libportres.a", "usr/lib/libportres.so.1", "usr/lib/libportres-winsock.so.1", "usr/lib/libportres-wmain.a",
		"usr/lib/pkgconfig/portres.pc", "usr/lib/pkgconfig/portres-winsock.pc"} {
		if _, err := os.Stat(filepath.Join(destdir, f)); err != nil {
			t.Errorf("make install did not install %s: %v", f, err)
		}
	}
	native := ccPkg(t, env, destdir, "portres", "../../examples/native_listen.c")
	win := ccPkg(t, env, destdir, "portres-winsock", "../../examples/persistent_overlapped.c")
	b := testbroker.Start(t, nil)
	run := func(exe string, args ...string) string {
		cmd := exec.Command(exe, args...)
		cmd.Env = append(os.Environ(), "PORTRES_SOCKET="+b.Config.Socket)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", exe, err, out)
		}
		return string(out)
	}
	out := run(native, "4")
	for _, re := range []string{`reserved tcp (\d+)-\d+\n`, `listening on port \d+\n`, `tcp \d+-\d+ runtime pid \d+ \(mine\) bound \d+\n`, `released\n`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("native_listen printed no %q:\n%s", re, out)
		}
	}
	out = run(win, "9000", "10")
	want := []string{
		"CreatePersistentTcpPortReservation succeeded: ports 9000-9009\n",
		"LookupPersistentTcpPortReservation: 0, same token: yes\n",
		"event signalled: associate done, bytesReturned = 0\n",
		"bound to persistent port 9000\n",
		"SleepEx returned after the completion routine: yes\n",
		"DeletePersistentTcpPortReservation: 0\n",
		"LookupPersistentTcpPortReservation after delete: 1168 (ERROR_NOT_FOUND is 1168)\n",
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("persistent_overlapped printed no %q:\n%s", w, out)
		}
	}
	if !regexp.MustCompile(`completion routine: acquired runtime ports \d+-\d+, 16 bytes\n`).MatchString(out) {
		t.Errorf("the completion routine did not report the acquire:\n%s", out)
	}
}
