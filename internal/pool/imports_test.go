package pool

import (
	"go/parser"
	"go/token"
	"os"
	"strconv"
	"strings"
	"testing"
)

// forbidden lists import paths (and, with a trailing "/", path prefixes)
// that the allocator must not use: anything that does I/O or system calls.
// crypto/rand is allowed for tokens.
var forbidden = []string{
	"C", "unsafe", "syscall", "os", "os/", "net", "net/", "io", "io/",
	"log", "log/", "time", "runtime", "runtime/", "internal/",
	"path/filepath", "golang.org/x/sys", "golang.org/x/sys/",
	"github.com/portres/portres/",
}

func isForbidden(path string) bool {
	for _, f := range forbidden {
		if path == f || strings.HasSuffix(f, "/") && strings.HasPrefix(path, f) {
			return true
		}
	}
	return false
}

// TestNoSyscallImports keeps the package pure: it parses the imports of
// every non-test file and fails on any forbidden one.
func TestNoSyscallImports(t *testing.T) {
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	files := 0
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		files++
		for _, imp := range f.Imports {
			path, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				t.Fatal(err)
			}
			if isForbidden(path) {
				t.Errorf("%s: forbidden import %q", fset.Position(imp.Pos()), path)
			}
		}
	}
	if files == 0 {
		t.Fatal("no source files found")
	}
}

func TestIsForbidden(t *testing.T) {
	for path, want := range map[string]bool{
		"syscall": true, "os": true, "os/exec": true, "net": true, "net/netip": true,
		"golang.org/x/sys/unix": true, "io": true, "unsafe": true,
		"crypto/rand": false, "math/bits": false, "errors": false, "fmt": false,
		"sort": false, "slices": false, "encoding/binary": false, "osx": false,
	} {
		if got := isForbidden(path); got != want {
			t.Errorf("isForbidden(%q) = %v, want %v", path, got, want)
		}
	}
}
