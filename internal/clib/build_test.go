//go:build linux

package clib

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/portres/portres/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(cleanup{m}) }

// cleanup removes the library's build directory after the tests.
type cleanup struct{ m *testing.M }

func (c cleanup) Run() int {
	code := c.m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	for _, b := range sanBuilds {
		os.RemoveAll(b.dir)
	}
	return code
}

// srcDir is libportres's source directory.
var srcDir, _ = filepath.Abs("../../libportres")

// nobody is the unprivileged user the tests run C and Go clients as.
var nobody = &syscall.Credential{Uid: 65534, Gid: 65534}

// libBuild is one build of the libraries, made once per test binary into
// a directory others can read (uid 65534 runs the driver), kept until
// the test binary ends (TestMain removes it).
type libBuild struct {
	once sync.Once
	dir  string
	err  error
	out  []byte
}

// make runs make once, with O= the build's directory and the arguments
// args gives for it, and returns the directory or fails t.
func (b *libBuild) make(t *testing.T, what string, args func(dir string) []string) string {
	t.Helper()
	needCC(t)
	b.once.Do(func() {
		if b.dir, b.err = os.MkdirTemp("", "libportres-"); b.err == nil {
			b.err = os.Chmod(b.dir, 0o755)
		}
		if b.err != nil {
			return
		}
		argv := append([]string{"-s", "-C", srcDir, "O=" + b.dir}, args(b.dir)...)
		b.out, b.err = exec.Command("make", argv...).CombinedOutput()
	})
	if b.err != nil {
		t.Fatalf("make %s: %v\n%s", what, b.err, b.out)
	}
	return b.dir
}

// build is the plain build of the libraries and the C driver.
var build libBuild

// needCC skips the test without a C compiler and make.
func needCC(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"cc", "make", "ar"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("libportres needs %s: %v", tool, err)
		}
	}
}

// libDir builds libportres once per test binary and returns where.
func libDir(t *testing.T) string {
	t.Helper()
	return build.make(t, "libportres", func(dir string) []string { return []string{"all", dir + "/driver"} })
}

// TestCheck runs the library's own tests: the codec's unit tests and
// fuzz driver, plain and under ASan+UBSan (make check).
func TestCheck(t *testing.T) {
	needCC(t)
	dir := t.TempDir()
	out, err := exec.Command("make", "-s", "-C", srcDir, "O="+dir, "check").CombinedOutput()
	if err != nil {
		t.Fatalf("make check: %v\n%s", err, out)
	}
	for _, want := range []string{"test_wire: ok", "fuzz_wire: 200000 inputs, no fault"} {
		if strings.Count(string(out), want) != 2 {
			t.Errorf("make check did not print %q twice (plain and sanitized):\n%s", want, out)
		}
	}
}
