//go:build linux

package web_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/broker"
	"github.com/portres/portres/internal/testbroker"
	"github.com/portres/portres/internal/testutil"
	"github.com/portres/portres/internal/web"
)

func get(t *testing.T, c *http.Client, url string) []byte {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v: %s", url, resp.Status, err, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("GET %s: Content-Type %q", url, ct)
	}
	return body
}

// TestAPIMatchesCLI: /api/v1/reservations and /api/v1/status have the
// shapes of `portres show --json` and `portres status --json`, with no
// token anywhere, and other processes' text escaped.
func TestAPIMatchesCLI(t *testing.T) {
	b := testbroker.Start(t, func(c *broker.Config) { c.HTTP = "127.0.0.1:0" })
	ctx := context.Background()
	admin := b.Dial(t)
	if _, err := admin.CreatePersistent(ctx, portres.UDP, 5060, 10); err != nil {
		t.Fatal(err)
	}
	mine, err := admin.Acquire(ctx, portres.TCP, 0, 16)
	if err != nil {
		t.Fatal(err)
	}
	evil := startOwner(t, b.Config.Socket, `<script>alert("x")</script>`, "--port", "\x1b[31m")
	evil.take(t, "tcp 0 4 bind")

	base := "http://" + b.MetricsAddr()
	body := get(t, http.DefaultClient, base+"/api/v1/reservations")
	var got []portres.ShowEntry
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	infos, err := admin.Show(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := portres.ShowEntries(infos)
	sawToken := false
	for i := range want {
		sawToken = sawToken || want[i].Token != ""
		want[i].Token = ""
	}
	if !sawToken {
		t.Fatal("the admin's show has no token to leave out: the test proves nothing")
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("/api/v1/reservations\n got %+v\nwant %+v (show --json without tokens)", got, want)
	}
	for _, path := range []string{"/api/v1/reservations", "/api/v1/status", "/api/v1/map"} {
		b := get(t, http.DefaultClient, base+path)
		if strings.Contains(string(b), `"token"`) || strings.Contains(string(b), fmt.Sprintf("%x", uint64(mine.Token()))) {
			t.Errorf("%s shows a token: %s", path, b)
		}
		if strings.Contains(string(b), "<script>") || strings.Contains(string(b), "\x1b") {
			t.Errorf("%s has another process's text unescaped: %s", path, b)
		}
	}
	if !strings.Contains(string(body), `\u003cscript\u003e`) {
		t.Errorf("the command line is missing or escaped otherwise: %s", body)
	}

	var st portres.Status
	if err := json.Unmarshal(get(t, http.DefaultClient, base+"/api/v1/status"), &st); err != nil {
		t.Fatal(err)
	}
	cli, err := admin.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&st, cli) {
		t.Errorf("/api/v1/status\n got %+v\nwant %+v (status --json)", st, cli)
	}

	// The page and its assets come from the binary, with headers that
	// keep them from being framed or sniffed.
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), `<script src="/static/map.js"`) || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") ||
		resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("GET /: %s %v", page, resp.Header)
	}
	resp, err = http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), "portres_reserved_ports") {
		t.Errorf("GET /metrics next to the pages: %s", metrics)
	}
}

// TestEventsFollowTheBroker reads /api/v1/events as a browser does: the
// map comes at once, and again when a reservation is made or released.
func TestEventsFollowTheBroker(t *testing.T) {
	b := testbroker.Start(t, func(c *broker.Config) { c.HTTP = "127.0.0.1:0" })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+b.MetricsAddr()+"/api/v1/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	events := make(chan web.PortMap)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<22)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var m web.PortMap
			if err := json.Unmarshal([]byte(data), &m); err != nil {
				t.Errorf("event: %v: %s", err, data)
				return
			}
			events <- m
		}
	}()
	next := func(what string, ok func(web.PortMap) bool) {
		t.Helper()
		for {
			select {
			case m, open := <-events:
				if !open {
					t.Fatalf("the stream ended before %s", what)
				}
				if ok(m) {
					return
				}
			case <-ctx.Done():
				t.Fatalf("no event with %s", what)
			}
		}
	}
	has := func(start uint16) func(web.PortMap) bool {
		return func(m web.PortMap) bool {
			for _, e := range m.Blocks {
				if e.Start == start && e.Proto == "tcp" {
					return true
				}
			}
			return false
		}
	}
	next("the first map", func(m web.PortMap) bool { return len(m.Protos) == 2 && m.Protos[0].Dynamic[0] != 0 })
	c := b.Dial(t)
	r, err := c.Acquire(ctx, portres.TCP, 43000, 10)
	if err != nil {
		t.Fatal(err)
	}
	next("the new block", has(43000))
	if err := r.Release(ctx); err != nil {
		t.Fatal(err)
	}
	next("the block gone", func(m web.PortMap) bool { return !has(43000)(m) })
}

// TestHTTPAddresses: --http refuses a non-loopback address unless told,
// and serves on a Unix socket.
func TestHTTPAddresses(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:0", "example.invalid:0"} {
		b, err := broker.New(testbroker.Config(t, func(c *broker.Config) { c.HTTP = addr }))
		if err == nil {
			b.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("--http %s: %v, want a refusal naming loopback", addr, err)
		}
	}
	path := filepath.Join(t.TempDir(), "http.sock")
	testbroker.Start(t, func(c *broker.Config) { c.HTTP = "unix:" + path })
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
	var got []portres.ShowEntry
	if err := json.Unmarshal(get(t, hc, "http://portresd/api/v1/reservations"), &got); err != nil {
		t.Fatal(err)
	}
}

