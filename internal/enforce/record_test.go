//go:build linux

package enforce

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestApplyRecordedClaimsBeforeWriting: record sees what portres may own
// after the write (never a foreign entry) before the file changes, and
// an error from record leaves the file untouched.
func TestApplyRecordedClaimsBeforeWriting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "reserved")
	if err := os.WriteFile(path, []byte("2000-2010\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := NewReservedPorts(path, []Range{{Lo: 100, Hi: 100}})
	var claim []Range
	err := r.ApplyRecorded([]Range{{Lo: 2005, Hi: 2015}}, func(c []Range) error {
		data, _ := os.ReadFile(path)
		if string(data) != "2000-2010\n" {
			t.Errorf("file changed before record: %q", data)
		}
		claim = c
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []Range{{Lo: 100, Hi: 100}, {Lo: 2011, Hi: 2015}}; FormatRanges(claim) != FormatRanges(want) {
		t.Errorf("claim = %s, want %s (old claim plus new ports, no foreign ones)", FormatRanges(claim), FormatRanges(want))
	}
	if got := FormatRanges(r.Added()); got != "2011-2015" {
		t.Errorf("Added after the write = %s, want 2011-2015", got)
	}
	boom := errors.New("disk full")
	err = r.ApplyRecorded(nil, func([]Range) error { return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("record error not returned: %v", err)
	}
	if data, _ := os.ReadFile(path); string(data) != "2000-2015\n" {
		t.Errorf("file written although record failed: %q", data)
	}
}
