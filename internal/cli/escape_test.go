//go:build linux

package cli

import (
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/portres/portres"
	"github.com/portres/portres/internal/wire"
	"github.com/spf13/cobra"
)

func TestTermSafe(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"/usr/bin/python3 -m http.server 8000", "/usr/bin/python3 -m http.server 8000"},
		{"café naïve 東京 Ελλάδα", "café naïve 東京 Ελλάδα"},
		{"nbsp\u00a0and ideographic\u3000space", "nbsp\u00a0and ideographic\u3000space"},
		{"emoji 🙂 combining e\u0301", "emoji 🙂 combining e\u0301"},
		{"clear\x1b[2J", `clear\x1b[2J`},
		{"title\x1b]0;pwned\x07", `title\x1b]0;pwned\x07`},
		{"sleep\n tcp 1 2 persistent", `sleep\n tcp 1 2 persistent`},
		{"a\tb\rc\x00d\x7fe", `a\tb\rc\x00d\x7fe`},
		{"bidi \u202egnp.exe", `bidi \u202egnp.exe`},
		{"isolates \u2066x\u2069 marks \u200e\u200f zero-width\u200b\u200d bom\ufeff", `isolates \u2066x\u2069 marks \u200e\u200f zero-width\u200b\u200d bom\ufeff`},
		{"line\u2028para\u2029", `line\u2028para\u2029`},
		{"c1 \u009b31m \u0085", `c1 \u009b31m \u0085`},
		{"raw c1 \x9b31m", `raw c1 \x9b31m`},
		{"invalid \xff\xfe utf-8 \xe2\x82", `invalid \xff\xfe utf-8 \xe2\x82`},
		{"tag \U000e0041 private \ue000", `tag \U000e0041 private \ue000`},
		{`C:\path, escaped already: \x1b\u202e`, `C:\path, escaped already: \x1b\u202e`},
	} {
		got := termSafe(tc.in)
		if got != tc.want {
			t.Errorf("termSafe(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if again := termSafe(got); again != got {
			t.Errorf("termSafe(%q) = %q, not idempotent: %q", tc.in, got, again)
		}
		for _, r := range got {
			if r == utf8.RuneError || !unicode.IsGraphic(r) {
				t.Errorf("termSafe(%q) = %q holds %U", tc.in, got, r)
			}
		}
	}
}

// TestJSONTermSafe: printJSON's output decodes to exactly the strings
// given, holds no raw control or format character, and turns invalid
// UTF-8 into U+FFFD (as encoding/json does).
func TestJSONTermSafe(t *testing.T) {
	for _, s := range []string{
		"plain café",
		"esc\x1b[2J nl\n tcp 1 2 persistent\ttab del\x7f",
		"c1 \u009b31m bidi \u202egnp.exe \u2066x\u2069 ls\u2028 tag \U000e0041 <&>",
	} {
		var out strings.Builder
		e := &env{stdout: &out}
		if err := e.printJSON(infoJSON{Command: s}); err != nil {
			t.Fatal(err)
		}
		js := out.String()
		for _, r := range strings.TrimSuffix(js, "\n") {
			if r != '\n' && (r == 0x7f || !unicode.IsGraphic(r)) {
				t.Errorf("JSON of %q holds %U: %s", s, r, js)
			}
		}
		var got infoJSON
		if err := json.Unmarshal([]byte(js), &got); err != nil || got.Command != s {
			t.Errorf("JSON of %q decodes to %q, %v: %s", s, got.Command, err, js)
		}
	}
	var out strings.Builder
	if err := (&env{stdout: &out}).printJSON(infoJSON{Command: "bad \xff\xe2\x82 end"}); err != nil {
		t.Fatal(err)
	}
	var got infoJSON
	if err := json.Unmarshal([]byte(out.String()), &got); err != nil || got.Command != "bad \ufffd\ufffd\ufffd end" {
		t.Errorf("invalid UTF-8 decodes to %q, %v, want each invalid byte as U+FFFD", got.Command, err)
	}
}

// TestErrorEscaped: a broker message holding another process's raw
// command line reaches stderr escaped, on one line. A fake broker answers
// every request with such an error, as a broker that does not escape
// would.
func TestErrorEscaped(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "fake.sock")
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const msg = "tcp 40000 overlaps tcp reservation 40000-40009 of pid 42 (evil\x1b[2J\n tcp 1 2 persistent \u202eexe \xff)"
	go func() {
		conn, err := l.AcceptUnix()
		if err != nil {
			return
		}
		defer conn.Close()
		buf := make([]byte, wire.MaxMessage)
		n, err := conn.Read(buf)
		if err != nil {
			return
		}
		if req, err := wire.DecodeRequest(buf[:n]); err == nil {
			conn.Write(wire.AppendResponse(nil, &wire.Response{ID: req.ID, Code: uint32(portres.WSAEADDRINUSE), Msg: msg}))
		}
	}()
	var out, errs strings.Builder
	code := Main([]string{"--socket", sock, "acquire", "--proto", "tcp", "--start", "40000", "--count", "1"}, strings.NewReader(""), &out, &errs)
	want := `tcp 40000 overlaps tcp reservation 40000-40009 of pid 42 (evil\x1b[2J\n tcp 1 2 persistent \u202eexe \xff)` + "\n"
	if code != 1 || !strings.HasPrefix(errs.String(), "portres: acquire") || !strings.HasSuffix(errs.String(), want) {
		t.Errorf("exit %d, stderr %q, want it to end with %q", code, errs.String(), want)
	}
}

// TestLinuxOnlyStub: where portresd does not run (Windows), the Linux
// commands answer with what to use instead, exit 1.
func TestLinuxOnlyStub(t *testing.T) {
	root := &cobra.Command{Use: "portres", SilenceErrors: true, SilenceUsage: true}
	root.AddCommand(linuxOnly("acquire"))
	root.SetArgs([]string{"acquire", "--proto", "tcp", "--count", "1"})
	err := root.Execute()
	if err == nil || !strings.HasPrefix(err.Error(), "portres acquire needs Linux and portresd.") || !strings.Contains(err.Error(), "netsh int ipv4 show excludedportrange") {
		t.Errorf("stub: %v", err)
	}
}