// TestEventStreamsAreCapped: past web.MaxStreams open event streams the
// next is refused (503) rather than costing the broker more; a closed
// stream frees its slot.
func TestEventStreamsAreCapped(t *testing.T) {
	b := testbroker.Start(t, func(c *broker.Config) { c.HTTP = "127.0.0.1:0" })
	url := "http://" + b.MetricsAddr() + "/api/v1/events"
	hc := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: web.MaxStreams + 2}}
	open := func() (*http.Response, context.CancelFunc) {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp, cancel
	}
	var cancels []context.CancelFunc
	defer func() {
		for _, c := range cancels {
			c()
		}
	}()
	for i := 0; i < web.MaxStreams; i++ {
		resp, cancel := open()
		cancels = append(cancels, cancel)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("stream %d: %s", i, resp.Status)
		}
		// The first event proves the handler holds its slot.
		if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	resp, cancel := open()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("stream %d: %s, want 503", web.MaxStreams+1, resp.Status)
	}
	resp.Body.Close()
	cancel()
	cancels[0]()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, cancel := open()
		ok := resp.StatusCode == http.StatusOK
		cancels = append(cancels, cancel)
		if ok {
			break
		}
		resp.Body.Close()
		if time.Now().After(deadline) {
			t.Fatal("a closed stream did not free its slot")
		}
	}
}

func init() { testutil.Helpers["http-get"] = helperHTTPGet }

// helperHTTPGet GETs each URL of args and prints, a line each, the
// status code and the body quoted ("error ..." if the request failed).
func helperHTTPGet(urls []string) int {
	for _, u := range urls {
		resp, err := http.Get(u)
		if err != nil {
			fmt.Println("error", err)
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			fmt.Println("error", err)
			continue
		}
		fmt.Println(resp.StatusCode, strconv.Quote(string(body)))
	}
	return 0
}

// TestAPIToAnotherUser drives the pages as the hostile local user they
// are open to: an unprivileged process (uid 65534) holds a block under a
// command line made to attack a page or a terminal, and another
// unprivileged process reads the JSON API. It sees every user's blocks,
// the hostile text exact but escaped, and no token: not the root
// client's, not the admin's persistent one (which only admins may
// consume), not the hostile user's own.
func TestAPIToAnotherUser(t *testing.T) {
	b := testbroker.Start(t, func(c *broker.Config) { c.HTTP = "127.0.0.1:0" })
	ctx := context.Background()
	admin := b.Dial(t)
	pr, err := admin.CreatePersistent(ctx, portres.UDP, 5060, 10)
	if err != nil {
		t.Fatal(err)
	}
	mine, err := admin.Acquire(ctx, portres.TCP, 0, 16)
	if err != nil {
		t.Fatal(err)
	}
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	sockEnv := []string{"PORTRES_SOCKET=" + b.Config.Socket}
	hostileCmd := `<img src=x onerror=alert(1)> ` + "\x1b]0;owned\x07"
	hostile := &owner{testutil.StartHelperAs(t, nobody, "as", sockEnv, hostileCmd)}
	hStart := hostile.take(t, "tcp 0 4 bind")

	base := "http://" + b.MetricsAddr()
	paths := []string{"/api/v1/reservations", "/api/v1/status", "/api/v1/map"}
	var urls []string
	for _, p := range paths {
		urls = append(urls, base+p)
	}
	reader := testutil.StartHelperAs(t, nobody, "http-get", nil, urls...)
	bodies := map[string]string{}
	for _, p := range paths {
		l := reader.Line(10 * time.Second)
		code, quoted, _ := strings.Cut(l, " ")
		body, err := strconv.Unquote(quoted)
		if code != "200" || err != nil {
			t.Fatalf("GET %s as uid 65534: %s", p, l)
		}
		bodies[p] = body
	}
	reader.Wait()

	for p, body := range bodies {
		if strings.Contains(body, `"token"`) {
			t.Errorf("%s shows uid 65534 a token: %s", p, body)
		}
		for _, tok := range []uint64{pr.Token(), mine.Token()} {
			if strings.Contains(body, fmt.Sprintf("%x", tok)) {
				t.Errorf("%s shows uid 65534 the token %#x: %s", p, tok, body)
			}
		}
		if strings.Contains(body, "<img") || strings.Contains(body, "\x1b") || strings.Contains(body, "\x07") {
			t.Errorf("%s has another user's text unescaped: %q", p, body)
		}
	}
	var got []portres.ShowEntry
	if err := json.Unmarshal([]byte(bodies["/api/v1/reservations"]), &got); err != nil {
		t.Fatal(err)
	}
	var sawHostile, sawPersistent, sawRoot bool
	for _, e := range got {
		switch {
		case e.UID == 65534 && e.Start == hStart:
			sawHostile = true
			if !strings.Contains(e.Command, hostileCmd) {
				t.Errorf("the hostile block's command %q is not the owner's exact text %q", e.Command, hostileCmd)
			}
		case e.Kind == "persistent" && e.Start == 5060:
			sawPersistent = true
		case e.UID == 0 && e.Start == mine.Start():
			sawRoot = true
		}
	}
	if !sawHostile || !sawPersistent || !sawRoot {
		t.Errorf("uid 65534 does not see every block (its own %v, the persistent one %v, root's %v): %+v", sawHostile, sawPersistent, sawRoot, got)
	}
}
