//go:build linux

package portres

import (
	"sync"

	"golang.org/x/sys/unix"
)

// hangups tells clients, as soon as the kernel knows, that the broker
// closed their connection (it exited, crashed or restarted), so that a
// client that holds reservations and makes no call reconnects and
// reclaims them within the broker's grace period. One epoll instance and
// one goroutine (blocked in epoll_wait on its own thread) serve every
// client of the process. Connections are watched for EPOLLRDHUP only,
// one-shot: answers arriving on them wake nothing.
var hangups struct {
	once sync.Once
	epfd int
	err  error

	mu   sync.Mutex
	next uint64
	fns  map[uint64]func()
}

// watchHangup calls fn, once and from another goroutine, when the peer
// of the connected socket fd hangs up. stop ends the watch; it must be
// called before fd is closed.
func watchHangup(fd int, fn func()) (stop func()) {
	hangups.once.Do(func() {
		hangups.epfd, hangups.err = unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if hangups.err == nil {
			hangups.fns = map[uint64]func(){}
			go hangupLoop(hangups.epfd)
		}
	})
	if hangups.err != nil {
		return func() {} // calls still find out, on their next request
	}
	hangups.mu.Lock()
	hangups.next++
	id := hangups.next
	hangups.fns[id] = fn
	hangups.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(id), Pad: int32(id >> 32)}
	if err := unix.EpollCtl(hangups.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		forgetHangup(id)
		return func() {}
	}
	return func() {
		if forgetHangup(id) {
			unix.EpollCtl(hangups.epfd, unix.EPOLL_CTL_DEL, fd, nil)
		}
	}
}

// forgetHangup drops watch id; it reports whether it was still there.
func forgetHangup(id uint64) bool {
	hangups.mu.Lock()
	defer hangups.mu.Unlock()
	_, ok := hangups.fns[id]
	delete(hangups.fns, id)
	return ok
}

func hangupLoop(epfd int) {
	events := make([]unix.EpollEvent, 16)
	for {
		n, err := unix.EpollWait(epfd, events, -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return
		}
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			hangups.mu.Lock()
			fn := hangups.fns[id]
			hangups.mu.Unlock()
			if fn != nil {
				go fn()
			}
		}
	}
}
