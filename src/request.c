#include "request.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void gw_req_init(gw_req_t *r, gw_arena_pool_t *pool)
{
    memset(r, 0, sizeof(*r));
    r->content_length = -1;
    r->host = -1;
    r->body.fd = -1;
    r->static_fd = -1;
    gw_arena_init(&r->arena, pool);
}

void gw_req_reset(gw_req_t *r, const gw_body_env_t *env)
{
    gw_arena_t arena = r->arena;
    gw_body_t body = r->body;

    gw_arena_reset(&arena);
    gw_buf_release(&body.mem, env->pool);
    if (body.fd >= 0)
        close(body.fd);
    if (r->static_fd >= 0)
        close(r->static_fd);
    memset(r, 0, sizeof(*r));
    r->content_length = -1;
    r->host = -1;
    r->body.fd = -1;
    r->static_fd = -1;
    r->arena = arena;
}

int gw_req_add_header(gw_req_t *r, gw_span_t name, gw_span_t value)
{
    if (r->nheaders == r->cap_headers) {
        uint32_t cap = r->cap_headers ? r->cap_headers * 2 : 16;
        gw_header_t *h = gw_arena_alloc(&r->arena, cap * sizeof(*h));
        if (!h)
            return -ENOMEM;
        if (r->nheaders)
            memcpy(h, r->headers, r->nheaders * sizeof(*h));
        r->headers = h;
        r->cap_headers = cap;
    }
    r->headers[r->nheaders].name = name;
    r->headers[r->nheaders].value = value;
    r->nheaders++;
    return 0;
}

static int open_tmp(const char *dir)
{
    char path[4096];
    int fd;

    fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
        return fd >= 0 ? fd : -errno;
    /* Filesystems without O_TMPFILE: create, then unlink at once. */
    snprintf(path, sizeof(path), "%s/gangway-body-XXXXXX", dir);
    fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0)
        return -errno;
    unlink(path);
    return fd;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int gw_body_append(gw_body_t *b, const gw_body_env_t *env, const char *p, size_t n)
{
    int rc;

    if (n == 0)
        return 0;
    if (b->fd < 0 && b->len + n > env->mem_limit) {
        int fd = open_tmp(env->tmpdir);
        if (fd < 0)
            return fd;
        if ((rc = write_all(fd, b->mem.data, b->mem.len)) < 0) {
            close(fd);
            return rc;
        }
        gw_buf_release(&b->mem, env->pool);
        b->fd = fd;
    }
    if (b->fd >= 0) {
        if ((rc = write_all(b->fd, p, n)) < 0)
            return rc;
    } else {
        if ((rc = gw_buf_reserve(&b->mem, env->pool, n)) < 0)
            return rc;
        memcpy(b->mem.data + b->mem.len, p, n);
        b->mem.len += n;
    }
    b->len += n;
    return 0;
}

ssize_t gw_body_read(const gw_body_t *b, uint64_t off, char *dst, size_t n)
{
    if (off >= b->len)
        return 0;
    if (n > b->len - off)
        n = (size_t)(b->len - off);
    if (b->fd < 0) {
        memcpy(dst, b->mem.data + off, n);
        return (ssize_t)n;
    }
    for (;;) {
        ssize_t r = pread(b->fd, dst, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        return r < 0 ? -errno : r;
    }
}
