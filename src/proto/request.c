#include "proto/request.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* An empty request: what "none" is for each field that has a sentinel. */
static void set_empty(gw_req_t *r)
{
    memset(r, 0, sizeof(*r));
    r->content_length = -1;
    r->host = -1;
    r->request_id = -1;
    r->body.fd = -1;
    r->static_fd = -1;
}

void gw_req_init(gw_req_t *r, gw_arena_pool_t *pool)
{
    set_empty(r);
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
    set_empty(r);
    r->arena = arena;
}

/* xorshift128+: ids need to be unique, not secret; one getrandom() per
 * worker thread instead of one per request. Per thread: with --threads the
 * request threads make ids while the loop's thread does (two threads
 * stepping one state could hand out one id twice); each seeds its own. */
static _Thread_local uint64_t id_state[2] = {0x9e3779b97f4a7c15ULL, 0xbf58476d1ce4e5b9ULL};

void gw_req_seed_ids(void)
{
    uint64_t seed[2];
    if (getrandom(seed, sizeof(seed), 0) == sizeof(seed) && (seed[0] | seed[1])) {
        id_state[0] = seed[0];
        id_state[1] = seed[1];
    } else {
        id_state[0] ^= (uint64_t)getpid() << 32 ^ (uint64_t)time(NULL);
    }
}

static uint64_t next_random(void)
{
    uint64_t x = id_state[0], y = id_state[1];
    id_state[0] = y;
    x ^= x << 23;
    id_state[1] = x ^ y ^ (x >> 17) ^ (y >> 26);
    return id_state[1] + y;
}

const char *gw_req_id(gw_req_t *r, const char *rb, bool generate, size_t *len)
{
    static const char hex[] = "0123456789abcdef";

    if (r->request_id >= 0 && rb) {
        const gw_header_t *h = &r->headers[r->request_id];
        const char *v = rb + h->value.off;
        bool ok = h->value.len >= 1 && h->value.len <= 128;
        for (uint32_t i = 0; ok && i < h->value.len; i++)
            ok = v[i] > 0x20 && v[i] < 0x7f;
        if (ok) {
            *len = h->value.len;
            return v;
        }
    }
    if (!r->gen_id_len && generate) {
        for (int half = 0; half < 2; half++) {
            uint64_t x = next_random();
            for (int i = 0; i < 16; i++, x >>= 4)
                r->gen_id[half * 16 + i] = hex[x & 15];
        }
        r->gen_id[32] = '\0';
        r->gen_id_len = 32;
    }
    *len = r->gen_id_len;
    return r->gen_id_len ? r->gen_id : NULL;
}

gw_span_t gw_req_host(const gw_req_t *r)
{
    if (r->authority.len)
        return r->authority;
    if (r->host >= 0 && (uint32_t)r->host < r->nheaders) /* (set before the header is added) */
        return r->headers[r->host].value;
    return (gw_span_t){0, 0};
}

static const gw_header_t *find(const gw_req_t *r, const char *rb, const char *name, size_t n)
{
    for (uint32_t i = 0; i < r->nheaders; i++) {
        const gw_header_t *h = &r->headers[i];
        if (h->name.len == n && strncasecmp(rb + h->name.off, name, n) == 0)
            return h;
    }
    return NULL;
}

static bool value_of(const gw_header_t *h, const char *rb, const char **v, size_t *vn)
{
    if (!h)
        return false;
    *v = rb + h->value.off;
    *vn = h->value.len;
    return true;
}

bool gw_req_header(const gw_req_t *r, const char *rb, const char *name, const char **v,
                   size_t *vn)
{
    size_t n = strlen(name);
    char cgi[64];

    if (r->has_cgi_fields) {
        /* RFC 3875 4.1.18: "HTTP_" and the name, upper case, '-' as '_'. */
        if (n + 5 >= sizeof(cgi))
            return false;
        memcpy(cgi, "HTTP_", 5);
        for (size_t i = 0; i < n; i++)
            cgi[5 + i] = name[i] == '-' ? '_' : (char)toupper((unsigned char)name[i]);
        name = cgi;
        n += 5;
    }
    return value_of(find(r, rb, name, n), rb, v, vn);
}

bool gw_req_var(const gw_req_t *r, const char *rb, const char *name, const char **v, size_t *vn)
{
    return r->has_cgi_fields && value_of(find(r, rb, name, strlen(name)), rb, v, vn);
}

const char *gw_req_protocol(const gw_req_t *r, char buf[GW_REQ_PROTOCOL_LEN])
{
    static const char *const http1[] = {"HTTP/1.0", "HTTP/1.1"};

    if (r->http_major == 1 && r->http_minor <= 1)
        return http1[r->http_minor];
    if (!r->is_gateway)
        return NULL;
    /* What nginx spoke to its client (HTTP/2.0, 3.0), or 0.0 when it did
     * not say: logged as it came. */
    snprintf(buf, GW_REQ_PROTOCOL_LEN, "HTTP/%u.%u", r->http_major, r->http_minor);
    return buf;
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

/* Writes out the bytes the body holds in memory after spilling to a file. */
static int flush_tail(gw_body_t *b)
{
    int rc = write_all(b->fd, b->mem.data, b->mem.len);
    if (rc == 0)
        b->mem.len = 0;
    return rc;
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
        b->mem.len = 0;
        b->fd = fd;
    }
    if (b->fd >= 0) {
        /* The memory buffer stays as a write-behind batch: a body arriving
         * in small pieces (a chunk of one byte each, a slow client) costs
         * one write() per buffer's worth, not one per piece (issue 14). */
        if (!b->mem.data && (rc = gw_buf_reserve(&b->mem, env->pool, 1)) < 0)
            return rc;
        if (b->mem.len + n > b->mem.cap && b->mem.len && (rc = flush_tail(b)) < 0)
            return rc;
        if (n >= b->mem.cap) {
            if ((rc = write_all(b->fd, p, n)) < 0) /* big piece: no copy */
                return rc;
        } else {
            memcpy(b->mem.data + b->mem.len, p, n);
            b->mem.len += n;
        }
    } else {
        if ((rc = gw_buf_reserve(&b->mem, env->pool, n)) < 0)
            return rc;
        memcpy(b->mem.data + b->mem.len, p, n);
        b->mem.len += n;
    }
    b->len += n;
    return 0;
}

int gw_body_flush(gw_body_t *b, const gw_body_env_t *env)
{
    int rc;

    if (b->fd < 0)
        return 0;
    if (b->mem.len && (rc = flush_tail(b)) < 0)
        return rc;
    gw_buf_release(&b->mem, env->pool);
    return 0;
}

ssize_t gw_body_read(const gw_body_t *b, uint64_t off, char *dst, size_t n)
{
    uint64_t in_file;
    size_t done = 0;

    if (off >= b->len)
        return 0;
    if (n > b->len - off)
        n = (size_t)(b->len - off);
    if (b->fd < 0) {
        memcpy(dst, b->mem.data + off, n);
        return (ssize_t)n;
    }
    /* The file holds the first len - mem.len bytes, mem the rest. */
    in_file = b->len - b->mem.len;
    while (off + done < in_file && done < n) {
        size_t want = n - done;
        ssize_t r;
        if (want > in_file - (off + done))
            want = (size_t)(in_file - (off + done));
        r = pread(b->fd, dst + done, want, (off_t)(off + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            return -EIO; /* the temp file is shorter than what was written */
        done += (size_t)r;
    }
    if (done < n) {
        memcpy(dst + done, b->mem.data + (off + done - in_file), n - done);
        done = n;
    }
    return (ssize_t)done;
}
