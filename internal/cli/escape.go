package cli

import (
	"bytes"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// termSafe returns s ready for a terminal: everything a terminal could
// act on instead of displaying it becomes a visible escape, so that text
// from other processes (command lines, broker messages quoting them) can
// neither send escape sequences nor forge rows or columns. Escaped are
// newline, carriage return and tab (\n, \r, \t), the other C0 controls and
// DEL (\x1b), each byte of invalid UTF-8 (\xff), and every character that
// is not graphic (\u009b, \u202e, \U000e0001): C1 controls, format
// characters (unicode.Cf: bidi embeddings, overrides and isolates,
// zero-width characters), line and paragraph separators, private-use and
// unassigned code points. Printable text, spaces, backslashes and
// non-ASCII letters included, is returned unchanged, so termSafe leaves
// text escaped already (by the broker, in its messages) as it is.
func termSafe(s string) string {
	i := 0
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && n == 1) || !unicode.IsGraphic(r) {
			break
		}
		i += n
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.WriteString(s[:i])
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case unicode.IsGraphic(r):
			b.WriteString(s[i : i+n])
		case r < utf8.RuneSelf:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
		i += n
	}
	return b.String()
}

// jsonTermSafe rewrites JSON text produced by encoding/json so that it is
// also safe on a terminal, without changing what it decodes to: DEL and
// every non-ASCII character that is not graphic (C1 controls, bidi and
// other format characters...), which encoding/json writes raw, become
// \uXXXX escapes (a surrogate pair above U+FFFF). encoding/json already
// escapes the C0 controls and U+2028/U+2029, and replaces invalid UTF-8
// with U+FFFD, so its output holds no raw control character once this
// has run. Outside strings JSON text is ASCII, so only strings change.
func jsonTermSafe(js []byte) []byte {
	var b bytes.Buffer
	for i := 0; i < len(js); {
		r, n := utf8.DecodeRune(js[i:])
		switch {
		case r == utf8.RuneError && n == 1: // not produced by encoding/json
			b.WriteString(`\ufffd`)
		case r == 0x7f || (r >= utf8.RuneSelf && !unicode.IsGraphic(r)):
			for _, u := range utf16.Encode([]rune{r}) {
				fmt.Fprintf(&b, `\u%04x`, u)
			}
		default:
			b.Write(js[i : i+n])
		}
		i += n
	}
	return b.Bytes()
}
