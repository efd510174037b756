package winsock

import (
	"sync"
	"time"
)

// sysOverlapped is the state of an Overlapped on Linux (Internal and
// InternalHigh of WSAOVERLAPPED).
type sysOverlapped struct {
	mu      sync.Mutex
	sock    *Socket
	started bool
	pending bool
	done    chan struct{} // closed when the operation completes
	bytes   uint32
	err     error
}

// start claims ov for an operation on s; WSAEINVAL if it is in use.
func (ov *Overlapped) start(name string, s *Socket, useEvent bool) error {
	ov.sys.mu.Lock()
	defer ov.sys.mu.Unlock()
	if ov.sys.pending {
		return newError(name, WSAEINVAL, "the Overlapped is in use by a pending operation")
	}
	ov.sys.sock, ov.sys.started, ov.sys.pending = s, true, true
	ov.sys.done = make(chan struct{})
	ov.sys.bytes, ov.sys.err = 0, nil
	if useEvent && ov.Event != nil {
		ov.Event.Reset()
	}
	return nil
}

// complete records the result and tells the program: through the
// completion routine if there is one, else by setting the event.
func (ov *Overlapped) complete(n uint32, err error, completion CompletionRoutine) {
	ov.sys.mu.Lock()
	ov.sys.bytes, ov.sys.err, ov.sys.pending = n, err, false
	close(ov.sys.done)
	ev := ov.Event
	ov.sys.mu.Unlock()
	if completion != nil {
		completion(err, n, ov, 0)
		return
	}
	if ev != nil {
		ev.Set()
	}
}

func getOverlappedResult(s *Socket, ov *Overlapped, wait bool) (uint32, uint32, error) {
	const name = "WSAGetOverlappedResult"
	ov.sys.mu.Lock()
	switch {
	case !ov.sys.started:
		ov.sys.mu.Unlock()
		return 0, 0, newError(name, WSAEINVAL, "no operation was started with this Overlapped")
	case ov.sys.sock != s:
		ov.sys.mu.Unlock()
		return 0, 0, newError(name, WSAEINVAL, "the Overlapped's operation is on another socket")
	}
	done, pending := ov.sys.done, ov.sys.pending
	ov.sys.mu.Unlock()
	if pending {
		if !wait {
			return 0, 0, WSA_IO_INCOMPLETE
		}
		<-done
	}
	ov.sys.mu.Lock()
	defer ov.sys.mu.Unlock()
	return ov.sys.bytes, 0, ov.sys.err
}

func (s *Socket) cancelIo() error { return s.cancelOps("CancelIo", nil) }

// sysEvent is a manual-reset event: ch is closed while it is signalled.
type sysEvent struct {
	mu     sync.Mutex
	ch     chan struct{}
	set    bool
	closed bool
}

func newEvent() (*Event, error) {
	return &Event{sys: sysEvent{ch: make(chan struct{})}}, nil
}

// lock locks e, failing with WSA_INVALID_HANDLE if it is nil or closed.
func (e *Event) lock(name string) error {
	if e == nil {
		return newError(name, WSA_INVALID_HANDLE, "nil Event")
	}
	e.sys.mu.Lock()
	if e.sys.closed {
		e.sys.mu.Unlock()
		return newError(name, WSA_INVALID_HANDLE, "the event is closed")
	}
	if e.sys.ch == nil {
		e.sys.ch = make(chan struct{})
	}
	return nil
}

func (e *Event) set() error {
	if err := e.lock("WSASetEvent"); err != nil {
		return err
	}
	defer e.sys.mu.Unlock()
	if !e.sys.set {
		close(e.sys.ch)
		e.sys.set = true
	}
	return nil
}

func (e *Event) reset() error {
	if err := e.lock("WSAResetEvent"); err != nil {
		return err
	}
	defer e.sys.mu.Unlock()
	if e.sys.set {
		e.sys.ch = make(chan struct{})
		e.sys.set = false
	}
	return nil
}

func (e *Event) wait(timeout time.Duration) (bool, error) {
	if err := e.lock("WSAWaitForMultipleEvents"); err != nil {
		return false, err
	}
	ch := e.sys.ch
	e.sys.mu.Unlock()
	select {
	case <-ch:
		return true, nil
	default:
	}
	if timeout < 0 {
		<-ch
		return true, nil
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
		return true, nil
	case <-t.C:
		return false, nil
	}
}

func (e *Event) close() error {
	if err := e.lock("WSACloseEvent"); err != nil {
		return err
	}
	e.sys.closed = true
	e.sys.mu.Unlock()
	return nil
}
