//go:build linux

package sockdiag

import (
	"testing"
	"time"

	"github.com/portres/portres/internal/testutil"
)

// timeWait leaves a TCP TIME_WAIT entry on cport: a client bound there
// connects to a listener on lport and closes first (the active close);
// the accepted side and the listener are closed after it.
func timeWait(t testing.TB, family, lport, cport int) {
	t.Helper()
	ln := testutil.ListenTCP(t, family, lport)
	client, server := testutil.ConnectTCP(t, family, ln, lport, cport)
	testutil.CloseFD(client)
	testutil.CloseFD(server)
	testutil.CloseFD(ln)
	deadline := time.Now().Add(3 * time.Second)
	for {
		tw, err := OnlyTimeWait(uint16(cport))
		if err != nil {
			t.Fatal(err)
		}
		if tw {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no TIME_WAIT entry on port %d", cport)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
