/*
 * native_listen.c: libportres's own API, without the Winsock layer. It
 * reserves a block of TCP ports, binds a listening socket to one of them
 * through the broker, lists every reservation on the host, and releases
 * the block.
 *
 *   cc native_listen.c $(pkg-config --cflags --libs portres)
 */
#include <portres.h>

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int count = argc > 1 ? atoi(argv[1]) : 4;
	portres_client *c;
	portres_error err;
	if (portres_connect(NULL, &c, &err) != 0) {
		fprintf(stderr, "%s\n", err.message);
		return 1;
	}
	portres_reservation r;
	if (portres_acquire(c, PORTRES_TCP, 0, (uint16_t)count, 0, &r, &err) != 0) {
		fprintf(stderr, "%s\n", err.message);
		return 1;
	}
	printf("reserved tcp %u-%u%s\n", r.start, r.start + r.count - 1,
	       r.not_excluded ? " (not kept from automatic assignment)" : "");

	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	uint16_t port;
	if (portres_bind(c, r.token, fd, NULL, 0, &port, &err) != 0 || listen(fd, 16) != 0) {
		fprintf(stderr, "%s\n", err.message);
		return 1;
	}
	printf("listening on port %u\n", port);

	portres_entry *es;
	size_t n;
	if (portres_show(c, &es, &n, &err) == 0) {
		for (size_t i = 0; i < n; i++)
			printf("%s %u-%u %s pid %d%s bound %u\n", es[i].proto == PORTRES_TCP ? "tcp" : "udp", es[i].start,
			       es[i].start + es[i].count - 1, es[i].kind == PORTRES_RUNTIME ? "runtime" : "persistent",
			       es[i].pid, es[i].mine ? " (mine)" : "", es[i].nbound ? es[i].bound[0] : 0);
		portres_entries_free(es);
	}

	if (portres_release(c, 0, r.token, NULL, &err) != 0)
		fprintf(stderr, "%s\n", err.message);
	else
		printf("released\n");
	close(fd);
	portres_close(c);
	return 0;
}
