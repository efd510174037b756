package winsock

import (
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// bigStart and bigCount make an ACQUIRE that stays pending for a while:
// the broker binds a placeholder socket per port, ~10 µs each.
const bigStart, bigCount = 20000, 15000

func TestOverlappedResult(t *testing.T) {
	checkFDs(t)
	b := broker(t)
	s := socket(t, AF_INET, SOCK_STREAM, IPPROTO_TCP)
	ov := &Overlapped{}
	out := make([]byte, 16)
	n, err := s.WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION, rangeBytes(43000, 5), out, ov, nil)
	if err != WSA_IO_PENDING || n != 0 {
		t.Fatalf("overlapped ACQUIRE: %d, %v; want 0, WSA_IO_PENDING", n, err)
	}
	n, flags, err := WSAGetOverlappedResult(s, ov, true)
	if err != nil || n != 16 || flags != 0 {
		t.Fatalf("WSAGetOverlappedResult: %d, %d, %v", n, flags, err)
	}
	var inst INET_PORT_RESERVATION_INSTANCE
	inst.UnmarshalBinary(out)
	if Ntohs(inst.Reservation.StartPort) != 43000 || inst.Reservation.NumberOfPorts != 5 {
		t.Fatalf("got %+v", inst)
	}
	// The Overlapped is free again: RELEASE with it.
	if _, err := s.WSAIoctl(SIO_RELEASE_PORT_RESERVATION, tokenBytes(inst.Token.Token), nil, ov, nil); err != WSA_IO_PENDING {
		t.Fatalf("overlapped RELEASE: %v", err)
	}
	if n, _, err := WSAGetOverlappedResult(s, ov, true); err != nil || n != 0 {
		t.Fatalf("RELEASE result: %d, %v", n, err)
	}
	waitEmpty(t, b)
	other := socket(t, AF_INET, SOCK_STREAM, IPPROTO_TCP)
	_, _, err = WSAGetOverlappedResult(other, ov, false)
	wantCode(t, "result asked of another socket", err, WSAEINVAL)
	_, _, err = WSAGetOverlappedResult(s, &Overlapped{}, false)
	wantCode(t, "result of an unused Overlapped", err, WSAEINVAL)
}

func TestOverlappedEvent(t *testing.T) {
	broker(t)
	s := socket(t, AF_INET6, SOCK_DGRAM, IPPROTO_UDP)
	ev, err := WSACreateEvent()
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	ev.Set() // stale: starting the operation resets it
	ov := &Overlapped{Event: ev}
	out := make([]byte, 16)
	if _, err := s.WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION, rangeBytes(0, 3), out, ov, nil); err != WSA_IO_PENDING {
		t.Fatalf("overlapped ACQUIRE: %v", err)
	}
	if ok, err := ev.Wait(5 * time.Second); !ok || err != nil {
		t.Fatalf("event not signalled: %v", err)
	}
	n, _, err := WSAGetOverlappedResult(s, ov, false)
	if err != nil || n != 16 {
		t.Fatalf("result after the event: %d, %v", n, err)
	}
	if ok, _ := ev.Wait(0); !ok {
		t.Error("manual-reset event no longer signalled")
	}
	ev.Reset()
	if ok, _ := ev.Wait(10 * time.Millisecond); ok {
		t.Error("event signalled after Reset")
	}
}

func TestOverlappedCompletionRoutine(t *testing.T) {
	broker(t)
	s := socket(t, AF_INET, SOCK_DGRAM, IPPROTO_UDP)
	ev, _ := WSACreateEvent()
	ov := &Overlapped{Event: ev} // ignored when a routine is given, as on Windows
	type result struct {
		err   error
		n     uint32
		ov    *Overlapped
		flags uint32
	}
	done := make(chan result, 1)
	out := make([]byte, 16)
	_, err := s.WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION, rangeBytes(43100, 2), out, ov,
		func(err error, n uint32, o *Overlapped, flags uint32) { done <- result{err, n, o, flags} })
	if err != WSA_IO_PENDING {
		t.Fatalf("overlapped ACQUIRE: %v", err)
	}
	select {
	case r := <-done:
		if r.err != nil || r.n != 16 || r.ov != ov || r.flags != 0 {
			t.Fatalf("completion routine got %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("completion routine not called")
	}
	var inst INET_PORT_RESERVATION_INSTANCE
	inst.UnmarshalBinary(out)
	if Ntohs(inst.Reservation.StartPort) != 43100 {
		t.Errorf("got %+v", inst)
	}
	if ok, _ := ev.Wait(0); ok {
		t.Error("hEvent was signalled although a completion routine was given")
	}
}

// startBig starts an ACQUIRE that takes long enough to be cancelled,
// and checks it is pending.
func startBig(t *testing.T, s *Socket, ov *Overlapped, completion CompletionRoutine) {
	t.Helper()
	if _, err := s.WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION, rangeBytes(bigStart, bigCount), make([]byte, 16), ov, completion); err != WSA_IO_PENDING {
		t.Fatalf("overlapped ACQUIRE: %v", err)
	}
	if _, err := s.WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION, rangeBytes(1, 1), make([]byte, 16), ov, nil); ErrorCode(err) != WSAEINVAL {
		t.Errorf("reuse of a pending Overlapped: %v, want WSAEINVAL", err)
	}
	time.Sleep(20 * time.Millisecond)
	if _, _, err := WSAGetOverlappedResult(s, ov, false); err != WSA_IO_INCOMPLETE {
		t.Fatalf("after 20 ms: %v, want WSA_IO_INCOMPLETE (the ACQUIRE finished too soon to test cancelling)", err)
	}
}

