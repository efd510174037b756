//go:build linux

package web_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/portres/portres"
	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/testbroker"
	"github.com/portres/portres/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

func init() { testutil.Helpers["as"] = helperAs }

// helperAs holds reservations under a command line of its choosing, as a
// real server would show: ARGV0 ARGS... (re-executed with that argv);
// stdin lines "acquire PROTO START COUNT [bind|delegated]" answer
// "ready START"; it holds until stdin closes.
func helperAs(args []string) int {
	if os.Getenv("AS_DONE") == "" {
		exe, _ := os.Executable()
		os.Setenv("AS_DONE", "1")
		err := syscall.Exec(exe, args, os.Environ())
		fmt.Println("error", err)
		return 1
	}
	ctx := context.Background()
	c, err := portres.Dial(ctx, "")
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	defer c.Close()
	var keep []any
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var proto string
		var start, count uint16
		var how string
		fmt.Sscan(in.Text(), new(string), &proto, &start, &count, &how)
		p, _ := portres.ParseProto(proto)
		var r *portres.Reservation
		if how == "delegated" {
			r, err = c.AcquireDelegated(ctx, p, start, count)
		} else {
			r, err = c.Acquire(ctx, p, start, count)
		}
		if err != nil {
			fmt.Println("error", err)
			continue
		}
		if how == "bind" {
			if p == portres.TCP {
				ln, err := r.Listen(ctx, "tcp", fmt.Sprintf(":%d", r.Start()+1))
				if err == nil {
					keep = append(keep, ln)
				}
			} else {
				pc, err := r.ListenPacket(ctx, "udp", fmt.Sprintf(":%d", r.Start()))
				if err == nil {
					keep = append(keep, pc)
				}
			}
		}
		fmt.Println("ready", r.Start())
	}
	return 0
}

// owner is a helper process holding reservations under a command line.
type owner struct{ p *testutil.Process }

func startOwner(t *testing.T, sock string, argv ...string) *owner {
	t.Helper()
	return &owner{testutil.StartHelper(t, "as", []string{"PORTRES_SOCKET=" + sock}, argv...)}
}

func (o *owner) take(t *testing.T, spec string) uint16 {
	t.Helper()
	fmt.Fprintln(o.p.Stdin, "acquire "+spec)
	var start uint16
	if l := o.p.Line(10 * time.Second); !strings.HasPrefix(l, "ready") {
		t.Fatalf("owner: %s", l)
	} else {
		fmt.Sscan(strings.TrimPrefix(l, "ready "), &start)
	}
	return start
}

// chromium is Debian's browser, which .ci/run installs.
const chromium = "/usr/bin/chromium"

