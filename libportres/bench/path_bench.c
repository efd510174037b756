/*
 * path_bench.c: the C processes of BenchmarkPath (internal/broker), run
 * with BENCH_CLIENT=c, so that neither the clients nor the floor's
 * server carry a language runtime beside their syscalls.
 *
 * "path_bench echo SOCKET" is the echo server of the floors: a thread
 * per connection blocked in recvmsg, closing the descriptors it
 * receives and answering 8 bytes.
 *
 * "path_bench client" is a client process. It speaks the Go path
 * client's protocol: each stdin line "run OP MS AT" does OP over and
 * over for MS milliseconds from the CLOCK_MONOTONIC time AT (ns; a few
 * untimed ones first) and prints "done MEDIAN_NS COUNT P90_NS", or
 * "error OP WHY". The floors talk to the echo server ($ECHO_SOCKET)
 * with blocking syscalls; the broker's operations ($PORTRES_SOCKET) go
 * through libportres.
 */
#include <portres.h>

#include <errno.h>
#include <pthread.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MANY_FDS 8 /* as manyFDs in path_bench_test.go */

static int echo;            /* SOCK_SEQPACKET to the echo server */
static portres_client *cl;  /* the broker */
static int spare;           /* the socket the floors carry */
static portres_reservation block; /* bindfd's block, taken on first use */
static int have_block;
static portres_error err;

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* roundtrip sends 8 bytes to the echo server, with nfds copies of the
 * spare socket, and waits for the answer. */
