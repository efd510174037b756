//go:build linux

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
// many it has queued. A uid may also be capped below max (enter's
// limit), so that slow requests of one uid (a large acquire binds
// thousands of placeholders) never take every slot.
type fairQueue struct {
	mu      sync.Mutex
	max     int
	busy    int
	inUse   map[uint32]int      // slots held per uid
	ring    []uint32            // uids with waiters, in turn order
	waiting map[uint32][]waiter // per uid, in arrival order
}

// waiter is one request waiting for a slot.
type waiter struct {
	ch    chan struct{} // closed when the slot is handed over
	limit int           // the most slots its uid may hold
}

func newFairQueue(max int) *fairQueue {
	return &fairQueue{max: max, inUse: map[uint32]int{}, waiting: map[uint32][]waiter{}}
}

// enter waits for a slot for uid, which may hold at most limit slots at
// once; it returns false if ctx ends first.
func (q *fairQueue) enter(ctx context.Context, uid uint32, limit int) bool {
	q.mu.Lock()
	if q.busy < q.max && len(q.ring) == 0 && q.inUse[uid] < limit {
		q.busy++
		q.inUse[uid]++
		q.mu.Unlock()
		return true
	}
	w := waiter{ch: make(chan struct{}), limit: limit}
	if len(q.waiting[uid]) == 0 {
		q.ring = append(q.ring, uid)
	}
	q.waiting[uid] = append(q.waiting[uid], w)
	for q.busy < q.max && q.handOffLocked() { // free slots go to eligible waiters, in turn
	}
	q.mu.Unlock()
	select {
	case <-w.ch:
		return true
	case <-ctx.Done():
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	select {
	case <-w.ch: // handed the slot while giving up: pass it on
		q.releaseLocked(uid)
		return false
	default:
	}
	ws := q.waiting[uid]
	for i := range ws {
		if ws[i].ch == w.ch {
			q.waiting[uid] = append(ws[:i:i], ws[i+1:]...)
			break
		}
	}
	if len(q.waiting[uid]) == 0 {
		q.dropLocked(uid)
	}
	return false
}

// tryEnter takes a slot for uid at once if one is free and nobody waits
// for one; it never waits.
func (q *fairQueue) tryEnter(uid uint32, limit int) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.busy < q.max && len(q.ring) == 0 && q.inUse[uid] < limit {
		q.busy++
		q.inUse[uid]++
		return true
	}
	return false
}

// leave ends a request of uid's service and hands its slot on.
func (q *fairQueue) leave(uid uint32) {
	q.mu.Lock()
	q.releaseLocked(uid)
	q.mu.Unlock()
}

// releaseLocked frees one of uid's slots and fills free slots with the
// next eligible waiters, in turn order.
func (q *fairQueue) releaseLocked(uid uint32) {
	q.busy--
	if q.inUse[uid]--; q.inUse[uid] <= 0 {
		delete(q.inUse, uid)
	}
	for q.busy < q.max && q.handOffLocked() {
	}
}

// handOffLocked gives a slot to the first uid in turn order that may take
// one more, and moves that uid to the end of the ring if it still waits;
// false if no waiter may.
func (q *fairQueue) handOffLocked() bool {
	for i, uid := range q.ring {
		ws := q.waiting[uid]
		if q.inUse[uid] >= ws[0].limit {
			continue
		}
		w := ws[0]
		q.ring = append(q.ring[:i:i], q.ring[i+1:]...)
		if len(ws) == 1 {
			delete(q.waiting, uid)
		} else {
			q.waiting[uid] = ws[1:]
			q.ring = append(q.ring, uid) // its next request waits for the next round
		}
		q.busy++
		q.inUse[uid]++
		close(w.ch)
		return true
	}
	return false
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
