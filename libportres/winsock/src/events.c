/*
 * events.c: manual-reset events (WSACreateEvent and friends),
 * WSAWaitForMultipleEvents, and completion routines.
 *
 * As on Windows, a completion routine runs in the thread that started
 * the operation, when that thread is in an alertable wait
 * (WSAWaitForMultipleEvents with fAlertable, SleepEx with bAlertable):
 * each thread has a queue; an operation's thread adds to it, an
 * alertable wait runs what is queued and returns WSA_WAIT_IO_COMPLETION
 * (SleepEx: WAIT_IO_COMPLETION). Routines queued to a thread that has
 * exited are dropped, as Windows drops APCs of a thread that is gone.
 */
#include "ws.h"
#include "windows.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

struct event {
	int set;
	struct event *next; /* the list of live events: handles are checked against it */
};

static struct event *events; /* live events, under the lock */

static struct event *find(WSAEVENT h)
{
	for (struct event *e = events; e; e = e->next)
		if (e == (struct event *)h)
			return e;
	return NULL;
}

int ws_event_state(WSAEVENT h)
{
	struct event *e = find(h);
	return e ? e->set : -1;
}

/* set_locked sets (v 1) or resets (v 0) the event h, waking the waits
 * if set; 0 if h is not an event. With the lock held. */
static int set_locked(WSAEVENT h, int v)
{
	struct event *e = find(h);
	if (!e)
		return 0;
	e->set = v;
	if (v)
		ws_broadcast();
	return 1;
}

void ws_event_set_locked(WSAEVENT h) { set_locked(h, 1); }
void ws_event_reset_locked(WSAEVENT h) { set_locked(h, 0); }

WSAEVENT WSACreateEvent(void)
{
	struct event *e = calloc(1, sizeof *e);
	if (!e) {
		ws_fail(WSAENOBUFS, "WSACreateEvent: out of memory");
		return WSA_INVALID_EVENT;
	}
	ws_lock();
	e->next = events;
	events = e;
	ws_unlock();
	return e;
}

BOOL WSACloseEvent(WSAEVENT h)
{
	ws_lock();
	for (struct event **p = &events; *p; p = &(*p)->next) {
		if (*p == (struct event *)h) {
			struct event *e = *p;
			*p = e->next;
			ws_broadcast(); /* a wait on it fails now */
			ws_unlock();
			free(e);
			return TRUE;
		}
	}
	ws_unlock();
	ws_fail(WSA_INVALID_HANDLE, "WSACloseEvent: not an event");
	return FALSE;
}

static BOOL set(WSAEVENT h, int v, const char *name)
{
	ws_lock();
	int found = set_locked(h, v);
	ws_unlock();
	if (!found) {
		ws_fail(WSA_INVALID_HANDLE, "%s: not an event", name);
		return FALSE;
	}
	return TRUE;
}

BOOL WSASetEvent(WSAEVENT h) { return set(h, 1, "WSASetEvent"); }
BOOL WSAResetEvent(WSAEVENT h) { return set(h, 0, "WSAResetEvent"); }

/* Completion routine queues. */

struct apc {
	LPWSAOVERLAPPED_COMPLETION_ROUTINE fn;
	DWORD error, bytes;
	LPWSAOVERLAPPED ov;
	struct apc *next;
};

struct ws_apcs {
	int refs;   /* the thread's, and one per operation that will queue here */
	int alive;  /* the thread has not exited */
	struct apc *head, **tail;
};

static pthread_key_t key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void drop(struct ws_apcs *q) /* with the lock held */
{
	if (--q->refs > 0)
		return;
	for (struct apc *a = q->head, *n; a; a = n) {
		n = a->next;
		free(a);
	}
	free(q);
}

static void thread_exit(void *p)
{
	struct ws_apcs *q = p;
	ws_lock();
	q->alive = 0;
	drop(q);
	ws_unlock();
}

static void key_init(void) { pthread_key_create(&key, thread_exit); }