// bigPorts are ports of the big block a foreign program must be able to
// bind once the ACQUIRE is aborted.
var bigPorts = []uint16{bigStart, bigStart + 1, bigStart + 100, bigStart + bigCount - 1}

// wantAborted checks the result of an aborted ACQUIRE.
func wantAborted(t *testing.T, n uint32, err error) {
	t.Helper()
	wantCode(t, "cancelled ACQUIRE", err, WSA_OPERATION_ABORTED)
	if n != 0 {
		t.Errorf("bytes = %d", n)
	}
}

func TestCloseAbortsOverlapped(t *testing.T) {
	checkFDs(t)
	b := broker(t)
	s := socket(t, AF_INET, SOCK_STREAM, IPPROTO_TCP)
	ev, _ := WSACreateEvent()
	ov := &Overlapped{Event: ev}
	startBig(t, s, ov, nil)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if ok, _ := ev.Wait(5 * time.Second); !ok {
		t.Fatal("event not signalled after closesocket")
	}
	n, _, err := WSAGetOverlappedResult(s, ov, false)
	wantAborted(t, n, err)
	waitEmpty(t, b, bigPorts...)
}

func TestCancelIoAbortsOverlapped(t *testing.T) {
	checkFDs(t)
	b := broker(t)
	s := socket(t, AF_INET, SOCK_DGRAM, IPPROTO_UDP)
	type result struct {
		n   uint32
		err error
	}
	done := make(chan result, 1)
	ov := &Overlapped{}
	startBig(t, s, ov, func(err error, n uint32, _ *Overlapped, _ uint32) { done <- result{n, err} })
	if err := CancelIo(s); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		wantAborted(t, r.n, r.err)
	case <-time.After(5 * time.Second):
		t.Fatal("completion routine not called after CancelIo")
	}
	waitEmpty(t, b, bigPorts...)
	acquire(t, s, 43200, 2) // the socket itself is still usable
}

func TestFlushAbortsOverlapped(t *testing.T) {
	b := broker(t)
	s := socket(t, AF_INET6, SOCK_STREAM, IPPROTO_TCP)
	ov := &Overlapped{}
	startBig(t, s, ov, nil)
	if n, err := s.WSAIoctl(SIO_FLUSH, nil, nil, nil, nil); err != nil || n != 0 {
		t.Fatalf("SIO_FLUSH: %d, %v", n, err)
	}
	n, _, err := WSAGetOverlappedResult(s, ov, true)
	wantAborted(t, n, err)
	waitEmpty(t, b, bigPorts...)
}

func TestCloseAbortsSynchronousCall(t *testing.T) {
	checkFDs(t)
	b := broker(t)
	s := socket(t, AF_INET, SOCK_STREAM, IPPROTO_TCP)
	errc := make(chan error, 1)
	go func() {
		_, err := s.WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION, rangeBytes(bigStart, bigCount), make([]byte, 16), nil, nil)
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	s.Close()
	err := <-errc
	wantCode(t, "synchronous ACQUIRE across closesocket", err, WSA_OPERATION_ABORTED)
	if !errors.Is(err, errClosed) && !stringsContains(err.Error(), errClosed.Error()) {
		t.Errorf("error %q does not say the socket was closed", err)
	}
	waitEmpty(t, b, bigPorts...)
}

