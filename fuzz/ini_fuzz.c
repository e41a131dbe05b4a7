/* libFuzzer target for the ini reader: bytes go straight into gw_ini_feed()
 * as the contents of DIR/fuzz.ini, where DIR is a directory made once at
 * start-up holding a.ini (which includes b.ini), b.ini and loop.ini (which
 * includes itself), so that includes, their relative paths and the loop
 * limit are reachable. No sockets, no Python.
 *
 * Input: one control byte, then the file.
 *   byte 0, bits 0-1: the section asked for: 0 = none ([uwsgi] and
 *                     [gangway]), 1 = "uwsgi", 2 = "x", 3 = "" (none)
 *
 * Besides the sanitizers, it aborts when
 *   - a failed read gives no message, or a successful one sets one;
 *   - an entry breaks what config.c relies on: a non-empty key without '='
 *     and without leading or trailing blanks, no control byte in key or
 *     value, a value within the 64 KiB limit, a line number within the
 *     file's lines (for entries of fuzz.ini itself), a file name set;
 *   - the same bytes read twice give different entries (the reader keeps
 *     no state between files besides the entries). */
#include "config/ini.c"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        fprintf(stderr, "ini_fuzz: " __VA_ARGS__);                                                 \
        fprintf(stderr, "\n");                                                                     \
        abort();                                                                                   \
    } while (0)

static char dir[64];
static char path[128];

static void put(const char *name, const char *text)
{
    char p[128];
    FILE *f;

    snprintf(p, sizeof(p), "%s/%s", dir, name);
    if (!(f = fopen(p, "w")) || fputs(text, f) < 0 || fclose(f) != 0)
        FAIL("cannot write %s", p);
}

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/gw-ini-fuzz-XXXXXX");
    if (!mkdtemp(dir))
        FAIL("mkdtemp");
    snprintf(path, sizeof(path), "%s/fuzz.ini", dir);
    put("a.ini", "[uwsgi]\nfrom-a = %n\nini = b.ini\n");
    put("b.ini", "[uwsgi]\nfrom-b = %(from-a)/%d\n[x]\nonly-x = 1\n");
    put("loop.ini", "[uwsgi]\nini = loop.ini\n");
    /* $(VAR) reads the environment: make it known (no control bytes). */
    clearenv();
    setenv("GW_FUZZ_VAR", "value", 1);
}

static void noop_warn(void *user, const char *file, unsigned line, const char *msg)
{
    (void)file;
    (void)line;
    if (!msg || !*msg)
        FAIL("empty warning");
    (*(unsigned *)user)++;
}

static void check_text(const char *what, const char *s, bool is_key)
{
    size_t n = strlen(s);

    if (n > MAX_VALUE)
        FAIL("%s of %zu bytes", what, n);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        /* $(VAR) may bring any byte an environment variable holds, but the
         * only one set here holds none of these. */
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            FAIL("%s holds control byte 0x%02x", what, c);
    }
    if (is_key && (!n || strchr(s, '=') || is_space(s[0]) || is_space(s[n - 1])))
        FAIL("bad key '%s'", s);
}

static int read_once(const uint8_t *data, size_t size, const char *section, gw_ini_t *ini,
                     char *err, size_t errlen, unsigned *warnings)
{
    int rc;

    gw_ini_init(ini, noop_warn, warnings);
    rc = gw_ini_feed(ini, path, (const char *)data, size, section, err, errlen);
    if (rc != 0 && !err[0])
        FAIL("failed (%d) without a message", rc);
    if (rc == 0 && err[0])
        FAIL("succeeded with a message: %s", err);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *sections[] = {NULL, "uwsgi", "x", NULL};
    static bool is_setup;
    gw_ini_t a, b;
    char ea[512], eb[512];
    unsigned wa = 0, wb = 0, lines = 1;
    const char *section;
    int ra, rb;

    if (!is_setup) {
        setup();
        is_setup = true;
    }
    if (size < 1)
        return 0;
    section = sections[data[0] & 3];
    data++;
    size--;
    for (size_t i = 0; i < size; i++)
        lines += data[i] == '\n';

    ra = read_once(data, size, section, &a, ea, sizeof(ea), &wa);
    rb = read_once(data, size, section, &b, eb, sizeof(eb), &wb);
    if (ra != rb || strcmp(ea, eb) != 0 || a.n != b.n || wa != wb)
        FAIL("two reads differ: %d/%d '%s'/'%s' %zu/%zu entries", ra, rb, ea, eb, a.n, b.n);
    for (size_t i = 0; i < a.n; i++) {
        const gw_ini_entry_t *e = &a.v[i], *f = &b.v[i];
        check_text("key", e->key, true);
        check_text("value", e->value, false);
        if (!e->file || !*e->file)
            FAIL("entry %zu has no file", i);
        if (strcmp(e->file, path) == 0 && (e->line < 1 || e->line > lines))
            FAIL("entry %zu on line %u of a %u-line file", i, e->line, lines);
        if (strcmp(e->key, f->key) != 0 || strcmp(e->value, f->value) != 0 || e->line != f->line)
            FAIL("entry %zu differs between two reads", i);
    }
    gw_ini_dispose(&a);
    gw_ini_dispose(&b);
    return 0;
}
