package broker

import (
	"context"
	"sync"
)

// fairQueue admits requests into service: at most max at once, and when
// requests wait, the next slot goes to the uid that has waited longest
// for its turn (round robin over uids, arrival order within a uid). A uid
// flooding requests over many connections therefore gets one turn in
// each round, as does every other uid with a request waiting, however
// many it has queued.
type fairQueue struct {
	mu      sync.Mutex
	max     int
	busy    int
	ring    []uint32                   // uids with waiters, in turn order
	waiting map[uint32][]chan struct{} // per uid, in arrival order
}

func newFairQueue(max int) *fairQueue {
	return &fairQueue{max: max, waiting: map[uint32][]chan struct{}{}}
}

// enter waits for uid's turn; it returns false if ctx ends first.
func (q *fairQueue) enter(ctx context.Context, uid uint32) bool {
	q.mu.Lock()
	if q.busy < q.max && len(q.ring) == 0 {
		q.busy++
		q.mu.Unlock()
		return true
	}
	ch := make(chan struct{})
	if len(q.waiting[uid]) == 0 {
		q.ring = append(q.ring, uid)
	}
	q.waiting[uid] = append(q.waiting[uid], ch)
	q.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-ctx.Done():
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	select {
	case <-ch: // handed the slot while giving up: pass it on
		q.handOffLocked()
		return false
	default:
	}
	w := q.waiting[uid]
	for i, c := range w {
		if c == ch {
			q.waiting[uid] = append(w[:i:i], w[i+1:]...)
			break
		}
	}
	if len(q.waiting[uid]) == 0 {
		q.dropLocked(uid)
	}
	return false
}

// leave ends a request's service and hands its slot on.
func (q *fairQueue) leave() {
	q.mu.Lock()
	q.handOffLocked()
	q.mu.Unlock()
}

// handOffLocked gives a free slot to the next uid in turn, or frees it.
func (q *fairQueue) handOffLocked() {
	if len(q.ring) == 0 {
		q.busy--
		return
	}
	uid := q.ring[0]
	w := q.waiting[uid]
	ch := w[0]
	q.ring = q.ring[1:]
	if len(w) == 1 {
		delete(q.waiting, uid)
	} else {
		q.waiting[uid] = w[1:]
		q.ring = append(q.ring, uid) // its next request waits for the next round
	}
	close(ch)
}

// dropLocked removes uid from the ring.
func (q *fairQueue) dropLocked(uid uint32) {
	delete(q.waiting, uid)
	for i, u := range q.ring {
		if u == uid {
			q.ring = append(q.ring[:i:i], q.ring[i+1:]...)
			return
		}
	}
}
