# gangway: make [all] | run | test | test-asan | testssl | unit | fuzz | bench | clean
#          | install | uninstall | deb | test-package
VERSION     := 0.2.0
PYTHON      ?= /usr/bin/python3
PYCONFIG    ?= $(PYTHON)-config
LLHTTP_SRC  ?= /usr/share/llhttp
LLHTTP_INC  ?= /usr/share/include/llhttp
CC          ?= cc
BUILD       ?= build

WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wno-unused-parameter
OPT     ?= -O2 -g
CFLAGS  := $(OPT) -std=c11 -D_GNU_SOURCE $(WARN) -fno-strict-aliasing -MMD -MP
ifeq ($(CI),true)
CFLAGS  += -Werror
endif
PY_CFLAGS  := $(shell $(PYCONFIG) --includes 2>/dev/null)
# libpython is linked in statically, as in Debian's own /usr/bin/python3: the
# shared libpython is position-independent code and runs about 10% more
# instructions per request of a Flask app (docs/ARCHITECTURE.md, "Python").
# The archive is not PIC, hence -no-pie (as /usr/bin/python3); the linker
# exports the interpreter's symbols for extension modules (LINKFORSHARED).
# PYTHON_LINK=shared, or an archive that is not there, links libpython.so.
PYTHON_LINK ?= static
PY_VAR      = $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_config_var("$(1)") or "")' 2>/dev/null)
# python3-dev gives Python.h and libpython: without it the build stops here,
# with one line, rather than in the compiler. INSTALL_DEPS=: skips
# scripts/install-deps (the Debian package build: Build-Depends did it).
INSTALL_DEPS ?= scripts/install-deps
ifeq ($(origin PY_INCLUDE),undefined)
PY_INCLUDE  := $(call PY_VAR,INCLUDEPY)
endif
CHECK_PYTHON = @test -n '$(PY_INCLUDE)' -a -f '$(PY_INCLUDE)/Python.h' || { \
    echo "gangway needs the Python headers of $(PYTHON)$(if $(PY_INCLUDE), ($(PY_INCLUDE)/Python.h is missing), (no such interpreter)):" \
         "install python3-dev (scripts/install-deps does), or name another interpreter with PYTHON=" >&2; exit 1; }
PY_ARCHIVE := $(wildcard $(call PY_VAR,LIBPL)/$(call PY_VAR,LIBRARY))
PY_LINK_KIND := $(if $(and $(filter static,$(PYTHON_LINK)),$(PY_ARCHIVE)),static,shared)
ifeq ($(PY_LINK_KIND),static)
PY_LDFLAGS := -no-pie $(call PY_VAR,LINKFORSHARED) $(PY_ARCHIVE) \
              $(sort $(call PY_VAR,MODLIBS)) $(call PY_VAR,LIBS) $(call PY_VAR,SYSLIBS)
else
PY_LDFLAGS := $(shell $(PYCONFIG) --embed --ldflags 2>/dev/null)
endif
# TLS (--https) is OpenSSL 3 from Debian's libssl-dev, found with pkg-config.
SSL_CFLAGS := $(shell pkg-config --cflags openssl 2>/dev/null)
SSL_LIBS   := $(or $(shell pkg-config --libs openssl 2>/dev/null),-lssl -lcrypto)
LDLIBS  += $(PY_LDFLAGS) -lsystemd $(SSL_LIBS)

