package winsock

import (
	"time"

	"golang.org/x/sys/windows"
)

// sysOverlapped is the WSAOVERLAPPED the system fills in, plus the Go
// side of the operation, as on Linux: its result once it completed.
//
// Each operation gets an event of its own in hEvent, which only the
// operation's waiter (a goroutine) waits on and which the waiter closes
// once the operation is done: no handle is left behind, and no other
// code can wait on it after it is closed. The program's Overlapped.Event,
// if any, is set by the waiter when the result is recorded.
type sysOverlapped struct {
	ovRecord // overlapped.go
	wov      windows.Overlapped
	in, out  []byte // the buffers the system may still use
}

// wsaIoctl calls Winsock's WSAIoctl. An overlapped call gets a waiter
// goroutine (see sysOverlapped) that records the result and delivers it
// to the event or the completion routine.
func (s *Socket) wsaIoctl(code uint32, in, out []byte, ov *Overlapped, completion CompletionRoutine) (uint32, error) {
	name := ioctlName(code)
	h, err := s.handle(name)
	if err != nil {
		return 0, err
	}
	if ov == nil && completion != nil {
		return 0, newError(name, WSAEFAULT, "a completion routine needs an Overlapped")
	}
	var n uint32
	if ov == nil {
		if err := windows.WSAIoctl(h, code, bufPtr(in), uint32(len(in)), bufPtr(out), uint32(len(out)), &n, nil, 0); err != nil {
			return 0, sysError(name, "WSAIoctl", err)
		}
		return n, nil
	}
	ev, err := ov.start(name, s, in, out, completion == nil)
	if err != nil {
		return 0, err
	}
	err = windows.WSAIoctl(h, code, bufPtr(in), uint32(len(in)), bufPtr(out), uint32(len(out)), &n, &ov.sys.wov, 0)
	if err != nil && err != windows.ERROR_IO_PENDING {
		// Not started: no completion will be signalled.
		werr := sysError(name, "WSAIoctl", err)
		ov.fail(ev, werr)
		return 0, werr
	}
	// Started, or done at once: the system signals ev either way, and
	// the completion routine is called either way, as Windows queues it.
	go ov.wait(name, s, ev, completion)
	if err != nil {
		return 0, WSA_IO_PENDING
	}
	return n, nil
}

func bufPtr(b []byte) *byte {
	if len(b) == 0 {
		return nil
	}
	return &b[0]
}

// start prepares ov's WSAOVERLAPPED for a new operation on s, with an
// event of its own, which it returns.
func (ov *Overlapped) start(name string, s *Socket, in, out []byte, useEvent bool) (windows.Handle, error) {
	ov.sys.mu.Lock()
	defer ov.sys.mu.Unlock()
	if err := ov.sys.inUse(name); err != nil {
		return 0, err
	}
	ev, err := windows.CreateEvent(nil, 1, 0, nil)
	if err != nil {
		return 0, sysError(name, "CreateEvent", err)
	}
	ov.begin(s, useEvent)
	ov.sys.wov = windows.Overlapped{HEvent: ev}
	ov.sys.in, ov.sys.out = in, out
	return ev, nil
}

// wait waits for the operation to complete, records its result, closes
// its event and tells the program.
func (ov *Overlapped) wait(name string, s *Socket, ev windows.Handle, completion CompletionRoutine) {
	windows.WaitForSingleObject(ev, windows.INFINITE)
	n, flags, err := s.overlappedResult(name, &ov.sys.wov)
	windows.CloseHandle(ev) // the system is done with it, and nobody else waits on it
	ov.complete(n, flags, err, completion)
}

