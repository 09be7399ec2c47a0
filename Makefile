# tlsmirror — one GNU Makefile. `make`, `make test`, `make run`, `make bench`,
# `make install PREFIX=DIR`. V=1 shows full commands. SANITIZER=address,undefined
# builds everything with those sanitizers (the library too: preload libasan first).

PREFIX   ?= /usr/local
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
UNITDIR  ?= $(if $(filter /usr,$(PREFIX)),/lib/systemd/system,$(PREFIX)/lib/systemd/system)
DOCDIR   ?= $(PREFIX)/share/doc/tlsmirror
BUILD    ?= build
CC       ?= cc
PKG_CONFIG ?= pkg-config

OPT      ?= -O2
WARN     := -Wall -Wextra -Werror -Wshadow -Wpointer-arith -Wstrict-prototypes -Wno-unused-parameter
CFLAGS   ?= $(OPT) -g
ALL_CFLAGS = -std=gnu11 $(WARN) $(CFLAGS) -Isrc -D_GNU_SOURCE
ifneq ($(SANITIZER),)
  SAN_CFLAGS  = -fsanitize=$(SANITIZER) -fno-omit-frame-pointer -fno-sanitize-recover=all
  SAN_LDFLAGS = -fsanitize=$(SANITIZER)
endif
# The capture library runs inside uninstrumented programs: AddressSanitizer
# would have to be preloaded before them (and hangs curl at start-up), and
# ThreadSanitizer cannot be loaded into a running program at all, so the
# library gets the other sanitizers only (UBSan's runtime loads as its dependency).
comma := ,
space := $(subst ,, )
SO_SANITIZER := $(subst $(space),$(comma),$(strip $(filter-out address thread,$(subst $(comma),$(space),$(SANITIZER)))))
ifneq ($(SO_SANITIZER),)
  SO_SAN_CFLAGS  = -fsanitize=$(SO_SANITIZER) -fno-omit-frame-pointer -fno-sanitize-recover=all
  SO_SAN_LDFLAGS = -fsanitize=$(SO_SANITIZER)
endif

OPENSSL_CFLAGS := $(shell $(PKG_CONFIG) --cflags openssl 2>/dev/null)
OPENSSL_LIBS   := $(shell $(PKG_CONFIG) --libs openssl 2>/dev/null || echo -lssl -lcrypto)
# the tunnel (-t/-C --compress zstd|lz4) compresses with libzstd or liblz4
ZSTD_CFLAGS    := $(shell $(PKG_CONFIG) --cflags libzstd 2>/dev/null)
ZSTD_LIBS      := $(shell $(PKG_CONFIG) --libs libzstd 2>/dev/null || echo -lzstd)
LZ4_CFLAGS     := $(shell $(PKG_CONFIG) --cflags liblz4 2>/dev/null)
LZ4_LIBS       := $(shell $(PKG_CONFIG) --libs liblz4 2>/dev/null || echo -llz4)
# the capture library relocates the prologues of a program's own SSL_read... with
# Capstone (libcapstone-dev: the headers; libcapstone.so.N is loaded at run time, only then)
# --kafka: records to Kafka through librdkafka (its mock cluster in the tests)
RDKAFKA_CFLAGS := $(shell $(PKG_CONFIG) --cflags rdkafka 2>/dev/null)
RDKAFKA_LIBS   := $(shell $(PKG_CONFIG) --libs rdkafka 2>/dev/null || echo -lrdkafka)
OPENSSL_CFLAGS += $(ZSTD_CFLAGS) $(LZ4_CFLAGS) $(RDKAFKA_CFLAGS)
# tlsmirror decrypt reads captures and interfaces with libpcap
PCAP_CFLAGS    := $(shell $(PKG_CONFIG) --cflags libpcap 2>/dev/null)
PCAP_LIBS      := $(shell $(PKG_CONFIG) --libs libpcap 2>/dev/null || echo -lpcap)
OPENSSL_CFLAGS += $(PCAP_CFLAGS)
OPENSSL_LIBS   += $(ZSTD_LIBS) $(LZ4_LIBS) $(RDKAFKA_LIBS) $(PCAP_LIBS)

ifeq ($(V),1)
  Q :=
else
  Q := @
endif