static struct ws_apcs *mine(int create) /* with the lock held */
{
	pthread_once(&key_once, key_init);
	struct ws_apcs *q = pthread_getspecific(key);
	if (!q && create && (q = calloc(1, sizeof *q)) != NULL) {
		q->refs = 1;
		q->alive = 1;
		q->tail = &q->head;
		pthread_setspecific(key, q);
	}
	return q;
}

struct ws_apcs *ws_my_apcs(void)
{
	ws_lock();
	struct ws_apcs *q = mine(1);
	if (q)
		q->refs++;
	ws_unlock();
	return q;
}

void ws_apcs_unref(struct ws_apcs *q)
{
	ws_lock();
	drop(q);
	ws_unlock();
}

void ws_queue_apc(struct ws_apcs *q, LPWSAOVERLAPPED_COMPLETION_ROUTINE fn, DWORD error, DWORD bytes, LPWSAOVERLAPPED ov)
{
	if (!q || !q->alive)
		return;
	struct apc *a = malloc(sizeof *a);
	if (!a)
		return;
	*a = (struct apc){fn, error, bytes, ov, NULL};
	*q->tail = a;
	q->tail = &a->next;
	ws_broadcast();
}

int ws_run_apcs(void)
{
	struct ws_apcs *q = mine(0);
	if (!q || !q->head)
		return 0;
	struct apc *a = q->head;
	q->head = NULL;
	q->tail = &q->head;
	ws_unlock();
	while (a) {
		struct apc *n = a->next;
		a->fn(a->error, a->bytes, a->ov, 0);
		free(a);
		a = n;
	}
	ws_lock();
	return 1;
}

static struct timespec deadline_after(DWORD ms)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	t.tv_sec += ms / 1000;
	t.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	return t;
}

static int past(const struct timespec *d)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec > d->tv_sec || (t.tv_sec == d->tv_sec && t.tv_nsec >= d->tv_nsec);
}

DWORD WSAWaitForMultipleEvents(DWORD n, const WSAEVENT *hs, BOOL all, DWORD timeout, BOOL alertable)
{
	if (n == 0 || n > WSA_MAXIMUM_WAIT_EVENTS || !hs) {
		ws_fail(WSA_INVALID_PARAMETER, "WSAWaitForMultipleEvents: %u events", (unsigned)n);
		return WSA_WAIT_FAILED;
	}
	struct timespec d = deadline_after(timeout);
	ws_lock();
	for (;;) {
		DWORD first = WSA_WAIT_FAILED, nset = 0;
		for (DWORD i = 0; i < n; i++) {
			int st = ws_event_state(hs[i]);
			if (st < 0) {
				ws_unlock();
				ws_fail(WSA_INVALID_HANDLE, "WSAWaitForMultipleEvents: handle %u is not an event", (unsigned)i);
				return WSA_WAIT_FAILED;
			}
			if (st) {
				nset++;
				if (first == WSA_WAIT_FAILED)
					first = i;
			}
		}
		if ((all && nset == n) || (!all && nset)) {
			ws_unlock();
			return WSA_WAIT_EVENT_0 + (all ? 0 : first);
		}
		if (alertable && ws_run_apcs()) {
			ws_unlock();
			return WSA_WAIT_IO_COMPLETION;
		}
		if (timeout != WSA_INFINITE && past(&d)) {
			ws_unlock();
			return WSA_WAIT_TIMEOUT;
		}
		ws_wait(timeout == WSA_INFINITE ? NULL : &d);
	}
}

DWORD SleepEx(DWORD ms, BOOL alertable)
{
	struct timespec d = deadline_after(ms);
	ws_lock();
	for (;;) {
		if (alertable && ws_run_apcs()) {
			ws_unlock();
			return WAIT_IO_COMPLETION;
		}
		if (ms != INFINITE && past(&d))
			break;
		ws_wait(ms == INFINITE ? NULL : &d);
	}
	ws_unlock();
	return 0;
}

void Sleep(DWORD ms) { SleepEx(ms, FALSE); }
