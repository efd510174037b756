package winsock

import (
	"errors"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// TestErrnoMapping: every Linux errno the socket calls can return maps to
// the Winsock number Windows uses, and that number matches the errno back
// through errors.Is.
func TestErrnoMapping(t *testing.T) {
	for errno, code := range fromErrno {
		got, ok := osErrno(&syscallWrap{errno})
		if !ok || got != code {
			t.Errorf("%v: mapped to %v (%v), want %v", errno, got, ok, code)
		}
		if code.Syscall() == 0 {
			t.Errorf("%v (for %v) has no Go equivalent", code.Name(), errno)
		}
	}
	if _, ok := osErrno(errors.New("not an errno")); ok {
		t.Error("a plain error mapped to a Winsock code")
	}
}

type syscallWrap struct{ e syscall.Errno }

func (w *syscallWrap) Error() string { return "wrapped " + w.e.Error() }
func (w *syscallWrap) Unwrap() error { return w.e }

// TestCodesFromRealCalls provokes, with real calls, the codes that come
// straight from the kernel or the event object.
func TestCodesFromRealCalls(t *testing.T) {
	// WSAESOCKTNOSUPPORT / WSAEPROTONOSUPPORT from socket().
	if _, err := NewSocket(AF_INET, 4 /* SOCK_RDM */, 0); ErrorCode(err) != WSAESOCKTNOSUPPORT {
		t.Errorf("SOCK_RDM: %v, want WSAESOCKTNOSUPPORT", err)
	}
	if _, err := NewSocket(AF_INET, SOCK_STREAM, IPPROTO_UDP); ErrorCode(err) != WSAEPROTONOSUPPORT {
		t.Errorf("stream socket with UDP: %v, want WSAEPROTONOSUPPORT", err)
	}
	// WSAEADDRNOTAVAIL from bind() to an address this host does not have.
	s := socket(t, AF_INET, SOCK_DGRAM, IPPROTO_UDP)
	if err := s.Bind(netip.MustParseAddrPort("192.0.2.1:0")); ErrorCode(err) != WSAEADDRNOTAVAIL {
		t.Errorf("bind to a foreign address: %v, want WSAEADDRNOTAVAIL", err)
	}
	// WSA_INVALID_HANDLE from a closed or missing event.
	ev, err := WSACreateEvent()
	if err != nil {
		t.Fatal(err)
	}
	ev.Close()
	if _, err := ev.Wait(time.Millisecond); ErrorCode(err) != WSA_INVALID_HANDLE {
		t.Errorf("wait on a closed event: %v, want WSA_INVALID_HANDLE", err)
	}
	var none *Event
	if err := none.Set(); ErrorCode(err) != WSA_INVALID_HANDLE {
		t.Errorf("set on a nil event: %v, want WSA_INVALID_HANDLE", err)
	}
}
