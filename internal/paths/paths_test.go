//go:build linux

package paths

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portres/portres/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

const nobody = 65534

func init() {
	testutil.Helpers["checkdir"] = func(args []string) int {
		fmt.Println(result(CheckPrivateDir(args[0], os.Geteuid())))
		return 0
	}
	testutil.Helpers["ensuredir"] = func(args []string) int {
		fmt.Println(result(EnsurePrivateDir(args[0], os.Geteuid())))
		return 0
	}
	testutil.Helpers["clientsocket"] = func(args []string) int {
		tmpBase = args[0]
		fmt.Println(ClientSocket())
		return 0
	}
}

func result(err error) string {
	if err != nil {
		return "refused: " + err.Error()
	}
	return "ok"
}

// asNobody runs helper name with args as uid and gid 65534 and returns
// its one line of output.
func asNobody(t *testing.T, name string, args ...string) string {
	t.Helper()
	return asNobodyEnv(t, []string{"XDG_RUNTIME_DIR=", EnvSocket + "="}, name, args...)
}

// asNobodyEnv is asNobody with the extra environment env.
func asNobodyEnv(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	p := testutil.StartHelperAs(t, &syscall.Credential{Uid: nobody, Gid: nobody}, name, env, args...)
	line := p.Line(10 * time.Second)
	if code := p.Wait(); code != 0 {
		t.Fatalf("helper %s: exit %d", name, code)
	}
	return line
}

// dirAs creates dir owned by uid with mode perm.
func dirAs(t *testing.T, dir string, uid int, perm os.FileMode) {
	t.Helper()
	if err := os.Mkdir(dir, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, perm); err != nil { // past the umask
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, uid); err != nil {
		t.Fatal(err)
	}
}

func TestFallbackDir(t *testing.T) {
	if got := FallbackDir(1000); got != "/tmp/portres-1000" {
		t.Errorf("FallbackDir(1000) = %q", got)
	}
}

func TestCheckPrivateDir(t *testing.T) {
	testutil.RequireRoot(t)
	base := testutil.Dir(t)
	open := filepath.Join(base, "open")
	dirAs(t, open, nobody, 0o777)
	private := filepath.Join(base, "private")
	dirAs(t, private, nobody, 0o700)
	group := filepath.Join(base, "group")
	dirAs(t, group, nobody, 0o750)
	link := filepath.Join(base, "link")
	if err := os.Symlink(private, link); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dir  string
		uid  int
		want string // "" for no error
	}{
		{open, 0, "owned by uid 65534"},
		{open, 1000, "owned by uid 65534"},
		{open, nobody, "mode 0777"},
		{group, nobody, "mode 0750"},
		{private, 0, "owned by uid 65534"},
		{private, nobody, ""},
		{link, nobody, "symbolic link"},
		{file, 0, "regular file"},
	} {
		err := CheckPrivateDir(tc.dir, tc.uid)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("CheckPrivateDir(%s, %d) = %v; want nil", tc.dir, tc.uid, err)
		case tc.want == "":
		case err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.dir):
			t.Errorf("CheckPrivateDir(%s, %d) = %v; want an error naming the path and %q", tc.dir, tc.uid, err, tc.want)
		case !errors.Is(err, ErrNotPrivate):
			t.Errorf("CheckPrivateDir(%s, %d) = %v; want it to wrap ErrNotPrivate", tc.dir, tc.uid, err)
		}
	}
	if err := CheckPrivateDir(filepath.Join(base, "missing"), 0); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("CheckPrivateDir(missing) = %v; want ErrNotExist", err)
	}
}