// TestNonOverlappedSocket: on a socket made without WSA_FLAG_OVERLAPPED
// the Overlapped and the completion routine are ignored, as the
// documents say: WSAIoctl runs synchronously and returns its result, the
// routine is never called, the event never set, and the Overlapped has
// no operation (WSAGetOverlappedResult: WSAEINVAL). A completion routine
// without an Overlapped is ignored too, not WSAEFAULT.
func TestNonOverlappedSocket(t *testing.T) {
	checkFDs(t)
	b := broker(t)
	s, err := WSASocket(AF_INET, SOCK_DGRAM, IPPROTO_UDP, WSA_FLAG_NO_HANDLE_INHERIT)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ev, _ := WSACreateEvent()
	defer ev.Close()
	ov := &Overlapped{Event: ev}
	called := make(chan struct{}, 4)
	routine := func(error, uint32, *Overlapped, uint32) { called <- struct{}{} }
	out := make([]byte, 16)
	n, err := s.WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION, rangeBytes(43300, 2), out, ov, routine)
	if err != nil || n != 16 {
		t.Fatalf("ACQUIRE with an Overlapped on a non-overlapped socket: %d, %v; want 16, nil (synchronous)", n, err)
	}
	if infos := show(t, b); len(infos) != 1 || infos[0].Start != 43300 {
		t.Fatalf("the broker lists %+v right after the call returned", infos)
	}
	var inst INET_PORT_RESERVATION_INSTANCE
	inst.UnmarshalBinary(out)
	n, err = s.WSAIoctl(SIO_RELEASE_PORT_RESERVATION, tokenBytes(inst.Token.Token), nil, nil, routine)
	if err != nil || n != 0 {
		t.Fatalf("RELEASE with a routine and no Overlapped on a non-overlapped socket: %d, %v; want 0, nil", n, err)
	}
	waitEmpty(t, b)
	select {
	case <-called:
		t.Error("the completion routine was called for a non-overlapped socket")
	case <-time.After(100 * time.Millisecond):
	}
	if ok, _ := ev.Wait(0); ok {
		t.Error("the Overlapped's event was set for a non-overlapped socket")
	}
	_, _, err = WSAGetOverlappedResult(s, ov, false)
	wantCode(t, "WSAGetOverlappedResult of an ignored Overlapped", err, WSAEINVAL)
	// Errors are returned at once too.
	_, err = s.WSAIoctl(SIO_RELEASE_PORT_RESERVATION, tokenBytes(inst.Token.Token), nil, ov, nil)
	wantCode(t, "second RELEASE, synchronous", err, WSAEINVAL)

	// WSA_FLAG_OVERLAPPED makes an overlapped socket, as NewSocket does.
	o, err := WSASocket(AF_INET, SOCK_DGRAM, IPPROTO_UDP, WSA_FLAG_OVERLAPPED)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if _, err := o.WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION, rangeBytes(43300, 2), out, ov, nil); err != WSA_IO_PENDING {
		t.Fatalf("ACQUIRE on an overlapped socket: %v, want WSA_IO_PENDING", err)
	}
	if n, _, err := WSAGetOverlappedResult(o, ov, true); err != nil || n != 16 {
		t.Fatalf("result: %d, %v", n, err)
	}
	if fl, _ := unix.FcntlInt(s.Fd(), unix.F_GETFD, 0); fl&unix.FD_CLOEXEC == 0 {
		t.Error("a WSASocket socket is not close-on-exec")
	}
	_, err = WSASocket(AF_INET, SOCK_DGRAM, IPPROTO_UDP, WSA_FLAG_OVERLAPPED|0x100)
	wantCode(t, "WSA_FLAG_REGISTERED_IO on Linux", err, WSAEINVAL)
}

// TestResultAfterClose: WSAGetOverlappedResult still answers after
// closesocket, with or without waiting: what the close aborted is
// WSA_OPERATION_ABORTED (the Windows backend answers the same), what
// had completed keeps its result.
func TestResultAfterClose(t *testing.T) {
	b := broker(t)
	s := socket(t, AF_INET, SOCK_STREAM, IPPROTO_TCP)
	done := &Overlapped{}
	if _, err := s.WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION, rangeBytes(43400, 2), make([]byte, 16), done, nil); err != WSA_IO_PENDING {
		t.Fatal(err)
	}
	if _, _, err := WSAGetOverlappedResult(s, done, true); err != nil {
		t.Fatal(err)
	}
	aborted := &Overlapped{}
	startBig(t, s, aborted, nil)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, wait := range []bool{true, false} {
		n, _, err := WSAGetOverlappedResult(s, aborted, wait)
		wantAborted(t, n, err)
		if n, _, err := WSAGetOverlappedResult(s, done, wait); err != nil || n != 16 {
			t.Errorf("completed ACQUIRE after closesocket (wait %t): %d, %v; want 16, nil", wait, n, err)
		}
	}
	waitEmpty(t, b, bigPorts...)
}
