//go:build linux

package clib

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/testbroker"
	"github.com/portres/portres/internal/testutil"
)

// seedsDir finds the documents the project was given: $PORTRES_SEEDS, or
// shared/seeds beside the repository or one of its parents. They are
// Microsoft's text: read at test time, never copied into the repository.
func seedsDir() string {
	if d := os.Getenv("PORTRES_SEEDS"); d != "" {
		return d
	}
	for d := filepath.Dir(srcDir); ; d = filepath.Dir(d) {
		if fi, err := os.Stat(filepath.Join(d, "shared", "seeds")); err == nil && fi.IsDir() {
			return filepath.Join(d, "shared", "seeds")
		}
		if d == "/" {
			return ""
		}
	}
}

// extractSample returns, byte for byte, the fenced C++ block of the seed
// file named prefix* that holds a wmain: the published sample program.
func extractSample(t *testing.T, prefix string) []byte {
	t.Helper()
	dir := seedsDir()
	if dir == "" {
		if os.Getenv("PORTRES_REQUIRE_SEEDS") != "" {
			t.Fatal("PORTRES_REQUIRE_SEEDS is set and no shared/seeds directory is found (set PORTRES_SEEDS)")
		}
		t.Skip("the documents with the published samples (shared/seeds beside the repository, or $PORTRES_SEEDS) are not here")
	}
	files, _ := filepath.Glob(filepath.Join(dir, prefix+"*"))
	if len(files) != 1 {
		t.Fatalf("no single seed file %s* in %s: %v", prefix, dir, files)
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	for rest := data; ; {
		i := bytes.Index(rest, []byte("```cpp\n"))
		if i < 0 {
			break
		}
		body := rest[i+len("```cpp\n"):]
		j := bytes.Index(body, []byte("\n```"))
		if j < 0 {
			break
		}
		block := body[:j+1]
		if bytes.Contains(block, []byte("int wmain(")) {
			return block
		}
		rest = body[j:]
	}
	t.Fatalf("%s has no C++ block with a wmain", files[0])
	return nil
}

// compileSample writes src to a fresh directory others can read and
// compiles it with g++ as a Windows developer would, adding only the
// include directory and the libraries; san builds it with ASan+UBSan
// against the sanitized libraries.
func compileSample(t *testing.T, name string, src []byte, san bool) string {
	t.Helper()
	if _, err := exec.LookPath("g++"); err != nil {
		t.Skipf("the samples are C++: %v", err)
	}
	lib := libDir(t)
	dir := testutil.Dir(t)
	cpp := filepath.Join(dir, name+".cpp")
	if err := os.WriteFile(cpp, src, 0o644); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, name)
	args := []string{"-I" + filepath.Join(srcDir, "winsock", "include"), "-o", exe, cpp}
	if san {
		sanLib := sanDir(t, "asan")
		args = append(append(strings.Fields(sanitizers["asan"]), "-g"), args...)
		args = append(args, filepath.Join(sanLib, "libportres-winsock.a"), filepath.Join(sanLib, "libportres-wmain.a"),
			filepath.Join(sanLib, "libportres.a"), "-pthread")
	} else {
		args = append(args, "-L"+lib, "-Wl,-rpath,"+lib, "-lportres-winsock", "-lportres-wmain", "-lportres")
	}
	out, err := exec.Command("g++", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("g++ %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return exe
}

// sanitizers are the builds of the libraries with sanitizers: "asan"
// (AddressSanitizer and UndefinedBehaviorSanitizer) and "tsan"
// (ThreadSanitizer), each made once per test binary.
var sanitizers = map[string]string{
	"asan": "-fsanitize=address,undefined -fno-sanitize-recover=all",
	"tsan": "-fsanitize=thread",
}

var sanBuilds = map[string]*libBuild{"asan": {}, "tsan": {}}

// sanDir builds the libraries with the sanitizer kind and returns where.
func sanDir(t *testing.T, kind string) string {
	t.Helper()
	return sanBuilds[kind].make(t, "("+kind+")", func(dir string) []string {
		return []string{"CFLAGS=-O1 -g -fno-omit-frame-pointer " + sanitizers[kind],
			dir + "/libportres.a", dir + "/libportres-winsock.a", dir + "/libportres-wmain.a"}
	})
}

var (
	tokenRE = regexp.MustCompile(`Token=-?\d+`)
	portREs = []*regexp.Regexp{regexp.MustCompile(`Starting port=\d+`), regexp.MustCompile(`Port number allocated = \d+`)}
)

// normalize makes two runs' outputs comparable: tokens are random, the
// program name differs, and a wildcard block's place may.
func normalize(out, argv0 string, wildcard bool) string {
	out = strings.ReplaceAll(out, argv0, "PROGRAM")
	out = tokenRE.ReplaceAllString(out, "Token=T")
	if wildcard {
		for _, re := range portREs {
			out = re.ReplaceAllStringFunc(out, func(s string) string { return strings.TrimRight(s, "0123456789") + "P" })
		}
	}
	return out
}

// sampleRun runs exe with args against a fresh broker (reserving
// 7000-7019 first, to provoke an overlap) and returns exit code and output.
func sampleRun(t *testing.T, cred *syscall.Credential, exe []string, args []string) (int, string) {
	t.Helper()
	b := testbroker.Start(t, nil)
	admin := b.Dial(t)
	if _, err := admin.Acquire(context.Background(), portres.UDP, 7000, 20); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe[0], append(exe[1:], args...)...)
	cmd.Env = append(os.Environ(), "PORTRES_SOCKET="+b.Config.Socket)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String()
}

// portresBinary builds the portres CLI into a directory others can read.
func portresBinary(t *testing.T) string {
	t.Helper()
	exe := filepath.Join(testutil.Dir(t), "portres")
	if out, err := exec.Command("go", "build", "-o", exe, "github.com/portres/portres/cmd/portres").CombinedOutput(); err != nil {
		t.Fatalf("go build portres: %v\n%s", err, out)
	}
	return exe
}

// The argument sets the samples run with: good ones and each way the
// published program can fail.
var sampleArgs = []struct {
	args   string
	nobody bool // run as uid 65534
}{
	{"2 2 17 5000 20", false},  // UDP, specific block
	{"2 1 6 5000 20", false},   // TCP
	{"2 1 6 0 5", false},       // wildcard: the broker places it
	{"10 2 17 5000 3", false},  // AF_INET6: the sample's sockaddr_in is too short to bind (WSAEFAULT)
	{"2 2 17 7010 5", false},   // overlaps a reservation: WSAEADDRINUSE
	{"2 1 6 0 0", false},       // zero ports: WSAEINVAL
	{"2 2 17 65530 10", false}, // past 65535: WSAEINVAL
	{"2 1 6 80 1", true},       // privileged port, unprivileged caller: WSAEACCES
	{"-1 2 17 5000 20", false}, // bad family: socket fails with WSAEAFNOSUPPORT
	{"2 1 17 5000 20", false},  // stream socket with UDP: WSAEPROTONOSUPPORT
	{"2 3 255 5000 1", false},  // a raw socket: WSAEOPNOTSUPP from WSAIoctl
	{"2 2 17 70000 1", false},  // start out of range
	{"2 2 17 5000 -3", false},  // negative count
	{"2 2 17 5000", false},     // usage
	{"", false},                // usage
}

// TestPublishedSamples compiles the two sample programs of the port
// reservation documentation exactly as published, runs them against
// real brokers, and requires them to print what `portres sample` prints
// for the same arguments (the short sample, 000, prints its subset).
func TestPublishedSamples(t *testing.T) {
	testutil.RequireRoot(t)
	long := extractSample(t, "003_")
	short := extractSample(t, "000_")
	builds := map[string]string{
		"long":      compileSample(t, "acquire_sample", long, false),
		"short":     compileSample(t, "release_sample", short, false),
		"long-asan": compileSample(t, "acquire_sample_asan", long, true),
	}
	cli := portresBinary(t)
	for _, a := range sampleArgs {
		args := strings.Fields(a.args)
		var cred *syscall.Credential
		if a.nobody {
			cred = nobody
		}
		wildcard := len(args) == 5 && args[3] == "0"
		// Each run in a subtest of its own, so that its broker is gone
		// before the next starts (they share the kernel list).
		var wantCode int
		var want string
		t.Run(a.args+"/portres", func(t *testing.T) {
			wantCode, want = sampleRun(t, cred, []string{cli, "sample"}, args)
			want = normalize(want, "portres sample", wildcard)
		})
		for _, name := range []string{"long", "short", "long-asan"} {
			exe := builds[name]
			t.Run(a.args+"/"+name, func(t *testing.T) {
				code, got := sampleRun(t, cred, []string{exe}, args)
				got = normalize(got, exe, wildcard)
				w := want
				if name == "short" {
					w = shortSubset(want)
				}
				if code != wantCode || got != w {
					t.Errorf("%s sample %q: exit %d, printed\n%s\nportres sample: exit %d\n%s", name, a.args, code, got, wantCode, w)
				}
			})
		}
	}
}

// shortSubset is what the short sample prints of the long one's output:
// it has no second socket, no associate and no bind.
func shortSubset(s string) string {
	var keep []string
	for _, l := range strings.SplitAfter(s, "\n") {
		switch {
		case strings.Contains(l, "second socket"), strings.Contains(l, "SIO_ASSOCIATE"), strings.HasPrefix(l, "bind "),
			strings.HasPrefix(l, "getsockname"), strings.HasPrefix(l, "Port number"):
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "")
}
