/*
 * driver.c: the C side of the conformance suite (internal/clib). It reads
 * commands, one a line, runs each through libportres and prints one
 * result line; internal/clib's Go driver does the same through the Go
 * client, and the suite requires both to print the same lines for the
 * same script against fresh brokers. The language:
 *
 *   connect [PATH]                    a new connection (default: $PORTRES_SOCKET); the old one is closed
 *   close                             close the connection (its runtime reservations end)
 *   acquire PROTO START COUNT [delegate] [=VAR]
 *   release PROTO TOKEN               PROTO 0 (any), tcp or udp
 *   associate TOKEN
 *   bind tcp4|tcp6|udp4|udp6 TOKEN ADDR|- PORT   a new socket, bound through the broker, kept open
 *   bindmany KIND TOKEN ADDR|- PORT N  N new sockets bound from PORT on (0: any ports); "ok P1,P2,..."
 *   acqbind KIND ADDR PORT [=VAR]      acquire PORT (0: any) and bind a new socket to it, one request
 *   pcreate|pdelete|plookup PROTO START COUNT [=VAR]
 *   dynamic PROTO
 *   show
 *
 * PROTO is tcp, udp or a number; TOKEN is $VAR or a number. Results:
 * "ok ..." or "err CODE MESSAGE", with every token the driver knows
 * written as $VAR in messages.
 */
#include "portres.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXVARS 64
static struct {
	char name[32];
	uint64_t token;
} vars[MAXVARS];
static int nvars;

static void setvar(const char *name, uint64_t token)
{
	for (int i = 0; i < nvars; i++)
		if (!strcmp(vars[i].name, name)) {
			vars[i].token = token;
			return;
		}
	if (nvars < MAXVARS) {
		snprintf(vars[nvars].name, sizeof vars[nvars].name, "%s", name);
		vars[nvars++].token = token;
	}
}

static uint64_t token_of(const char *s)
{
	if (s[0] == '$') {
		for (int i = 0; i < nvars; i++)
			if (!strcmp(vars[i].name, s + 1))
				return vars[i].token;
		return 0;
	}
	return strtoull(s, NULL, 0);
}

/* var_of names the variable holding t: "$a", or "-" if none. */
static const char *var_of(uint64_t t, char *buf, size_t n)
{
	for (int i = 0; i < nvars; i++)
		if (vars[i].token == t && t) {
			snprintf(buf, n, "$%s", vars[i].name);
			return buf;
		}
	return t ? "other" : "-";
}

static int proto_of(const char *s)
{
	if (!strcmp(s, "tcp"))
		return PORTRES_TCP;
	if (!strcmp(s, "udp"))
		return PORTRES_UDP;
	return atoi(s);
}

static const char *proto_name(int p) { return p == PORTRES_TCP ? "tcp" : p == PORTRES_UDP ? "udp" : "?"; }

/* err prints the error line with known tokens replaced by their names. */
static void err_line(const portres_error *e)
{
	char msg[1024];
	snprintf(msg, sizeof msg, "%s", e->message);
	for (int i = 0; i < nvars; i++) {
		char hex[32];
		snprintf(hex, sizeof hex, "%#llx", (unsigned long long)vars[i].token);
		char *at;
		while (vars[i].token && (at = strstr(msg, hex)) != NULL) {
			char rest[1024];
			snprintf(rest, sizeof rest, "%s", at + strlen(hex));
			snprintf(at, sizeof msg - (size_t)(at - msg), "$%s%s", vars[i].name, rest);
		}
	}
	printf("err %d %s\n", e->code, msg);
}