// overlappedResult fetches the result of the completed operation wov.
// While the socket is open the system says (WSAGetOverlappedResult,
// which does not block now), under s.sys.mu so that closesocket cannot
// run meanwhile. Once it is closed its handle may already name another
// object, so the status the system wrote in the OVERLAPPED decides: the
// operation succeeded, or the close aborted it (WSA_OPERATION_ABORTED,
// what Linux reports too).
func (s *Socket) overlappedResult(name string, wov *windows.Overlapped) (uint32, uint32, error) {
	s.sys.mu.Lock()
	defer s.sys.mu.Unlock()
	if !s.sys.closed {
		var n, flags uint32
		if err := windows.WSAGetOverlappedResult(s.sys.h, wov, &n, false, &flags); err != nil {
			return 0, 0, sysError(name, "WSAGetOverlappedResult", err)
		}
		return n, flags, nil
	}
	if wov.Internal == 0 { // STATUS_SUCCESS
		return uint32(wov.InternalHigh), 0, nil
	}
	return 0, 0, &Error{Op: name, Code: WSA_OPERATION_ABORTED, Msg: "the socket was closed"}
}

// finish records the result of the operation, with mu held, and lets
// go of what the system no longer uses: the event (closed) and the
// buffers.
func (o *sysOverlapped) finish(n, flags uint32, err error) {
	o.ovRecord.finish(n, flags, err)
	o.wov.HEvent = 0
	o.in, o.out = nil, nil
}

// fail records an operation that did not start: its event is closed and
// nothing is signalled, as Windows signals nothing then.
func (ov *Overlapped) fail(ev windows.Handle, err error) {
	windows.CloseHandle(ev)
	ov.sys.mu.Lock()
	ov.sys.finish(0, 0, err)
	ov.sys.mu.Unlock()
}

func (s *Socket) cancelIo() error {
	h, err := s.handle("CancelIo")
	if err != nil {
		return err
	}
	if err := windows.CancelIoEx(h, nil); err != nil && err != windows.ERROR_NOT_FOUND {
		return sysError("CancelIo", "CancelIoEx", err)
	}
	return nil
}

// sysEvent is a Windows manual-reset event.
type sysEvent struct {
	h windows.Handle
}

func newEvent() (*Event, error) {
	h, err := windows.CreateEvent(nil, 1, 0, nil)
	if err != nil {
		return nil, sysError("WSACreateEvent", "CreateEvent", err)
	}
	return &Event{sys: sysEvent{h: h}}, nil
}

func (e *Event) handle(name string) (windows.Handle, error) {
	if e == nil || e.sys.h == 0 {
		return 0, newError(name, WSA_INVALID_HANDLE, "nil or closed Event")
	}
	return e.sys.h, nil
}

func (e *Event) set() error {
	h, err := e.handle("WSASetEvent")
	if err == nil {
		if err = windows.SetEvent(h); err != nil {
			err = sysError("WSASetEvent", "SetEvent", err)
		}
	}
	return err
}

func (e *Event) reset() error {
	h, err := e.handle("WSAResetEvent")
	if err == nil {
		if err = windows.ResetEvent(h); err != nil {
			err = sysError("WSAResetEvent", "ResetEvent", err)
		}
	}
	return err
}

func (e *Event) wait(timeout time.Duration) (bool, error) {
	h, err := e.handle("WSAWaitForMultipleEvents")
	if err != nil {
		return false, err
	}
	ms := uint32(windows.INFINITE)
	if timeout >= 0 {
		ms = uint32(min(timeout.Milliseconds(), int64(windows.INFINITE-1)))
	}
	ev, err := windows.WaitForSingleObject(h, ms)
	switch {
	case err != nil:
		return false, sysError("WSAWaitForMultipleEvents", "WaitForSingleObject", err)
	case ev == windows.WAIT_OBJECT_0:
		return true, nil
	}
	return false, nil
}

func (e *Event) close() error {
	h, err := e.handle("WSACloseEvent")
	if err != nil {
		return err
	}
	e.sys.h = 0
	if err := windows.CloseHandle(h); err != nil {
		return sysError("WSACloseEvent", "CloseHandle", err)
	}
	return nil
}
