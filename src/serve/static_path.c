/* Safe path resolution for static files: the request path cleaned (one
 * decoding, no "." or ".." segment, no dot-file unless allowed), opened
 * beneath the mapped directory (openat2 RESOLVE_BENEATH, or a walk that
 * refuses every symlink), and only a regular file opened for reading. Part
 * of the static-file module (serve/static_priv.h). */
#include "serve/static_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* openat2 (Linux 5.6) resolves beneath the root in the kernel; without
 * it, a component-by-component walk that refuses every symlink. */
bool gw__static_probe_openat2(int dirfd)
{
    struct open_how how = {.flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_BENEATH};
    int fd = (int)syscall(SYS_openat2, dirfd, ".", &how, sizeof(how));
    bool has_openat2 = fd >= 0 || errno != ENOSYS;

    if (fd >= 0)
        close(fd);
    return has_openat2;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Decodes the path once (unless it came decoded: a gateway's PATH_INFO)
 * and checks every segment: no NUL, no backslash, no
 * "." or ".." segment, no dot-file unless allowed. Writes the relative path
 * (no leading slash) to out. Returns 0, or -1 for a path never served. */
int gw__static_clean_path(const char *p, size_t n, bool is_decoded, bool dotfiles, char *out,
                          size_t outlen)
{
    size_t o = 0, seg = 0;

    for (size_t i = 0; i <= n; i++) {
        int c;
        if (i == n) {
            c = '/';
        } else if (p[i] == '%' && !is_decoded) {
            int hi, lo;
            if (i + 2 >= n || (hi = hexval((unsigned char)p[i + 1])) < 0 ||
                (lo = hexval((unsigned char)p[i + 2])) < 0)
                return -1;
            c = hi << 4 | lo;
            i += 2;
            if (c == '/')
                return -1; /* an encoded slash never separates segments here */
        } else {
            c = (unsigned char)p[i];
        }
        if (c == 0 || c == '\\')
            return -1;
        if (c == '/') {
            size_t len = o - seg;
            if (len == 0) /* "//" or the leading slash */
                continue;
            if ((len == 1 && out[seg] == '.') || (len == 2 && out[seg] == '.' && out[seg + 1] == '.'))
                return -1;
            if (out[seg] == '.' && !dotfiles)
                return -1;
            if (o + 1 >= outlen)
                return -1;
            out[o++] = '/';
            seg = o;
            continue;
        }
        if (o + 1 >= outlen)
            return -1;
        out[o++] = (char)c;
    }
    if (o > 0 && out[o - 1] == '/')
        o--;
    out[o] = '\0';
    return 0;
}

/* Opens rel beneath dirfd as O_PATH: no "..", no absolute path, and no
 * symlink that leaves the directory (openat2), or none at all (the walk). */
static int open_beneath(const gw_static_t *s, int dirfd, const char *rel)
{
    char buf[4096];
    char *save, *seg, *next;
    int fd, cur;

    if (!rel[0])
        return fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
    if (s->has_openat2) {
        struct open_how how = {.flags = O_PATH | O_CLOEXEC,
                               .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
        return (int)syscall(SYS_openat2, dirfd, rel, &how, sizeof(how));
    }
    snprintf(buf, sizeof(buf), "%s", rel);
    cur = dirfd;
    for (seg = strtok_r(buf, "/", &save); seg; seg = next) {
        next = strtok_r(NULL, "/", &save);
        fd = openat(cur, seg, O_PATH | O_NOFOLLOW | O_CLOEXEC | (next ? O_DIRECTORY : 0));
        if (cur != dirfd)
            close(cur);
        if (fd < 0)
            return -1;
        cur = fd;
    }
    return cur == dirfd ? -1 : cur;
}

/* From an O_PATH handle of a regular file to one that reads. */
static int reopen_read(int pathfd)
{
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pathfd);
    return open(proc, O_RDONLY | O_CLOEXEC | O_NOCTTY);
}

/* Resolves rel (a buffer of relcap bytes; an index is appended to it for a
 * directory when with_index) beneath m to a regular file opened for
 * reading, filling f (what HTTP says of it: gw__static_describe). Special
 * files are only ever opened O_PATH. 0, -1 (nothing servable), or
 * -ENAMETOOLONG (rel cannot take the index). */
int gw__static_resolve(const gw_static_t *s, const smap_t *m, char *rel, size_t relcap,
                       bool with_index, const char *coding, sfile_t *f)
{
    const gw_config_t *cfg = s->cfg;
    int pfd = open_beneath(s, m->dirfd, rel);

    if (pfd < 0 || fstat(pfd, &f->st) < 0)
        goto fail;
    if (S_ISDIR(f->st.st_mode)) {
        size_t n = strlen(rel);
        if (!with_index || !cfg->static_index || strchr(cfg->static_index, '/'))
            goto fail; /* no listings */
        if (n + 1 + strlen(cfg->static_index) + 1 > relcap) {
            close(pfd);
            return -ENAMETOOLONG;
        }
        /* Beneath the mapped directory, not the subdirectory: an index that
         * is a symlink elsewhere inside DIR works like any other file. */
        snprintf(rel + n, relcap - n, "%s%s", n ? "/" : "", cfg->static_index);
        close(pfd);
        pfd = open_beneath(s, m->dirfd, rel);
        if (pfd < 0 || fstat(pfd, &f->st) < 0)
            goto fail;
    }
    if (!S_ISREG(f->st.st_mode))
        goto fail; /* FIFOs, devices, sockets are never opened for reading */
    f->fd = reopen_read(pfd);
    close(pfd);
    if (f->fd < 0)
        return -1;
    f->rel = rel;
    gw__static_describe(s, f, coding);
    return 0;
fail:
    if (pfd >= 0)
        close(pfd);
    return -1;
}
