# portres: build, test, install. The Go toolchain does the work; make
# only names the steps and where things go.
PREFIX      ?= /usr/local
DESTDIR     ?=
BINDIR      := $(PREFIX)/bin
MANDIR      := $(PREFIX)/share/man
UNITDIR     ?= /etc/systemd/system
TMPFILESDIR ?= /etc/tmpfiles.d

.PHONY: build test man install uninstall lib install-lib

build:
	go build -o bin/ ./cmd/...

# libportres, the C client and its Winsock layer (libportres/Makefile).
lib:
	$(MAKE) -C libportres

install-lib:
	$(MAKE) -C libportres install PREFIX=$(PREFIX) DESTDIR=$(DESTDIR)

# The README's test command: privileged tests need root (they run in
# private network namespaces), and skip saying why without it.
test:
	go test -race -count=1 ./...

# Man pages, generated from the commands' own definitions.
man: build
	rm -rf man && mkdir -p man
	bin/portres gen-man man
	bin/portresd --gen-man man

install: build man
	install -D -m 0755 bin/portresd $(DESTDIR)$(BINDIR)/portresd
	install -D -m 0755 bin/portres $(DESTDIR)$(BINDIR)/portres
	install -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man8
	install -m 0644 man/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 man/*.8 $(DESTDIR)$(MANDIR)/man8/
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(TMPFILESDIR)
	sed 's|/usr/local/bin/portresd|$(BINDIR)/portresd|' dist/systemd/portresd.service > $(DESTDIR)$(UNITDIR)/portresd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/portresd.service
	install -m 0644 dist/systemd/portres.conf $(DESTDIR)$(TMPFILESDIR)/portres.conf

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/portresd $(DESTDIR)$(BINDIR)/portres
	rm -f $(DESTDIR)$(MANDIR)/man1/portres*.1 $(DESTDIR)$(MANDIR)/man8/portresd.8
	rm -f $(DESTDIR)$(UNITDIR)/portresd.service $(DESTDIR)$(TMPFILESDIR)/portres.conf
