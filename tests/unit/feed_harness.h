/* Harness code shared by the parser tests that drive a module's feed
 * function the way conn.c does: http1_test.c and uwsgi_test.c (the splits
 * check), http1_fuzz.c and uwsgi_fuzz.c (the body file leak check). Those
 * files #include their module's .c, so everything here is static inline and
 * named harness_*, clear of the modules' own statics. Not for the server. */
#ifndef GW_FEED_HARNESS_H
#define GW_FEED_HARNESS_H

#include <assert.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

/* ---- descriptors (fuzzers) ---- */

/* The descriptor the next open() gets, or -1 when none is free. */
static inline int harness_lowest_free_fd(void)
{
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd >= 0)
        close(fd);
    return fd;
}

/* Room for all harness_find_deleted_file() writes: "fd ", a d_name of up to
 * 255 bytes, " -> ", a link target of up to 4095 bytes, and the NUL. */
enum { HARNESS_FD_WHAT_MAX = 3 + 255 + 4 + 4095 + 1 };

/* Finds a descriptor still open on a deleted file under tmpdir (borrowed).
 * Body files are unlinked at once, so they show as "<tmpdir>/#123 (deleted)"
 * or "<tmpdir>/gangway-body-XXXXXX (deleted)". Writes "fd N -> <target>" for
 * the first one into what[0..size) (cut to fit) and returns true; returns
 * false when there is none, or when /proc/self/fd cannot be read. */
static inline bool harness_find_deleted_file(const char *tmpdir, char *what, size_t size)
{
    char dir[4096], link[4096];
    size_t n = (size_t)snprintf(dir, sizeof(dir), "%s/", tmpdir);
    DIR *d = opendir("/proc/self/fd");
    struct dirent *ent;
    bool found = false;

    if (!d)
        return false;
    while (!found && (ent = readdir(d))) {
        ssize_t k;
        if (ent->d_name[0] == '.')
            continue;
        if ((k = readlinkat(dirfd(d), ent->d_name, link, sizeof(link) - 1)) <= 0)
            continue;
        link[k] = '\0';
        if (strncmp(link, dir, n) == 0 && strstr(link, "(deleted)")) {
            snprintf(what, size, "fd %s -> %s", ent->d_name, link);
            found = true;
        }
    }
    closedir(d);
    return found;
}

/* ---- every split agrees (unit tests) ---- */

/* Parses in[0..n) delivered in pieces ending at cuts[0..ncuts) (ascending,
 * each in 1..n-1) with limits lim, into *out: the test's run_cuts(). */
typedef void harness_run_cb(const char *in, size_t n, const size_t *cuts, size_t ncuts,
                            const void *lim, void *out);
/* Whether two outcomes of harness_run_cb are the same. */
typedef bool harness_eq_cb(const void *a, const void *b);
/* Prints one outcome to stderr, on a line of its own, labelled what. */
typedef void harness_describe_cb(const char *what, const void *r);

/* One parser's harness: its callbacks and the size of the outcome they fill. */
typedef struct harness_parser {
    harness_run_cb *run;
    harness_eq_cb *eq;
    harness_describe_cb *describe;
    size_t result_size;
} harness_parser_t;

/* Prints p[0..n) to stderr as a C string would spell it. */
static inline void harness_print_bytes(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\r')
            fputs("\\r", stderr);
        else if (c == '\n')
            fputs("\\n", stderr);
        else if (c == '"' || c == '\\')
            fprintf(stderr, "\\%c", c);
        else if (c >= 0x20 && c < 0x7f)
            fputc(c, stderr);
        else
            fprintf(stderr, "\\x%02x", c);
    }
}

/* Parses in[0..n) in one shot, one byte at a time, and split in two at every
 * point; every way must give the same outcome. Stores the one-shot outcome in
 * *whole (p->result_size bytes); prints the first difference of each kind,
 * with the bytes before the split that caused it, and returns false. */
static inline bool harness_splits_agree(const harness_parser_t *p, const char *in, size_t n,
                                        const void *lim, void *whole)
{
    size_t *cuts = calloc(n ? n : 1, sizeof(*cuts));
    void *got = malloc(p->result_size);
    bool ok = true;

    assert(cuts && got);
    p->run(in, n, NULL, 0, lim, whole);
    for (size_t i = 1; i < n; i++)
        cuts[i - 1] = i;
    p->run(in, n, cuts, n ? n - 1 : 0, lim, got);
    if (!p->eq(whole, got)) {
        fprintf(stderr, "  byte-at-a-time parse differs from one-shot\n");
        p->describe("one-shot", whole);
        p->describe("bytewise", got);
        ok = false;
    }
    for (size_t i = 1; i < n; i++) {
        p->run(in, n, &i, 1, lim, got);
        if (!p->eq(whole, got)) {
            size_t before = i < 40 ? i : 40;
            fprintf(stderr, "  split at %zu of %zu (\"", i, n);
            harness_print_bytes(in + i - before, before);
            fprintf(stderr, "\" | ...) differs from one-shot\n");
            p->describe("one-shot", whole);
            p->describe("split", got);
            ok = false;
            break;
        }
    }
    free(got);
    free(cuts);
    return ok;
}

#endif
