#include "config/ini.h"

#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_FILE (1u << 20)   /* an ini file larger than this is a mistake */
#define MAX_VALUE (64u << 10) /* a value after expansion */
#define MAX_NEST 8            /* %( %( ... ) ) */
#define MAX_INCLUDES 10       /* ini = ... chains (and loops) */

/* A growing string; on failure it stays failed and the caller reports. */
typedef struct sb {
    char *p;
    size_t len, cap;
    bool is_failed;
} sb_t;

static void sb_add(sb_t *b, const char *s, size_t n)
{
    if (b->is_failed)
        return;
    if (b->len + n + 1 > MAX_VALUE) {
        b->is_failed = true;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->is_failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_adds(sb_t *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

/* Where the file being read lives, for %d %p %n %c %x and includes. */
typedef struct file_ctx {
    const char *name; /* as given */
    char abs[PATH_MAX];
    const char *section; /* NULL: uwsgi and gangway */
} file_ctx_t;

typedef struct error {
    char *buf;
    size_t len;
} err_t;

static void fail(err_t *e, const file_ctx_t *f, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail(err_t *e, const file_ctx_t *f, unsigned line, const char *fmt, ...)
{
    va_list ap;
    int n = line ? snprintf(e->buf, e->len, "%s:%u: ", f->name, line)
                 : snprintf(e->buf, e->len, "%s: ", f->name);
    if (n < 0 || (size_t)n >= e->len)
        return;
    va_start(ap, fmt);
    vsnprintf(e->buf + n, e->len - (size_t)n, fmt, ap);
    va_end(ap);
}

void gw_ini_init(gw_ini_t *ini, gw_ini_warn_cb *warn, void *user)
{
    memset(ini, 0, sizeof(*ini));
    ini->warn = warn;
    ini->user = user;
}

void gw_ini_dispose(gw_ini_t *ini)
{
    if (!ini)
        return;
    for (size_t i = 0; i < ini->_nstrs; i++)
        free(ini->_strs[i]);
    free(ini->_strs);
    free(ini->v);
    memset(ini, 0, sizeof(*ini));
}

/* Takes ownership of s (NULL stays NULL: the caller reports ENOMEM). */
static char *keep(gw_ini_t *ini, char *s)
{
    if (!s)
        return NULL;
    if (ini->_nstrs == ini->_capstrs) {
        size_t cap = ini->_capstrs ? ini->_capstrs * 2 : 32;
        char **v = realloc(ini->_strs, cap * sizeof(*v));
        if (!v) {
            free(s);
            return NULL;
        }
        ini->_strs = v;
        ini->_capstrs = cap;
    }
    ini->_strs[ini->_nstrs++] = s;
    return s;
}

static char *keep_n(gw_ini_t *ini, const char *s, size_t n)
{
    return keep(ini, strndup(s, n));
}

static void warn(gw_ini_t *ini, const file_ctx_t *f, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void warn(gw_ini_t *ini, const file_ctx_t *f, unsigned line, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (!ini->warn || ini->_is_quiet)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ini->warn(ini->user, f->name, line, msg);
}

/* ---- placeholders ---- */

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

/* Appends the value of magic variable c, or returns false if c is none. */
static bool magic(sb_t *out, const file_ctx_t *f, char c)
{
    char tmp[PATH_MAX];
    const char *slash = strrchr(f->abs, '/');
    size_t dirlen = slash ? (size_t)(slash - f->abs) : 0;

    switch (c) {
    case 'd': /* the file's directory, with a trailing slash as uWSGI has it */
        sb_add(out, f->abs, dirlen);
        sb_add(out, "/", 1);
        return true;
    case 'p':
        sb_adds(out, f->abs);
        return true;
    case 'x':
        sb_adds(out, base_name(f->abs));
        return true;
    case 'n': {
        const char *b = base_name(f->abs), *dot = strrchr(b, '.');
        sb_add(out, b, dot && dot != b ? (size_t)(dot - b) : strlen(b));
        return true;
    }
    case 'c': /* the name of the file's directory */
        snprintf(tmp, sizeof(tmp), "%.*s", (int)dirlen, f->abs);
        sb_adds(out, base_name(tmp));
        return true;
    case 'k': {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        snprintf(tmp, sizeof(tmp), "%ld", n > 0 ? n : 1);
        sb_adds(out, tmp);
        return true;
    }
    case 'h':
        if (gethostname(tmp, sizeof(tmp)) < 0)
            tmp[0] = '\0';
        tmp[sizeof(tmp) - 1] = '\0';
        sb_adds(out, tmp);
        return true;
    case 'u':
    case 'g':
        snprintf(tmp, sizeof(tmp), "%u", c == 'u' ? (unsigned)getuid() : (unsigned)getgid());
        sb_adds(out, tmp);
        return true;
    case 'U': {
        struct passwd *pw = getpwuid(getuid());
        if (pw)
            sb_adds(out, pw->pw_name);
        else
            magic(out, f, 'u');
        return true;
    }
    case 'G': {
        struct group *gr = getgrgid(getgid());
        if (gr)
            sb_adds(out, gr->gr_name);
        else
            magic(out, f, 'g');
        return true;
    }
    case '%':
        sb_add(out, "%", 1);
        return true;
    }
    return false;
}

static bool parse_int(const char **p, long long *v)
{
    char *end;
    while (**p == ' ' || **p == '\t')
        (*p)++;
    if (!((**p >= '0' && **p <= '9') || (**p == '-' && (*p)[1] >= '0' && (*p)[1] <= '9')))
        return false;
    errno = 0;
    *v = strtoll(*p, &end, 10);
    if (errno)
        return false;
    *p = end;
    return true;
}

/* uWSGI's %(a + b): integers joined by + - * /, left to right. True with
 * the result in *v when s is such an expression (and has an operator). */
static bool arithmetic(const char *s, long long *v)
{
    const char *p = s;
    long long acc, rhs;
    bool has_op = false;

    if (!parse_int(&p, &acc))
        return false;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            return has_op && (*v = acc, true);
        char op = *p++;
        if (!strchr("+-*/", op) || !parse_int(&p, &rhs))
            return false;
        if (op == '+' ? __builtin_add_overflow(acc, rhs, &acc)
            : op == '-' ? __builtin_sub_overflow(acc, rhs, &acc)
            : op == '*' ? __builtin_mul_overflow(acc, rhs, &acc)
                        : (rhs == 0 || (acc == LLONG_MIN && rhs == -1)))
            return false;
        if (op == '/')
            acc /= rhs;
        has_op = true;
    }
}

/* The first entry named key read so far (uWSGI's lookup order). */
static gw_ini_entry_t *lookup(gw_ini_t *ini, const char *key)
{
    for (size_t i = 0; i < ini->n; i++)
        if (strcmp(ini->v[i].key, key) == 0)
            return &ini->v[i];
    return NULL;
}

/* Index just past the ')' closing the '(' at s[open], or 0 if none. */
static size_t closing(const char *s, size_t n, size_t open)
{
    unsigned depth = 0;
    for (size_t i = open; i < n; i++) {
        if (s[i] == '(')
            depth++;
        else if (s[i] == ')' && --depth == 0)
            return i + 1;
    }
    return 0;
}

static void expand(gw_ini_t *ini, const file_ctx_t *f, unsigned line, const char *s, size_t n,
                   sb_t *out, unsigned nest)
{
    size_t i = 0;

    while (i < n && !out->is_failed) {
        size_t start = i, end;
        while (i < n && s[i] != '%' && s[i] != '$')
            i++;
        sb_add(out, s + start, i - start);
        if (i >= n)
            break;
        if (s[i] == '$' && i + 1 < n && s[i + 1] == '(' && (end = closing(s, n, i + 1))) {
            char name[256];
            const char *v;
            snprintf(name, sizeof(name), "%.*s", (int)(end - i - 3), s + i + 2);
            if ((v = getenv(name))) {
                sb_adds(out, v);
            } else {
                warn(ini, f, line, "environment variable $(%s) is not set; left as written", name);
                sb_add(out, s + i, end - i);
            }
            i = end;
        } else if (s[i] == '%' && i + 1 < n && s[i + 1] == '(' && (end = closing(s, n, i + 1))) {
            sb_t name = {0};
            long long v;
            gw_ini_entry_t *e;
            if (nest >= MAX_NEST) {
                out->is_failed = true;
                break;
            }
            expand(ini, f, line, s + i + 2, end - i - 3, &name, nest + 1);
            if (name.is_failed) {
                out->is_failed = true;
            } else if (name.p && arithmetic(name.p, &v)) {
                char num[32];
                snprintf(num, sizeof(num), "%lld", v);
                sb_adds(out, num);
            } else if (name.p && (e = lookup(ini, name.p))) {
                e->is_referenced = true;
                sb_adds(out, e->value);
            } else {
                warn(ini, f, line, "placeholder %%(%s) names nothing defined before it; left as "
                     "written", name.p ? name.p : "");
                sb_add(out, s + i, end - i);
            }
            free(name.p);
            i = end;
        } else if (s[i] == '%' && i + 1 < n && magic(out, f, s[i + 1])) {
            i += 2;
        } else {
            sb_add(out, s + i, 1);
            i++;
        }
    }
}

/* ---- lines ---- */

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

static int add_entry(gw_ini_t *ini, const char *file, unsigned line, char *key, char *value)
{
    if (!key || !value)
        return -ENOMEM;
    if (ini->n == ini->_cap) {
        size_t cap = ini->_cap ? ini->_cap * 2 : 32;
        gw_ini_entry_t *v = realloc(ini->v, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        ini->v = v;
        ini->_cap = cap;
    }
    ini->v[ini->n++] = (gw_ini_entry_t){key, value, file, line, false};
    return 0;
}

static int load(gw_ini_t *ini, const char *spec, const file_ctx_t *from, err_t *e);

/* `ini = other.ini`: relative to the including file first (what a config
 * next to its includes means), then to the working directory (uWSGI). */
static int include(gw_ini_t *ini, const file_ctx_t *f, unsigned line, const char *spec,
                   err_t *e)
{
    char path[PATH_MAX];
    const char *slash = strrchr(f->abs, '/');

    if (ini->_depth >= MAX_INCLUDES) {
        fail(e, f, line, "includes nested more than %d deep (a loop?)", MAX_INCLUDES);
        return -ELOOP;
    }
    if (spec[0] != '/' && slash &&
        snprintf(path, sizeof(path), "%.*s/%s", (int)(slash - f->abs), f->abs, spec) <
            (int)sizeof(path)) {
        char probe[PATH_MAX];
        const char *colon = strrchr(path, ':');
        snprintf(probe, sizeof(probe), "%s", path);
        if (access(probe, R_OK) != 0 && colon && !strchr(colon, '/'))
            probe[colon - path] = '\0'; /* other.ini:section */
        if (access(probe, R_OK) == 0)
            spec = path;
    }
    ini->_depth++;
    int rc = load(ini, spec, f, e);
    ini->_depth--;
    if (rc < 0 && rc != -ELOOP) {
        /* "a.ini:3: in 'ini = b.ini': b.ini: cannot read: ..." */
        char inner[512];
        snprintf(inner, sizeof(inner), "%s", e->buf);
        fail(e, f, line, "in 'ini = %s': %s", spec, inner);
    }
    return rc;
}

static int feed(gw_ini_t *ini, const file_ctx_t *f, const char *data, size_t len, err_t *e)
{
    const char *file = keep(ini, strdup(f->name));
    bool active = false; /* inside a section we read */
    unsigned line = 0;
    size_t pos = 0;

    if (!file)
        return -ENOMEM;
    if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0)
        pos = 3;
    while (pos < len) {
        const char *l = data + pos, *nl = memchr(l, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - l) : len - pos;
        pos += n + (nl ? 1 : 0);
        line++;
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)l[i];
            if ((c < 0x20 && c != '\t' && !(c == '\r' && i + 1 == n)) || c == 0x7f) {
                fail(e, f, line, "control character 0x%02x (is this a text file?)", c);
                return -EINVAL;
            }
        }
        while (n && is_space(*l))
            l++, n--;
        while (n && is_space(l[n - 1]))
            n--;
        if (!n || *l == ';' || *l == '#')
            continue;
        if (*l == '[') {
            const char *name = l + 1;
            size_t nn;
            if (l[n - 1] != ']') {
                fail(e, f, line, "a section header needs its closing ']'");
                return -EINVAL;
            }
            nn = n - 2;
            active = f->section ? strlen(f->section) == nn && memcmp(name, f->section, nn) == 0
                                : (nn == 5 && memcmp(name, "uwsgi", 5) == 0) ||
                                      (nn == 7 && memcmp(name, "gangway", 7) == 0);
            continue;
        }
        if (!active)
            continue;
        const char *eq = memchr(l, '=', n);
        size_t kn = eq ? (size_t)(eq - l) : n;
        const char *v = eq ? eq + 1 : l + n;
        size_t vn = eq ? n - kn - 1 : 0;
        while (kn && is_space(l[kn - 1]))
            kn--;
        while (vn && is_space(*v))
            v++, vn--;
        if (!kn) {
            fail(e, f, line, "a line needs a name before its '='");
            return -EINVAL;
        }
        sb_t val = {0};
        ini->_is_quiet = false;
        for (const char *const *q = ini->literal_keys; q && *q && !ini->_is_quiet; q++)
            ini->_is_quiet = strlen(*q) == kn && memcmp(*q, l, kn) == 0;
        expand(ini, f, line, v, vn, &val, 0);
        ini->_is_quiet = false;
        if (val.is_failed) {
            free(val.p);
            fail(e, f, line, "the value is longer than %u bytes, or its placeholders nest "
                 "more than %d deep", MAX_VALUE, MAX_NEST);
            return -EINVAL;
        }
        char *value = keep(ini, val.p ? val.p : strdup(""));
        char *key = keep_n(ini, l, kn);
        if (key && value && strcmp(key, "ini") == 0) {
            int rc = include(ini, f, line, value, e);
            if (rc)
                return rc;
            continue;
        }
        if (add_entry(ini, file, line, key, value) < 0) {
            fail(e, f, line, "out of memory");
            return -ENOMEM;
        }
    }
    return 0;
}

static void init_ctx(file_ctx_t *f, const char *name, const char *section)
{
    f->name = name;
    f->section = section;
    if (realpath(name, f->abs))
        return;
    if (name[0] == '/' || !getcwd(f->abs, sizeof(f->abs)) ||
        strlen(f->abs) + strlen(name) + 2 > sizeof(f->abs))
        snprintf(f->abs, sizeof(f->abs), "%s", name);
    else
        strcat(strcat(f->abs, "/"), name);
}

int gw_ini_feed(gw_ini_t *ini, const char *path, const char *data, size_t len,
                const char *section, char *err, size_t errlen)
{
    file_ctx_t f;
    err_t e = {err, errlen};

    if (errlen)
        err[0] = '\0';
    init_ctx(&f, path, section);
    return feed(ini, &f, data, len, &e);
}

static int load(gw_ini_t *ini, const char *spec, const file_ctx_t *from, err_t *e)
{
    char path[PATH_MAX], *section = NULL, *data = NULL;
    file_ctx_t f;
    FILE *fp;
    size_t len;
    int rc;

    if (snprintf(path, sizeof(path), "%s", spec) >= (int)sizeof(path)) {
        init_ctx(&f, "ini", NULL);
        fail(e, from ? from : &f, 0, "the path '%.40s...' is too long", spec);
        return -ENAMETOOLONG;
    }
    /* PATH:SECTION, unless PATH itself names a file. */
    char *colon = strrchr(path, ':');
    if (colon && !strchr(colon, '/') && access(path, F_OK) != 0) {
        *colon = '\0';
        section = colon + 1;
    }
    init_ctx(&f, path, section && *section ? section : NULL);
    if (!(fp = fopen(path, "rb"))) {
        rc = -errno;
        fail(e, &f, 0, "cannot read: %s", strerror(-rc));
        return rc;
    }
    if (!(data = malloc(MAX_FILE + 1))) {
        fclose(fp);
        fail(e, &f, 0, "out of memory");
        return -ENOMEM;
    }
    len = fread(data, 1, MAX_FILE + 1, fp);
    if (ferror(fp)) {
        rc = -EIO;
        fail(e, &f, 0, "cannot read: %s", strerror(errno));
    } else if (len > MAX_FILE) {
        rc = -EFBIG;
        fail(e, &f, 0, "larger than %u bytes: not a configuration file", MAX_FILE);
    } else {
        rc = feed(ini, &f, data, len, e);
    }
    free(data);
    fclose(fp);
    return rc;
}

int gw_ini_load(gw_ini_t *ini, const char *spec, char *err, size_t errlen)
{
    err_t e = {err, errlen};

    if (errlen)
        err[0] = '\0';
    return load(ini, spec, NULL, &e);
}