/* new_socket makes an unbound socket of kind: tcp4, tcp6, udp4, udp6. */
static int new_socket(const char *kind)
{
	int v6 = strchr(kind, '6') != NULL, udp = kind[0] == 'u';
	return socket(v6 ? AF_INET6 : AF_INET, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
}

/* make_addr fills ss with host (an address, or "-" for none) and port for
 * a socket of kind; returns its length, 0 for none. */
static socklen_t make_addr(const char *kind, const char *host, const char *port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof *ss);
	if (!strcmp(host, "-"))
		return 0;
	if (strchr(kind, '6')) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)atoi(port));
		inet_pton(AF_INET6, host, &a->sin6_addr);
		return sizeof *a;
	}
	struct sockaddr_in *a = (struct sockaddr_in *)ss;
	a->sin_family = AF_INET;
	a->sin_port = htons((uint16_t)atoi(port));
	inet_pton(AF_INET, host, &a->sin_addr);
	return sizeof *a;
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	portres_client *c = NULL;
	portres_error e;
	char line[512];
	if (portres_connect(NULL, &c, &e) != 0)
		err_line(&e);
	while (fgets(line, sizeof line, stdin)) {
		line[strcspn(line, "\n")] = 0;
		char *argv[16];
		int argc = 0;
		for (char *t = strtok(line, " "); t && argc < 16; t = strtok(NULL, " "))
			argv[argc++] = t;
		if (argc == 0)
			continue;
		const char *var = argv[argc - 1][0] == '=' ? argv[argc - 1] + 1 : NULL;
		if (var)
			argc--;
		const char *cmd = argv[0];
		char vb[40];
		if (!strcmp(cmd, "connect")) {
			portres_close(c);
			c = NULL;
			if (portres_connect(argc > 1 ? argv[1] : NULL, &c, &e) != 0)
				err_line(&e);
			else
				printf("ok\n");
		} else if (!strcmp(cmd, "close")) {
			portres_close(c);
			c = NULL;
			printf("ok\n");
		} else if (!c) {
			printf("err - no connection\n");
		} else if (!strcmp(cmd, "acquire") && argc >= 4) {
			portres_reservation r;
			unsigned flags = argc > 4 && !strcmp(argv[4], "delegate") ? PORTRES_DELEGATE : 0;
			if (portres_acquire(c, proto_of(argv[1]), (uint16_t)atoi(argv[2]), (uint16_t)atoi(argv[3]), flags, &r, &e)) {
				err_line(&e);
			} else {
				if (var)
					setvar(var, r.token);
				printf("ok %s %u %u token=%s\n", proto_name(r.proto), r.start, r.count, var_of(r.token, vb, sizeof vb));
			}
		} else if (!strcmp(cmd, "release") && argc >= 3) {
			portres_reservation r;
			if (portres_release(c, proto_of(argv[1]), token_of(argv[2]), &r, &e))
				err_line(&e);
			else
				printf("ok %s %u %u\n", proto_name(r.proto), r.start, r.count);
		} else if (!strcmp(cmd, "associate") && argc >= 2) {
			portres_reservation r;
			if (portres_associate(c, token_of(argv[1]), &r, &e))
				err_line(&e);
			else
				printf("ok %s %u %u\n", proto_name(r.proto), r.start, r.count);
		} else if (!strcmp(cmd, "bind") && argc >= 5) {
			int fd = new_socket(argv[1]);
			struct sockaddr_storage ss;
			socklen_t len = make_addr(argv[1], argv[3], argv[4], &ss);
			uint16_t port = 0;
			if (portres_bind(c, token_of(argv[2]), fd, len ? (struct sockaddr *)&ss : NULL, len, &port, &e)) {
				err_line(&e);
				close(fd);
			} else {
				printf("ok %u\n", port); /* fd stays open: the port stays bound */
			}
		} else if (!strcmp(cmd, "bindmany") && argc >= 6) {
			/* bindmany KIND TOKEN ADDR|- PORT N */
			int n = atoi(argv[5]), fds[256];
			uint16_t ports[256];
			size_t nb = 0;
			if (n < 0 || n > 256)
				n = 0;
			for (int i = 0; i < n; i++)
				fds[i] = new_socket(argv[1]);
			struct sockaddr_storage ss;
			socklen_t len = make_addr(argv[1], argv[3], argv[4], &ss);
			int rc = portres_bind_many(c, token_of(argv[2]), fds, (size_t)n, len ? (struct sockaddr *)&ss : NULL, len, ports,
						   &nb, &e);
			for (int i = (int)nb; i < n; i++)
				close(fds[i]); /* the bound ones stay open: their ports stay bound */
			if (rc) {
				err_line(&e);
			} else {
				printf("ok ");
				for (size_t i = 0; i < nb; i++)
					printf("%s%u", i ? "," : "", ports[i]);
				printf("\n");
			}
		} else if (!strcmp(cmd, "acqbind") && argc >= 4) {
			/* acqbind KIND ADDR PORT: acquire the port (0: any) and bind it, one request */
			int fd = new_socket(argv[1]);
			struct sockaddr_storage ss;
			socklen_t len = make_addr(argv[1], argv[2], argv[3], &ss);
			uint16_t want = (uint16_t)atoi(argv[3]), port = 0;
			portres_reservation r;
			int proto = argv[1][0] == 'u' ? PORTRES_UDP : PORTRES_TCP;
			if (portres_acquire_bind(c, proto, want, 1, fd, (struct sockaddr *)&ss, len, &r, &port, &e)) {
				err_line(&e);
				close(fd);
			} else {
				if (proto == PORTRES_TCP)
					listen(fd, 16);
				if (var)
					setvar(var, r.token);
				printf("ok %s %u token=%s\n", proto_name(r.proto), port, var_of(r.token, vb, sizeof vb));
			}
		} else if ((!strcmp(cmd, "pcreate") || !strcmp(cmd, "pdelete") || !strcmp(cmd, "plookup")) && argc >= 4) {
			uint64_t t = 0;
			int p = proto_of(argv[1]);
			uint16_t s = (uint16_t)atoi(argv[2]), n = (uint16_t)atoi(argv[3]);
			int code = cmd[1] == 'c' ? portres_persistent_create(c, p, s, n, &t, &e)
				   : cmd[1] == 'd' ? portres_persistent_delete(c, p, s, n, &e)
						   : portres_persistent_lookup(c, p, s, n, &t, &e);
			if (code) {
				err_line(&e);
			} else {
				const char *same = var_of(t, vb, sizeof vb);
				if (var)
					setvar(var, t);
				printf("ok token=%s\n", cmd[1] == 'd' ? "-" : var ? (strcmp(same, "other") ? same : "new") : same);
			}
		} else if (!strcmp(cmd, "dynamic") && argc >= 2) {
			uint16_t s, n;
			if (portres_dynamic_range(c, proto_of(argv[1]), &s, &n, &e))
				err_line(&e);
			else
				printf("ok %u %u\n", s, n);
		} else if (!strcmp(cmd, "show")) {
			portres_entry *es;
			size_t n;
			if (portres_show(c, &es, &n, &e)) {
				err_line(&e);
				continue;
			}
			printf("ok %zu\n", n);
			for (size_t i = 0; i < n; i++) {
				printf("entry %s %s %u %u mine=%d delegated=%d restored=%d token=%s self=%d bound=", proto_name(es[i].proto),
				       es[i].kind == PORTRES_PERSISTENT ? "persistent" : "runtime", es[i].start, es[i].count, es[i].mine,
				       es[i].delegated, es[i].restored, var_of(es[i].token, vb, sizeof vb),
				       es[i].pid == (int32_t)getpid());
				for (uint16_t j = 0; j < es[i].nbound; j++)
					printf("%s%u", j ? "," : "", es[i].bound[j]);
				printf("\n");
			}
			portres_entries_free(es);
		} else {
			printf("err - bad command %s\n", cmd);
		}
	}
	portres_close(c);
	return 0;
}