COMMON_SRC  := $(wildcard src/common/*.c)
AGENT_SRC   := $(wildcard src/agent/*.c) $(wildcard src/flows/*.c) \
               $(wildcard src/pipeline/*.c) $(wildcard src/sources/*.c) \
               $(wildcard src/packets/*.c) $(wildcard src/sinks/*.c) \
               $(wildcard src/transforms/*.c) $(wildcard src/http/*.c) src/transport/ring.c $(COMMON_SRC) \
               $(wildcard src/tunnel/*.c) $(wildcard src/decrypt/*.c)
# src/common/elf.c: the capture library reads the program's symbol tables (inline.c)
CAPTURE_SRC := $(wildcard src/capture/*.c) src/transport/ring.c src/common/elf.c
UNIT_SRC    := $(wildcard tests/unit/*.c)
# the agent's modules without main(), for unit tests and tools
LIB_SRC     := $(filter-out src/agent/main.c,$(AGENT_SRC))

AGENT_OBJ   := $(AGENT_SRC:%.c=$(BUILD)/obj/%.o)
CAPTURE_OBJ := $(CAPTURE_SRC:%.c=$(BUILD)/pic/%.o)
LIB_OBJ     := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_OBJ    := $(UNIT_SRC:%.c=$(BUILD)/obj/%.o)

BIN   := $(BUILD)/tlsmirror
SOLIB := $(BUILD)/libtlsmirror.so
UNIT  := $(BUILD)/unit-tests
# TLS client programs the integration tests run under the capture library
TEST_PROGS := $(BUILD)/progs/mtclient $(BUILD)/progs/forkclient $(BUILD)/progs/peekclient \
              $(BUILD)/progs/forkhand $(BUILD)/progs/closerace $(BUILD)/progs/idleclient
# dbclient loads dbhelper.so with dlopen(RTLD_DEEPBIND), as PHP loads its extensions
DB_PROGS := $(BUILD)/progs/dbclient $(BUILD)/progs/dbhelper.so
# gtclient: a GnuTLS client (the test program links libgnutls; the capture library never does)
GNUTLS_CFLAGS := $(shell $(PKG_CONFIG) --cflags gnutls 2>/dev/null)
GNUTLS_LIBS   := $(shell $(PKG_CONFIG) --libs gnutls 2>/dev/null || echo -lgnutls)
TOOLS := $(BUILD)/ringgen $(BUILD)/recbench $(BUILD)/progs/badring $(TEST_PROGS) $(BUILD)/progs/kafkamock $(BUILD)/flowreplay $(BUILD)/progs/regkeep $(BUILD)/progs/staticsleep \
         $(BUILD)/progs/recvfault.so $(BUILD)/progs/closerace-tsan $(DB_PROGS) $(BUILD)/progs/gtclient \
         $(BUILD)/progs/staticssl $(BUILD)/progs/staticssl-stripped

.PHONY: all deps test unit run bench bench-compare install clean fuzz tsan-test deb
all: $(BIN) $(SOLIB)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(ALL_CFLAGS) $(SAN_CFLAGS) $(OPENSSL_CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/pic/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC [so] $<")
	$(Q)$(CC) $(ALL_CFLAGS) $(SO_SAN_CFLAGS) $(OPENSSL_CFLAGS) -fPIC -fvisibility=hidden -DTLSMIRROR_CAPTURE -MMD -MP -c -o $@ $<

$(BIN): $(AGENT_OBJ)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(SAN_LDFLAGS) -o $@ $^ $(OPENSSL_LIBS)

# The capture library links no libssl: it finds the application's at run time.
$(SOLIB): $(CAPTURE_OBJ) src/capture/exports.map
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(SO_SAN_LDFLAGS) -shared -Wl,--version-script=src/capture/exports.map -Wl,-z,now -o $@ $(CAPTURE_OBJ) -ldl -lpthread

# the relocator (src/capture/reloc.c) is unit-tested on sample prologues
$(UNIT): $(UNIT_OBJ) $(LIB_OBJ) $(BUILD)/obj/src/capture/reloc.o
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(SAN_LDFLAGS) -o $@ $^ $(OPENSSL_LIBS) -ldl

$(BUILD)/ringgen: $(BUILD)/obj/bench/ringgen.o $(BUILD)/obj/src/transport/ring.o
	$(Q)$(CC) $(SAN_LDFLAGS) -o $@ $^

# the records' own cost per exchange, no I/O (bench part k's figures without the noise)
$(BUILD)/recbench: $(BUILD)/obj/bench/recbench.o $(LIB_OBJ)
	$(Q)$(CC) $(SAN_LDFLAGS) -o $@ $^ $(OPENSSL_LIBS)

# Golden tests: replays event scripts through flows + pcap sink (tests/golden/run.sh).
$(BUILD)/flowreplay: $(BUILD)/obj/tests/golden/flowreplay.o $(LIB_OBJ)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(SAN_LDFLAGS) -o $@ $^ $(OPENSSL_LIBS)

# tlsmirror attach's target that checks its registers and stack survive (test_26_attach.py)
$(BUILD)/progs/regkeep: tests/progs/regkeep.c
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(ALL_CFLAGS) -o $@ $<

# ... and one it must refuse: no dlopen in a static program
$(BUILD)/progs/staticsleep: tests/progs/staticsleep.c
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(ALL_CFLAGS) -static -o $@ $<

$(BUILD)/progs/badring: $(BUILD)/obj/tests/progs/badring.o $(BUILD)/obj/src/transport/ring.o
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(SAN_LDFLAGS) -o $@ $^ -lpthread

# preloaded into the agent by test_badring.py: no sanitizer (it must not come first)
$(BUILD)/progs/recvfault.so: tests/progs/recvfault.c src/transport/ctl.h
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(ALL_CFLAGS) -fPIC -shared -o $@ $< -ldl

# OpenSSL linked into the executable from Debian's libssl.a (libc stays shared:
# the capture library is preloaded), and the same stripped of .symtab
$(BUILD)/progs/staticssl: tests/progs/staticssl.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC [static libssl] $<")
	$(Q)$(CC) $(ALL_CFLAGS) $(OPENSSL_CFLAGS) -o $@ $< -Wl,-Bstatic -lssl -lcrypto -Wl,-Bdynamic -ldl -lpthread

$(BUILD)/progs/staticssl-stripped: $(BUILD)/progs/staticssl
	$(Q)strip -o $@ $<

$(BUILD)/progs/gtclient: tests/progs/gtclient.c tests/progs/gen.h
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(ALL_CFLAGS) $(SO_SAN_CFLAGS) $(GNUTLS_CFLAGS) -o $@ $< $(GNUTLS_LIBS)

# kafkamock: librdkafka's mock cluster, the tests' Kafka (tests/integration/test_30_http_records.py)
$(BUILD)/progs/kafkamock: tests/progs/kafkamock.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(ALL_CFLAGS) $(RDKAFKA_CFLAGS) -o $@ $< $(RDKAFKA_LIBS)

$(TEST_PROGS): $(BUILD)/progs/%: tests/progs/%.c tests/progs/tlsprog.h tests/progs/gen.h
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(ALL_CFLAGS) $(SO_SAN_CFLAGS) $(OPENSSL_CFLAGS) -o $@ $< $(OPENSSL_LIBS) -lpthread

# closerace linked with the capture library's sources under ThreadSanitizer
# (the preloaded library itself can't be: it runs in uninstrumented programs).
$(BUILD)/progs/closerace-tsan: tests/progs/closerace.c $(CAPTURE_SRC) $(wildcard src/capture/*.h) src/transport/ring.h
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC [tsan] $<")
	$(Q)$(CC) -std=gnu11 $(WARN) -O1 -g -fsanitize=thread -Isrc -D_GNU_SOURCE -DTLSMIRROR_CAPTURE \
		$(OPENSSL_CFLAGS) -o $@ tests/progs/closerace.c $(CAPTURE_SRC) $(OPENSSL_LIBS) -ldl -lpthread

$(BUILD)/progs/dbclient: tests/progs/dbclient.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(ALL_CFLAGS) $(SO_SAN_CFLAGS) $(OPENSSL_CFLAGS) -o $@ $< $(OPENSSL_LIBS) -ldl \
		-Wl,--enable-new-dtags,-rpath,'$$ORIGIN'

$(BUILD)/progs/dbhelper.so: tests/progs/dbhelper.c tests/progs/tlsprog.h tests/progs/gen.h
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC [so] $<")
	$(Q)$(CC) $(ALL_CFLAGS) $(SO_SAN_CFLAGS) $(OPENSSL_CFLAGS) -fPIC -shared -o $@ $< -lssl -lcrypto -ldl

# Fuzzing: `make fuzz` runs the libFuzzer targets (clang) for FUZZ_SECONDS each, then
# replays tests/fuzz/corpus/ with the replay drivers built by $(CC) (tests/fuzz/run.sh).
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS  := -std=gnu11 -g -O1 -Wall -Wextra -Wno-unused-parameter -Isrc -D_GNU_SOURCE $(FUZZ_SAN)
FUZZ_LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/fuzzobj/%.o)

$(BUILD)/fuzzobj/%.o: %.c
	@mkdir -p $(dir $@)
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link $(OPENSSL_CFLAGS) -MMD -MP -c -o $@ $<

# one libFuzzer target and one replay driver per tests/fuzz/fuzz_NAME.c
FUZZ_TARGETS := ring h2 frame hpack record http1 har keylog tls tcp

$(BUILD)/fuzz/fuzz_%: $(BUILD)/fuzzobj/tests/fuzz/fuzz_%.o $(FUZZ_LIB_OBJ)
	@mkdir -p $(dir $@)
	$(Q)$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $^ $(OPENSSL_LIBS)

$(BUILD)/fuzz/replay_%: $(BUILD)/obj/tests/fuzz/fuzz_%.o $(BUILD)/obj/tests/fuzz/replay.o $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(SAN_LDFLAGS) -o $@ $^ $(OPENSSL_LIBS)

# reached only through the pattern rules: kept, not deleted as intermediates
.SECONDARY: $(FUZZ_LIB_OBJ) $(FUZZ_TARGETS:%=$(BUILD)/fuzzobj/tests/fuzz/fuzz_%.o) \
            $(FUZZ_TARGETS:%=$(BUILD)/obj/tests/fuzz/fuzz_%.o) $(BUILD)/obj/tests/fuzz/replay.o

fuzz: $(FUZZ_TARGETS:%=$(BUILD)/fuzz/fuzz_%) $(FUZZ_TARGETS:%=$(BUILD)/fuzz/replay_%)
	$(Q)BUILD=$(BUILD) ./tests/fuzz/run.sh --fuzz $(FUZZ_SECONDS)

# Debian packages the build, the demo, the tests and the benchmarks need.
deps:
	$(Q)./scripts/deps.sh

unit: $(UNIT)
	$(Q)$(UNIT)

# ThreadSanitizer on the agent's threaded parts (docs/testing.md): the output
# queues' unit tests and the agent with queued sinks under the concurrent
# hostile producer. Its own build directory; the capture library stays
# uninstrumented (TSan cannot be preloaded).
TSAN_BUILD ?= build-tsan
tsan-test: deps
	$(Q)$(MAKE) --no-print-directory BUILD=$(TSAN_BUILD) SANITIZER=thread all $(TSAN_BUILD)/unit-tests $(TSAN_BUILD)/progs/badring
	$(Q)BUILD=$(TSAN_BUILD) ./tests/tsan.sh

test: deps all $(UNIT) $(TOOLS)
	$(Q)./tests/run.sh

run: deps all
	$(Q)BUILD=$(BUILD) ./scripts/demo.sh

bench: deps all $(TOOLS)
	$(Q)BUILD=$(BUILD) ./bench/run.sh

# Old against new: REV (default main) and this tree, A B A B, figures side by side.
bench-compare: deps all $(TOOLS)
	$(Q)./bench/compare.sh $(or $(REV),main)

# The program, the library, the man page, the docs, the systemd units and the
# default configuration (never over an existing one: the admin's stays).
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/tlsmirror $(DESTDIR)$(PREFIX)/share/man/man1 \
		$(DESTDIR)$(DOCDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/tlsmirror
	install -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/tlsmirror
	install -m 0644 $(SOLIB) $(DESTDIR)$(PREFIX)/lib/tlsmirror/libtlsmirror.so
	install -m 0644 man/tlsmirror.1 $(DESTDIR)$(PREFIX)/share/man/man1/tlsmirror.1
	install -m 0644 README.md docs/*.md $(DESTDIR)$(DOCDIR)/
	for u in tlsmirror tlsmirror-collector; do \
		sed -e 's|@BINDIR@|$(PREFIX)/bin|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' -e 's|@DOCDIR@|$(DOCDIR)|g' \
			dist/systemd/$$u.service.in > $(DESTDIR)$(UNITDIR)/$$u.service && \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$u.service || exit 1; done
	for c in agent collector; do \
		[ -e $(DESTDIR)$(SYSCONFDIR)/tlsmirror/$$c.conf ] || \
		install -m 0644 dist/etc/$$c.conf $(DESTDIR)$(SYSCONFDIR)/tlsmirror/$$c.conf || exit 1; done
	@# members of group tlsmirror may attach to the agent (docs/security.md)
	@if [ -n "$(DESTDIR)" ]; then \
		echo "install: DESTDIR set: create group tlsmirror on the target (groupadd --system tlsmirror)"; \
	elif getent group tlsmirror >/dev/null; then :; \
	elif [ "$$(id -u)" -ne 0 ]; then \
		echo "install: not root: group tlsmirror not created (as root: groupadd --system tlsmirror)"; \
	elif groupadd --system tlsmirror; then \
		echo "install: created group tlsmirror; its members may attach (usermod -aG tlsmirror USER)"; \
	else echo "install: could not create group tlsmirror: only root may attach"; fi

# A Debian package from the install tree (docs/operations.md): dpkg-deb, no
# debian/ build machinery; lintian checks it in tests/integration/test_27_package.py.
DEB_VERSION := $(shell sed -n 's/^\#define TLSMIRROR_VERSION "\(.*\)"/\1/p' src/common/version.h)
DEB_ARCH    := $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
DEB         := $(BUILD)/tlsmirror_$(DEB_VERSION)_$(DEB_ARCH).deb
DEB_ROOT    := $(BUILD)/deb/root
deb: $(DEB)
$(DEB): $(BIN) $(SOLIB) man/tlsmirror.1 README.md $(wildcard docs/*.md) $(wildcard dist/*/*) Makefile
	$(Q)rm -rf $(BUILD)/deb && mkdir -p $(DEB_ROOT)/DEBIAN
	$(Q)$(MAKE) --no-print-directory -s install DESTDIR=$(abspath $(DEB_ROOT)) PREFIX=/usr >/dev/null
	$(Q)strip --strip-unneeded --remove-section=.comment --remove-section=.note \
		$(DEB_ROOT)/usr/bin/tlsmirror $(DEB_ROOT)/usr/lib/tlsmirror/libtlsmirror.so
	$(Q)gzip -9n $(DEB_ROOT)/usr/share/man/man1/tlsmirror.1
	$(Q)sed 's/@VERSION@/$(DEB_VERSION)/' dist/debian/changelog | gzip -9n > $(DEB_ROOT)/usr/share/doc/tlsmirror/changelog.gz
	$(Q)install -m 0644 dist/debian/copyright $(DEB_ROOT)/usr/share/doc/tlsmirror/copyright
	$(Q)install -m 0755 dist/debian/postinst dist/debian/prerm dist/debian/postrm $(DEB_ROOT)/DEBIAN/
	$(Q)install -m 0644 dist/debian/conffiles $(DEB_ROOT)/DEBIAN/
	$(Q)cd $(DEB_ROOT) && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' | \
		sort -z | xargs -0 md5sum > DEBIAN/md5sums && chmod 0644 DEBIAN/md5sums
	$(Q)deps=$$(./scripts/deb-depends.sh $(DEB_ROOT)/usr/bin/tlsmirror $(DEB_ROOT)/usr/lib/tlsmirror/libtlsmirror.so) && \
	size=$$(du -sk --exclude=DEBIAN $(DEB_ROOT) | cut -f1) && \
	sed -e 's/@VERSION@/$(DEB_VERSION)/' -e 's/@ARCH@/$(DEB_ARCH)/' -e "s/@SIZE@/$$size/" \
		-e "s/@DEPENDS@/$$deps/" dist/debian/control.in > $(DEB_ROOT)/DEBIAN/control
	$(Q)dpkg-deb --root-owner-group -Zxz --build $(DEB_ROOT) $@ >/dev/null
	@echo "  DEB     $@"

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
