package winsock

import "sync"

// overlapped reports whether the socket has the overlapped attribute
// (sysSocket.nonOverlap on both platforms).
func (s *Socket) overlapped() bool { return !s.sys.nonOverlap }

// ovRecord is the Go side of an Overlapped on both platforms: the socket
// its last operation was started on and, once that completed, the result
// (Internal and InternalHigh of WSAOVERLAPPED). WSAGetOverlappedResult
// answers from it, so it answers after Close too. Each platform's
// sysOverlapped embeds it.
type ovRecord struct {
	mu      sync.Mutex
	sock    *Socket
	started bool
	pending bool
	done    chan struct{} // closed when the operation completes
	bytes   uint32
	flags   uint32
	err     error
}

// inUse is WSAEINVAL if the previous operation is still pending, with
// mu held.
func (r *ovRecord) inUse(name string) error {
	if r.pending {
		return newError(name, WSAEINVAL, "the Overlapped is in use by a pending operation")
	}
	return nil
}

// begin records a new operation on s, with ov.sys.mu held; the event is
// reset unless a completion routine takes its place (useEvent false).
func (ov *Overlapped) begin(s *Socket, useEvent bool) {
	if useEvent && ov.Event != nil {
		ov.Event.Reset()
	}
	r := &ov.sys.ovRecord
	r.sock, r.started, r.pending = s, true, true
	r.done = make(chan struct{})
	r.bytes, r.flags, r.err = 0, 0, nil
}

// finish records the result of the operation, with mu held.
func (r *ovRecord) finish(n, flags uint32, err error) {
	r.bytes, r.flags, r.err, r.pending = n, flags, err, false
	close(r.done)
}

// complete records the result and tells the program: through the
// completion routine if there is one, else by setting the event.
func (ov *Overlapped) complete(n, flags uint32, err error, completion CompletionRoutine) {
	ov.sys.mu.Lock()
	ov.sys.finish(n, flags, err)
	ev := ov.Event
	ov.sys.mu.Unlock()
	if completion != nil {
		completion(err, n, ov, flags)
		return
	}
	if ev != nil {
		ev.Set()
	}
}

// getOverlappedResult answers from the recorded result: it waits for a
// pending operation if wait is true, else fails with WSA_IO_INCOMPLETE.
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
	return ov.sys.bytes, ov.sys.flags, ov.sys.err
}