// TestCheckPrivateDirAsOwner runs the check as uid 65534 itself: its own
// directory is still refused while others may write into it.
func TestCheckPrivateDirAsOwner(t *testing.T) {
	testutil.RequireRoot(t)
	base := testutil.Dir(t)
	open := filepath.Join(base, "portres-65534")
	dirAs(t, open, nobody, 0o777)
	if got := asNobody(t, "checkdir", open); !strings.Contains(got, "refused") || !strings.Contains(got, "mode 0777") {
		t.Errorf("uid 65534 checking its 0777 directory: %s; want refused for the mode", got)
	}
	if got := asNobody(t, "ensuredir", open); !strings.Contains(got, "mode 0777") {
		t.Errorf("uid 65534 ensuring its 0777 directory: %s; want refused for the mode", got)
	}
	if fi, _ := os.Stat(open); fi.Mode().Perm() != 0o777 {
		t.Errorf("the refused directory was changed to %v", fi.Mode())
	}
	tmp := filepath.Join(base, "tmp") // like /tmp: anyone may create names
	dirAs(t, tmp, 0, 0o777|os.ModeSticky)
	mine := filepath.Join(tmp, "portres-65534")
	if got := asNobody(t, "ensuredir", mine); got != "ok" {
		t.Errorf("uid 65534 creating its directory: %s", got)
	}
	checkCreated(t, mine, nobody)
}

func checkCreated(t *testing.T, dir string, uid int) {
	t.Helper()
	fi, err := os.Lstat(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || fi.Mode().Perm() != 0o700 || int(st.Uid) != uid {
		t.Errorf("%s: %v owned by uid %d; want a directory with mode 0700 owned by uid %d", dir, fi.Mode(), st.Uid, uid)
	}
}

func TestEnsurePrivateDir(t *testing.T) {
	testutil.RequireRoot(t)
	base := testutil.Dir(t)
	dir := filepath.Join(base, "portres-0")
	if err := EnsurePrivateDir(dir, 0); err != nil {
		t.Fatal(err)
	}
	checkCreated(t, dir, 0)
	if err := EnsurePrivateDir(dir, 0); err != nil {
		t.Errorf("existing private directory: %v", err)
	}

	target := filepath.Join(base, "target")
	dirAs(t, target, 0, 0o755)
	link := filepath.Join(base, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := EnsurePrivateDir(link, 0); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("EnsurePrivateDir(symlink) = %v; want refused", err)
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o755 {
		t.Errorf("the link's target changed to %v", fi.Mode())
	}

	if err := EnsurePrivateDir(filepath.Join(base, "no", "parent"), 0); err == nil {
		t.Error("EnsurePrivateDir created missing parents")
	}
}

// TestClientSocketFallbackDir checks that a client ignores a socket in a
// fallback directory that is not private and uses one that is.
func TestClientSocketFallbackDir(t *testing.T) {
	testutil.RequireRoot(t)
	base := testutil.Dir(t)
	dir := filepath.Join(base, "portres-65534")
	dirAs(t, dir, nobody, 0o777)
	sock := filepath.Join(dir, "portres.sock")
	if err := os.WriteFile(sock, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if got := asNobody(t, "clientsocket", base); got != SystemSocket {
		t.Errorf("socket in a 0777 fallback directory: client uses %s; want %s", got, SystemSocket)
	}
	os.Chown(dir, 0, 0)
	os.Chmod(dir, 0o700)
	if got := asNobody(t, "clientsocket", base); got != SystemSocket {
		t.Errorf("socket in root's fallback directory: client uses %s; want %s", got, SystemSocket)
	}
	os.Chown(dir, nobody, nobody)
	if got := asNobody(t, "clientsocket", base); got != sock {
		t.Errorf("socket in a private fallback directory: client uses %s; want %s", got, sock)
	}
}

// TestClientSocketXDG checks that XDG_RUNTIME_DIR, the user's own by
// contract, is used as is.
func TestClientSocketXDG(t *testing.T) {
	testutil.RequireRoot(t)
	base := testutil.Dir(t)
	dir := filepath.Join(base, "run")
	dirAs(t, dir, nobody, 0o700)
	sock := filepath.Join(dir, "portres.sock")
	if err := os.WriteFile(sock, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if got := asNobodyEnv(t, []string{"XDG_RUNTIME_DIR=" + dir, EnvSocket + "="}, "clientsocket", base); got != sock {
		t.Errorf("ClientSocket() = %s; want %s", got, sock)
	}
}
