//go:build linux

package broker

import (
	"context"
	"testing"
	"time"
)

// TestFairQueueRoundRobin: waiting requests are admitted one uid at a
// time, in turn, whatever one uid has queued; cancelled waiters give up
// their place.
func TestFairQueueRoundRobin(t *testing.T) {
	q := newFairQueue(1)
	ctx := context.Background()
	if !q.enter(ctx, 1, 1) {
		t.Fatal("first enter refused")
	}
	order := make(chan uint32, 16)
	start := func(uid uint32) {
		go func() {
			if q.enter(ctx, uid, 1) {
				order <- uid
			}
		}()
		for { // wait until it is queued, so arrival order is known
			q.mu.Lock()
			n := 0
			for _, w := range q.waiting {
				n += len(w)
			}
			q.mu.Unlock()
			if n > 0 && queued(q, uid) {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	for i := 0; i < 3; i++ {
		start(7) // a flooding uid queues three
	}
	start(8) // the victim arrives last
	cctx, cancel := context.WithCancel(ctx)
	gone := make(chan bool)
	go func() { gone <- q.enter(cctx, 9, 1) }()
	for !queued(q, 9) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if <-gone {
		t.Error("a cancelled waiter was admitted")
	}
	var got []uint32
	prev := uint32(1)
	for i := 0; i < 4; i++ {
		q.leave(prev)
		prev = <-order
		got = append(got, prev)
	}
	want := []uint32{7, 8, 7, 7}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("admission order %v, want %v", got, want)
		}
	}
	q.leave(prev)
	if q.busy != 0 || len(q.ring) != 0 || len(q.waiting) != 0 {
		t.Errorf("queue not empty at the end: busy %d ring %v waiting %v", q.busy, q.ring, q.waiting)
	}
}

func queued(q *fairQueue, uid uint32) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.waiting[uid]) > 0
}

// TestFairQueueLeavesASlot: a uid capped below the number of slots never
// holds them all, so another uid gets in at once.
func TestFairQueueLeavesASlot(t *testing.T) {
	q := newFairQueue(2)
	ctx := context.Background()
	if !q.enter(ctx, 7, 1) {
		t.Fatal("first enter refused")
	}
	second := make(chan bool, 1)
	go func() { second <- q.enter(ctx, 7, 1) }()
	for !queued(q, 7) {
		time.Sleep(time.Millisecond)
	}
	if !q.enter(ctx, 8, 1) { // the free slot: uid 7 may not take it
		t.Fatal("another uid was refused the free slot")
	}
	q.leave(7)
	if !<-second {
		t.Fatal("uid 7's second request never got in")
	}
	q.leave(8)
	q.leave(7)
	if q.busy != 0 || len(q.inUse) != 0 || len(q.ring) != 0 {
		t.Errorf("queue not empty: busy %d inUse %v ring %v", q.busy, q.inUse, q.ring)
	}
}