// TestPortMapInBrowser drives the port map in a real headless Chromium:
// reservations of each kind made through the broker appear without a
// reload, hovering a block shows its owner, clicking keeps it in the
// details, a released block goes, and a screenshot of the page lands in
// artifacts/portmap.png (the README's picture comes from it).
func TestPortMapInBrowser(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := os.Stat(chromium); err != nil {
		if os.Getenv("PORTRES_REQUIRE_BROWSER") != "" {
			t.Fatalf("PORTRES_REQUIRE_BROWSER is set and there is no browser: %v", err)
		}
		t.Skipf("needs Debian's chromium (%s, apt-get install chromium): %v", chromium, err)
	}
	// Other software's entries in the kernel list, as a distribution
	// or another daemon leaves them.
	if err := os.WriteFile(testutil.ReservedPortsPath, []byte("3306,5432,27017-27019"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := testbroker.Start(t, func(c *broker.Config) { c.HTTP = "127.0.0.1:0" })
	sock := b.Config.Socket
	ctx := context.Background()
	admin := b.Dial(t)
	if _, err := admin.CreatePersistent(ctx, portres.TCP, 8000, 100); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreatePersistent(ctx, portres.UDP, 5060, 10); err != nil {
		t.Fatal(err)
	}
	web := startOwner(t, sock, "nginx: master process /usr/sbin/nginx -g daemon off;")
	web.take(t, "tcp 0 64 bind")
	media := startOwner(t, sock, "/usr/bin/rtpengine --interface=lo --port-min=0")
	media.take(t, "udp 0 512 bind")
	run := startOwner(t, sock, "portres run --tcp 8 -- ./integration-tests --parallel 8")
	run.take(t, "tcp 0 8 delegated")
	victim := startOwner(t, sock, "/usr/local/bin/etcd --data-dir /var/lib/etcd --listen-client-urls http://127.0.0.1:<b>2379</b>")
	vStart := victim.take(t, "tcp 42000 40 bind")
	// Sockets of programs that do not use portres.
	for i := 0; i < 6; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
	}

	allocOpts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true), chromedp.Flag("no-first-run", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1320, 1480))
	actx, cancel := chromedp.NewExecAllocator(ctx, allocOpts...)
	defer cancel()
	bctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	bctx, cancel = context.WithTimeout(bctx, 60*time.Second)
	defer cancel()

	url := "http://" + b.MetricsAddr() + "/"
	row := fmt.Sprintf(`#blocks tbody tr[data-start="%d"]`, vStart)
	if err := chromedp.Do(bctx, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS(row))); err != nil {
		t.Fatalf("the page does not list the block %d: %v", vStart, err)
	}
	for _, kind := range []string{"runtime", "delegated", "persistent", "excluded", "foreign"} {
		n, err := chromedp.Run(bctx, chromedp.Evaluate[int](fmt.Sprintf(`document.querySelectorAll('#blocks tbody tr[data-kind=%q]').length`, kind)))
		if err != nil || n == 0 {
			t.Errorf("no %s rows on the page (%v)", kind, err)
		}
	}

	// A block made after the page loaded appears without a reload.
	late := startOwner(t, sock, "redis-server *:0")
	lStart := late.take(t, "tcp 45000 4 bind")
	if err := chromedp.Do(bctx, chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#blocks tbody tr[data-start="%d"]`, lStart)))); err != nil {
		t.Fatalf("a new block did not appear without a reload: %v", err)
	}

	// Hover over the etcd block: the tooltip names its owner; the
	// command line is shown as text (its "<b>" is not markup).
	js := fmt.Sprintf(`(() => { const c = document.querySelector('canvas[data-proto="tcp"]'); const r = c.getBoundingClientRect();
		const p = %d; return [r.left + ((p %% 256) + 0.5) * r.width / 256, r.top + (Math.floor(p / 256) + 0.5) * r.height / 256]; })()`, vStart+5)
	xy, err := chromedp.Run(bctx, chromedp.Evaluate[[]float64](js))
	if err != nil || len(xy) != 2 {
		t.Fatalf("canvas position: %v %v", xy, err)
	}
	x, y := xy[0], xy[1]
	if err := chromedp.Do(bctx, chromedp.MouseEvent(chromedp.MouseMoved, x, y), chromedp.WaitVisible(chromedp.CSS("#tip"))); err != nil {
		t.Fatal(err)
	}
	tip, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("#tip")))
	if err != nil {
		t.Fatal(err)
	}
	pid := victim.p.Cmd.Process.Pid
	if !strings.Contains(tip, fmt.Sprintf("pid %d", pid)) || !strings.Contains(tip, "etcd --data-dir") || !strings.Contains(tip, "<b>2379</b>") {
		t.Errorf("hover tooltip %q does not name the owner (pid %d, etcd, its command as text)", tip, pid)
	}
	bold, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll('#tip b, #details b, #blocks b').length`))
	if err != nil || bold != 0 {
		t.Errorf("a command line was rendered as HTML (%d <b> elements, %v)", bold, err)
	}
	if err := chromedp.Do(bctx, chromedp.MouseClickXY(x, y)); err != nil {
		t.Fatal(err)
	}
	details, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("#details")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(details, "etcd") || !strings.Contains(details, "40 ports") {
		t.Errorf("clicked details %q do not describe the etcd block", details)
	}

	// Screenshot, for CI's artifacts and the README.
	if err := chromedp.Do(bctx, chromedp.MouseEvent(chromedp.MouseMoved, x, y), chromedp.Sleep(200*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	out := artifact(t, "portmap.png")
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", out, len(png))

	// The owner goes: its block leaves the page.
	victim.p.Stdin.Close()
	victim.p.Wait()
	if err := chromedp.Do(bctx, chromedp.WaitNotPresent(chromedp.CSS(row))); err != nil {
		t.Errorf("a released block stayed on the page: %v", err)
	}
}

// artifact is where a test leaves a file for CI to keep:
// $PORTRES_ARTIFACTS, else artifacts/ at the repository's root.
func artifact(t *testing.T, name string) string {
	dir := os.Getenv("PORTRES_ARTIFACTS")
	if dir == "" {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(filepath.Dir(strings.TrimSpace(string(out))), "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, name)
}
