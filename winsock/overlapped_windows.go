package winsock

import (
	"sync"
	"time"

	"golang.org/x/sys/windows"
)

// statusPending is the Internal field of an OVERLAPPED whose operation
// is still in progress (STATUS_PENDING).
const statusPending = 0x103

// sysOverlapped is the WSAOVERLAPPED the system fills in, plus what must
// stay alive while it does.
type sysOverlapped struct {
	mu       sync.Mutex
	wov      windows.Overlapped
	sock     *Socket
	started  bool
	ownEvent windows.Handle // hEvent when Event is nil or a completion routine is used
	in, out  []byte         // the buffers the system may still use
}

// wsaIoctl calls Winsock's WSAIoctl; completion routines are emulated by
// a goroutine that waits for the result.
func (s *Socket) wsaIoctl(code uint32, in, out []byte, ov *Overlapped, completion CompletionRoutine) (uint32, error) {
	name := ioctlName(code)
	h, err := s.handle(name)
	if err != nil {
		return 0, err
	}
	if ov == nil && completion != nil {
		return 0, newError(name, WSAEFAULT, "a completion routine needs an Overlapped")
	}
	var wov *windows.Overlapped
	if ov != nil {
		if wov, err = ov.start(name, s, in, out, completion == nil); err != nil {
			return 0, err
		}
	}
	var n uint32
	err = windows.WSAIoctl(h, code, bufPtr(in), uint32(len(in)), bufPtr(out), uint32(len(out)), &n, wov, 0)
	if ov != nil && (err == nil || err == windows.ERROR_IO_PENDING) {
		if completion != nil {
			go ov.notify(name, h, completion)
		}
		if err != nil {
			return 0, WSA_IO_PENDING
		}
	}
	if err != nil {
		return 0, sysError(name, "WSAIoctl", err)
	}
	return n, nil
}

func bufPtr(b []byte) *byte {
	if len(b) == 0 {
		return nil
	}
	return &b[0]
}

// start prepares ov's WSAOVERLAPPED for a new operation.
func (ov *Overlapped) start(name string, s *Socket, in, out []byte, useEvent bool) (*windows.Overlapped, error) {
	ov.sys.mu.Lock()
	defer ov.sys.mu.Unlock()
	if ov.sys.started && ov.sys.wov.Internal == statusPending {
		return nil, newError(name, WSAEINVAL, "the Overlapped is in use by a pending operation")
	}
	ev := ov.sys.ownEvent
	if useEvent && ov.Event != nil {
		ev = ov.Event.sys.h
	} else if ev == 0 {
		h, err := windows.CreateEvent(nil, 1, 0, nil)
		if err != nil {
			return nil, sysError(name, "CreateEvent", err)
		}
		ov.sys.ownEvent, ev = h, h
	}
	ov.sys.wov = windows.Overlapped{HEvent: ev}
	ov.sys.sock, ov.sys.started, ov.sys.in, ov.sys.out = s, true, in, out
	return &ov.sys.wov, nil
}

// notify waits for the operation and calls the completion routine.
func (ov *Overlapped) notify(name string, h windows.Handle, completion CompletionRoutine) {
	var n, flags uint32
	var err error
	if e := windows.WSAGetOverlappedResult(h, &ov.sys.wov, &n, true, &flags); e != nil {
		err = sysError(name, "WSAGetOverlappedResult", e)
	}
	completion(err, n, ov, flags)
}

func getOverlappedResult(s *Socket, ov *Overlapped, wait bool) (uint32, uint32, error) {
	const name = "WSAGetOverlappedResult"
	h, err := s.handle(name)
	if err != nil {
		return 0, 0, err
	}
	ov.sys.mu.Lock()
	started, sock := ov.sys.started, ov.sys.sock
	ov.sys.mu.Unlock()
	if !started || sock != s {
		return 0, 0, newError(name, WSAEINVAL, "no operation was started on this socket with this Overlapped")
	}
	var n, flags uint32
	err = windows.WSAGetOverlappedResult(h, &ov.sys.wov, &n, wait, &flags)
	switch {
	case err == windows.ERROR_IO_INCOMPLETE:
		return 0, 0, WSA_IO_INCOMPLETE
	case err != nil:
		return n, flags, sysError(name, "WSAGetOverlappedResult", err)
	}
	return n, flags, nil
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
