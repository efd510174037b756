//go:build linux

package clib

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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

var build struct {
	once sync.Once
	dir  string
	err  error
	out  string
}

// needCC skips the test without a C compiler and make.
func needCC(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"cc", "make", "ar"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("libportres needs %s: %v", tool, err)
		}
	}
}

// libDir builds libportres once per test binary into a directory others
// can read (uid 65534 runs the driver) and returns it.
func libDir(t *testing.T) string {
	t.Helper()
	needCC(t)
	build.once.Do(func() {
		dir, err := os.MkdirTemp("", "libportres-")
		if err == nil {
			err = os.Chmod(dir, 0o755)
		}
		if err != nil {
			build.err = err
			return
		}
		build.dir = dir
		out, err := exec.Command("make", "-s", "-C", srcDir, "O="+dir, "all", dir+"/driver").CombinedOutput()
		build.out, build.err = string(out), err
	})
	if build.err != nil {
		t.Fatalf("make libportres: %v\n%s", build.err, build.out)
	}
	return build.dir
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