# The server's modules: src/<area>/<module>.c (docs/ARCHITECTURE.md, "The
# tree"); unit tests live in tests/unit/, fuzz targets in fuzz/.
SRCS  := $(wildcard src/*/*.c)
OBJS  := $(SRCS:src/%.c=$(BUILD)/%.o) $(BUILD)/stats/status_page.o \
         $(BUILD)/llhttp.o $(BUILD)/llhttp_api.o $(BUILD)/llhttp_http.o
DEPS_STAMP := $(BUILD)/.deps-ok
INCLUDES := -Isrc -I$(BUILD) -I$(LLHTTP_INC) $(SSL_CFLAGS)

all: gangway

$(DEPS_STAMP):
	@$(INSTALL_DEPS)
	$(CHECK_PYTHON)
	@mkdir -p $(BUILD) && touch $@

gangway: $(DEPS_STAMP) $(OBJS) $(BUILD)/main.o
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(OBJS) $(BUILD)/main.o $(LDLIBS)

# Only src/py/ sees Python.h (STYLE.md).
$(BUILD)/py/%.o: src/py/%.c $(DEPS_STAMP)
	$(CHECK_PYTHON)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(PY_CFLAGS) -DGW_PYTHON_EXE='"$(PYTHON)"' $(INCLUDES) -c -o $@ $<
$(BUILD)/%.o: src/%.c $(DEPS_STAMP)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(INCLUDES) -c -o $@ $<

# The names of uWSGI's options (src/config/uwsgi-options.txt, made by
# scripts/gen-uwsgi-options from Debian's uWSGI) as a sorted C table.
$(BUILD)/uwsgi_options.h: src/config/uwsgi-options.txt $(DEPS_STAMP)
	{ echo '/* Generated from src/config/uwsgi-options.txt by the Makefile: edit that file. */'; \
	  echo 'static const char *const uwsgi_option_names[] = {'; \
	  grep -v '^#' $< | LC_ALL=C sort -u | sed 's/.*/    "&",/'; echo '};'; } >$@
$(BUILD)/config/options.o: $(BUILD)/uwsgi_options.h

# `gangway --version`: the version and what this build chose, as key=value
# words. main.o is rebuilt when they
# change: the flags file is rewritten only then.
BUILD_OPTIONS := libpython=$(PY_LINK_KIND) tls=openssl
VERSION_FLAGS := -DGW_VERSION='"$(VERSION)"' -DGW_BUILD_OPTIONS='"$(BUILD_OPTIONS)"'
$(BUILD)/version-flags: FORCE $(DEPS_STAMP)
	@echo '$(VERSION) $(BUILD_OPTIONS)' | cmp -s - $@ || echo '$(VERSION) $(BUILD_OPTIONS)' >$@
$(BUILD)/main.o: src/main.c $(BUILD)/version-flags
	$(CC) $(CFLAGS) $(VERSION_FLAGS) $(INCLUDES) -c -o $@ $<
FORCE:

# The --stats status page is kept as HTML and compiled in as one string
# (quotes, backslashes and '?' escaped: no trigraphs in C11).
$(BUILD)/stats/status_page.c: src/stats/status_page.html $(DEPS_STAMP)
	@mkdir -p $(@D)
	{ echo '/* Generated from src/stats/status_page.html by the Makefile: edit that file. */'; \
	  echo '#include "stats/render.h"'; echo 'const char gw_stats_status_page[] ='; \
	  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/?/\\?/g' -e 's/^/    "/' -e 's/$$/\\n"/' $<; \
	  echo ';'; } >$@
$(BUILD)/stats/status_page.o: $(BUILD)/stats/status_page.c
	$(CC) $(CFLAGS) -Isrc -c -o $@ $<

# llhttp from Debian's node-llhttp, built in strict mode, never copied here.
LLHTTP_CFLAGS := $(filter-out -Wshadow -Wstrict-prototypes -MMD -MP,$(CFLAGS)) -w -DLLHTTP_STRICT_MODE=1
$(BUILD)/llhttp.o: $(LLHTTP_SRC)/llhttp.c $(DEPS_STAMP)
	$(CC) $(LLHTTP_CFLAGS) -I$(LLHTTP_INC) -c -o $@ $<
$(BUILD)/llhttp_api.o: $(LLHTTP_SRC)/api.c $(DEPS_STAMP)
	$(CC) $(LLHTTP_CFLAGS) -I$(LLHTTP_INC) -c -o $@ $<
$(BUILD)/llhttp_http.o: $(LLHTTP_SRC)/http.c $(DEPS_STAMP)
	$(CC) $(LLHTTP_CFLAGS) -I$(LLHTTP_INC) -c -o $@ $<

# C unit tests: each tests/unit/<mod>_test.c includes its module's .c (the
# compiler's dependency files track which).
UNIT_TESTS := $(patsubst tests/unit/%.c,$(BUILD)/unit/%,$(wildcard tests/unit/*_test.c))
LLHTTP_OBJS := $(BUILD)/llhttp.o $(BUILD)/llhttp_api.o $(BUILD)/llhttp_http.o
UNIT_LINK := $(LLHTTP_OBJS) $(BUILD)/core/arena.o $(BUILD)/core/buf.o
$(BUILD)/unit/%_test: tests/unit/%_test.c $(UNIT_LINK)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(INCLUDES) -o $@ $< $(UNIT_LINK) $(UNIT_LIBS)
$(BUILD)/unit/tls_test: UNIT_LIBS := $(SSL_LIBS)

unit: $(DEPS_STAMP) $(UNIT_TESTS)
	@set -e; for t in $(UNIT_TESTS); do echo "== $$t"; $$t; done

run: gangway
	./gangway --http 127.0.0.1:8000 --chdir examples hello:application

PYTEST := $(PYTHON) -m pytest -q -p no:cacheprovider
test: gangway unit
	$(PYTEST) tests

# testssl.sh against --https with the default TLS configuration: fails on any
# finding rated HIGH or CRITICAL (a few minutes; Debian package testssl.sh).
testssl: gangway
	$(PYTEST) tests/test_tls.py -k testssl

# The whole integration suite against an ASan + UBSan build.
ASAN_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
test-asan: gangway-asan
	@rm -f build-asan/asan.* build-asan/ubsan.*
	GW_TEST_BIN=$(CURDIR)/gangway-asan GW_TEST_SANITIZED=1 \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:log_path=$(CURDIR)/build-asan/asan \
	LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$(CURDIR)/build-asan/ubsan \
	$(PYTEST) tests
	@$(MAKE) --no-print-directory sanitizer-reports

# Any report the sanitizers wrote fails the run. (The check was `ls asan.*
# ubsan.*`, which fails unless both kinds exist: a report of one kind alone
# passed.) A file with no report in it is shown, not failed on:
# LeakSanitizer's "Unable to get registers from thread N" (a thread that
# ended while the leak check stopped the world), or an empty file left by a
# process killed while it had the file open.
sanitizer-reports:
	@fail=0; for f in build-asan/asan.* build-asan/ubsan.*; do \
	    [ -e "$$f" ] || continue; \
	    if grep -qE 'ERROR: |runtime error|SUMMARY: ' "$$f"; then cat "$$f"; fail=1; \
	    else echo "note: $$f holds no sanitizer report: $$(head -c 300 "$$f")"; fi; \
	done; \
	if [ $$fail = 1 ]; then echo "sanitizer reports above"; exit 1; fi

# `make gangway-asan` builds the sanitized objects in build-asan/ whatever
# BUILD says: a gangway-asan linked from plain objects would test nothing.
# It links the shared libpython: LeakSanitizer then tells the interpreter's
# own allocations (module libpython3, tests/lsan.supp) from gangway's.
ifeq ($(BUILD),build-asan)
gangway-asan: $(DEPS_STAMP) $(OBJS) $(BUILD)/main.o
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(OBJS) $(BUILD)/main.o $(LDLIBS)
else
gangway-asan: $(DEPS_STAMP)
	$(MAKE) BUILD=build-asan OPT="$(ASAN_FLAGS)" LDFLAGS="-fsanitize=address,undefined" \
	    PYTHON_LINK=shared gangway-asan
endif

include bench/Makefile.inc
include fuzz/Makefile.inc

clean:
	rm -rf build build-asan build-fuzz build-deb gangway gangway-asan

# make install: PREFIX (/usr/local) and DESTDIR as usual. The system files
# in dist/ (template units, example ini, logrotate, sysusers) and the
# single-unit examples go to the examples, rewritten for PREFIX: they name
# /usr/bin/gangway and /usr/share/gangway, where the Debian package puts
# them (docs/deploy-systemd.md).
PREFIX   ?= /usr/local
BINDIR   ?= $(PREFIX)/bin
DATADIR  ?= $(PREFIX)/share/gangway
MANDIR   ?= $(PREFIX)/share/man
DOCDIR   ?= $(PREFIX)/share/doc/gangway
INSTALL  ?= install
DOC_TOP  := README.md SECURITY.md
DOC_MD   := $(wildcard docs/*.md)
EXAMPLES := dist/gangway@.service dist/gangway@.socket dist/example.ini dist/logrotate \
            dist/sysusers.conf examples/gangway.service examples/gangway.socket
EX_SUBST := sed -e 's|/usr/bin/gangway|$(BINDIR)/gangway|g' -e 's|/usr/local/bin/gangway|$(BINDIR)/gangway|g' \
                -e 's|/usr/share/doc/gangway|$(DOCDIR)|g' -e 's|/usr/share/gangway|$(DATADIR)|g'

install: gangway
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(DATADIR) \
	    $(DESTDIR)$(DOCDIR)/docs $(DESTDIR)$(DOCDIR)/examples
	$(INSTALL) -m 755 gangway $(DESTDIR)$(BINDIR)/gangway
	$(INSTALL) -m 644 docs/gangway.1 $(DESTDIR)$(MANDIR)/man1/gangway.1
	$(INSTALL) -m 644 examples/hello.py $(DESTDIR)$(DATADIR)/hello.py
	$(INSTALL) -m 644 $(DOC_TOP) $(DESTDIR)$(DOCDIR)/
	$(INSTALL) -m 644 $(DOC_MD) $(DESTDIR)$(DOCDIR)/docs/
	set -e; for f in $(EXAMPLES); do \
	    $(EX_SUBST) $$f >$(DESTDIR)$(DOCDIR)/examples/$${f##*/}; \
	    chmod 644 $(DESTDIR)$(DOCDIR)/examples/$${f##*/}; done

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/gangway $(DESTDIR)$(MANDIR)/man1/gangway.1 \
	    $(DESTDIR)$(DATADIR)/hello.py $(addprefix $(DESTDIR)$(DOCDIR)/,$(DOC_TOP)) \
	    $(addprefix $(DESTDIR)$(DOCDIR)/docs/,$(notdir $(DOC_MD))) \
	    $(addprefix $(DESTDIR)$(DOCDIR)/examples/,$(notdir $(EXAMPLES)))
	-rmdir $(DESTDIR)$(DOCDIR)/docs $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(DOCDIR) \
	    $(DESTDIR)$(DATADIR) 2>/dev/null

# make deb: the Debian package (debian/), built by dpkg-buildpackage from a
# copy of this tree in DEB_DIR, since dpkg-buildpackage writes its results
# next to the source: the .deb lands in DEB_DIR, nothing outside it changes.
DEB_DIR  ?= build-deb
DEB_SRC  := $(DEB_DIR)/gangway-$(VERSION)
DPKG_BUILDPACKAGE_OPTS ?=
deb:
	@command -v dpkg-buildpackage >/dev/null && command -v dh >/dev/null || { \
	    echo "make deb needs Debian's packaging tools: scripts/install-deps --package" >&2; exit 1; }
	rm -rf $(DEB_SRC) && mkdir -p $(DEB_SRC)
	tar -cf - --exclude=./.git --exclude='./build*' --exclude=./gangway --exclude=./gangway-asan \
	    --exclude=./bench/work --exclude=__pycache__ $(if $(filter /%,$(DEB_DIR)),,--exclude='./$(DEB_DIR)') . \
	    | tar -C $(DEB_SRC) -xf -
	cd $(DEB_SRC) && dpkg-buildpackage -us -uc -b $(DPKG_BUILDPACKAGE_OPTS)
	@ls -1 $(DEB_DIR)/*.deb

# Builds, installs, upgrades and removes the package on this machine (root,
# a throwaway CI machine; tests/test_package.py says what it checks).
test-package: gangway
	GW_TEST_PACKAGE=1 $(PYTEST) tests/test_package.py

# The man page is generated from the option table; a test checks that the
# committed one is current.
man: gangway
	./gangway --print-man >docs/gangway.1

.PHONY: all run test test-asan sanitizer-reports testssl unit clean man gangway-asan bench bench-quick bench-instructions bench-deps \
        install uninstall deb test-package FORCE
-include $(wildcard $(BUILD)/*.d $(BUILD)/*/*.d)