static int roundtrip(int nfds)
{
	char msg[8] = "request", buf[64];
	struct iovec iov = {msg, sizeof msg};
	union {
		char b[CMSG_SPACE(MANY_FDS * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
	if (nfds > 0) {
		memset(&ctl, 0, sizeof ctl);
		m.msg_control = ctl.b;
		m.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		struct cmsghdr *h = CMSG_FIRSTHDR(&m);
		h->cmsg_level = SOL_SOCKET;
		h->cmsg_type = SCM_RIGHTS;
		h->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		for (int i = 0; i < nfds; i++)
			memcpy(CMSG_DATA(h) + i * sizeof(int), &spare, sizeof(int));
	}
	if (sendmsg(echo, &m, 0) < 0)
		return -errno;
	return recv(echo, buf, sizeof buf, 0) > 0 ? 0 : -EPIPE;
}

/* bind0 is the floor of an enforcement bind: socket, bind(0), close. */
static int bind0(void)
{
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct sockaddr_in6 a = {.sin6_family = AF_INET6};
	int rc = bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ? -errno : 0;
	close(fd);
	return rc;
}

static int trivial(void)
{
	uint16_t start, count;
	return portres_dynamic_range(cl, PORTRES_TCP, &start, &count, &err);
}

static int acqrel(void)
{
	portres_reservation r;
	int rc = portres_acquire(cl, PORTRES_TCP, 0, 1, 0, &r, &err);
	return rc ? rc : portres_release(cl, 0, r.token, NULL, &err);
}

/* bindfd binds one socket after another from a block of 8 of this
 * client's, closing each: the block never fills. */
static int bindfd(void)
{
	if (!have_block) {
		int rc = portres_acquire(cl, PORTRES_TCP, 0, 8, 0, &block, &err);
		if (rc)
			return rc;
		have_block = 1;
	}
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int rc = portres_bind(cl, block.token, fd, NULL, 0, NULL, &err);
	close(fd);
	return rc;
}

/* acqbindrel: acquire a port, bind a listener on it, close, release. */
static int acqbindrel(void)
{
	portres_reservation r;
	int rc = portres_acquire(cl, PORTRES_TCP, 0, 1, 0, &r, &err);
	if (rc)
		return rc;
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		rc = -errno;
	else if ((rc = portres_bind(cl, r.token, fd, NULL, 0, NULL, &err)) == 0 && listen(fd, 128) < 0)
		rc = -errno;
	if (fd >= 0)
		close(fd);
	int rel = portres_release(cl, 0, r.token, NULL, &err);
	return rc ? rc : rel;
}

/* bindmany binds MANY_FDS sockets of a block of as many ports in one
 * request, then closes them all. */
static portres_reservation many;
static int have_many;

static int bindmany(void)
{
	if (!have_many) {
		int rc = portres_acquire(cl, PORTRES_TCP, 0, MANY_FDS, 0, &many, &err);
		if (rc)
			return rc;
		have_many = 1;
	}
	int fds[MANY_FDS];
	for (int i = 0; i < MANY_FDS; i++)
		if ((fds[i] = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
			int e = errno;
			while (i-- > 0)
				close(fds[i]);
			return -e;
		}
	int rc = portres_bind_many(cl, many.token, fds, MANY_FDS, NULL, 0, NULL, NULL, &err);
	for (int i = 0; i < MANY_FDS; i++)
		close(fds[i]);
	return rc;
}

/* listen1: acquire a port and bind a listener on it in one request,
 * close, release. */
static int listen1(void)
{
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	portres_reservation r;
	int rc = portres_acquire_bind(cl, PORTRES_TCP, 0, 1, fd, NULL, 0, &r, NULL, &err);
	if (rc) {
		close(fd);
		return rc;
	}
	if (listen(fd, 128) < 0)
		rc = -errno;
	close(fd);
	int rel = portres_release(cl, 0, r.token, NULL, &err);
	return rc ? rc : rel;
}

static int rtt(void) { return roundtrip(0); }
static int rttfd(void) { return roundtrip(1); }
static int rttfd8(void) { return roundtrip(MANY_FDS); }

static const struct {
	const char *name;
	int (*run)(void);
} ops[] = {
	{"rtt", rtt}, {"rttfd", rttfd}, {"rttfd8", rttfd8}, {"bind0", bind0},
	{"trivial", trivial}, {"acqrel", acqrel}, {"bindfd", bindfd}, {"bindmany", bindmany}, {"acqbindrel", acqbindrel},
	{"listen1", listen1},
};

static int cmp(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

/* echo_conn answers one connection of the echo server. */
static void *echo_conn(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[256];
	union {
		char b[CMSG_SPACE(MANY_FDS * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	for (;;) {
		struct iovec iov = {buf, sizeof buf};
		struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof ctl.b};
		ssize_t n = recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
		if (n <= 0)
			break;
		for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h))
			if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS)
				for (size_t i = 0; i < (h->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
					int got;
					memcpy(&got, CMSG_DATA(h) + i * sizeof(int), sizeof got);
					close(got);
				}
		if (send(fd, buf, n < 8 ? n : 8, 0) < 0)
			break;
	}
	close(fd);
	return NULL;
}

static int echo_server(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof sa.sun_path) {
		printf("error socket path too long\n");
		return 1;
	}
	strcpy(sa.sun_path, path);
	int ln = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (ln < 0 || bind(ln, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(ln, 128) < 0) {
		printf("error %s\n", strerror(errno));
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready\n");
	for (;;) {
		int fd = accept4(ln, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			return errno == EINTR ? 0 : 1;
		pthread_t t;
		if (pthread_create(&t, NULL, echo_conn, (void *)(intptr_t)fd) != 0)
			close(fd);
		else
			pthread_detach(t);
	}
}

static int client(void)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	const char *path = getenv("ECHO_SOCKET");
	if (!path || strlen(path) >= sizeof sa.sun_path) {
		printf("error no ECHO_SOCKET\n");
		return 1;
	}
	strcpy(sa.sun_path, path);
	echo = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (echo < 0 || connect(echo, (struct sockaddr *)&sa, sizeof sa) < 0) {
		printf("error echo server: %s\n", strerror(errno));
		return 1;
	}
	if (portres_connect(NULL, &cl, &err) != 0) {
		printf("error broker: %s\n", err.message);
		return 1;
	}
	spare = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setvbuf(stdout, NULL, _IOLBF, 0);
	size_t cap = 1 << 16;
	int64_t *lat = malloc(cap * sizeof *lat);
	if (!lat) {
		printf("error out of memory\n");
		return 1;
	}
	printf("ready\n");
	char line[256], name[64];
	int ms;
	long long at;
	while (fgets(line, sizeof line, stdin)) {
		int (*run)(void) = NULL;
		if (sscanf(line, "run %63s %d %lld", name, &ms, &at) == 3)
			for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
				if (strcmp(ops[i].name, name) == 0)
					run = ops[i].run;
		if (!run) {
			line[strcspn(line, "\n")] = 0;
			printf("error bad command %s\n", line);
			continue;
		}
		for (int i = 0; i < 20; i++)
			run();
		int64_t wait = at - mono_ns();
		if (wait > 0) {
			struct timespec ts = {wait / 1000000000, wait % 1000000000};
			nanosleep(&ts, NULL);
		}
		size_t n = 0;
		int rc = 0;
		int64_t t0 = mono_ns(), end = t0 + (int64_t)ms * 1000000;
		while (t0 < end) {
			int r = run();
			if (r && !rc)
				rc = r;
			int64_t t1 = mono_ns();
			if (n == cap) {
				int64_t *more = realloc(lat, 2 * cap * sizeof *lat);
				if (!more)
					break;
				lat = more, cap *= 2;
			}
			lat[n++] = t1 - t0;
			t0 = t1;
		}
		if (rc) {
			printf("error %s %d %s\n", name, rc, rc > 0 ? err.message : strerror(-rc));
			continue;
		}
		if (n == 0) {
			printf("error %s: no operation timed in %d ms\n", name, ms);
			continue;
		}
		qsort(lat, n, sizeof *lat, cmp);
		printf("done %lld %zu %lld\n", (long long)lat[n / 2], n, (long long)lat[n * 9 / 10]);
	}
	portres_close(cl);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "echo") == 0)
		return echo_server(argv[2]);
	if (argc == 2 && strcmp(argv[1], "client") == 0)
		return client();
	fprintf(stderr, "usage: path_bench echo SOCKET | path_bench client\n");
	return 2;
}
