/* Unit tests for the ini reader: lines read as uWSGI reads them, sections,
 * placeholders, includes, errors with file and line. */
#include "config/ini.c"

#include "check.h"

#include <stdlib.h>
#include <sys/stat.h>

static unsigned n_warn;
static char last_warn[512];

static void on_warn(void *user, const char *file, unsigned line, const char *msg)
{
    (void)user;
    n_warn++;
    snprintf(last_warn, sizeof(last_warn), "%s:%u: %s", file, line, msg);
}

/* Reads text as /tmp/.../name (path anchors %d and includes). */
static int read_text(gw_ini_t *ini, const char *path, const char *text, const char *section,
                     char *err, size_t errlen)
{
    gw_ini_init(ini, on_warn, NULL);
    n_warn = 0;
    last_warn[0] = '\0';
    return gw_ini_feed(ini, path, text, strlen(text), section, err, errlen);
}

static const char *value(const gw_ini_t *ini, const char *key, unsigned nth)
{
    for (size_t i = 0; i < ini->n; i++)
        if (strcmp(ini->v[i].key, key) == 0 && nth-- == 0)
            return ini->v[i].value;
    return "(none)";
}

static void test_lines_as_uwsgi_reads_them(void)
{
    gw_ini_t ini;
    char err[256];
    int rc = read_text(&ini, "/srv/site/app.ini",
                       "\xef\xbb\xbf; comment\n"
                       "# another\n"
                       "top = ignored outside a section\n"
                       "[uwsgi]\n"
                       "  module = app:application  \r\n"
                       "env = A=1 ;not a comment\n"
                       "env = B=#kept\n"
                       "key: value\n"
                       "master\n"
                       "vacuum =\n"
                       "empty=\n"
                       "\n"
                       "[other]\n"
                       "workers = 9\n"
                       "[gangway]\n"
                       "workers = 2\n",
                       NULL, err, sizeof(err));
    CHECK_INT(rc, 0);
    CHECK_INT(ini.n, 8);
    CHECK_STR(value(&ini, "module", 0), "app:application");
    CHECK_STR(value(&ini, "env", 0), "A=1 ;not a comment");
    CHECK_STR(value(&ini, "env", 1), "B=#kept");
    CHECK_STR(value(&ini, "key: value", 0), ""); /* ':' is no separator */
    CHECK_STR(value(&ini, "master", 0), "");
    CHECK_STR(value(&ini, "vacuum", 0), "");
    CHECK_STR(value(&ini, "workers", 0), "2");  /* [gangway] read, [other] not */
    CHECK_INT(ini.v[0].line, 5);
    CHECK_STR(ini.v[0].file, "/srv/site/app.ini");
    gw_ini_dispose(&ini);
}

static void test_named_section_only(void)
{
    gw_ini_t ini;
    char err[256];
    CHECK_INT(read_text(&ini, "/x.ini", "[uwsgi]\na = 1\n[prod]\nb = 2\n", "prod", err,
                        sizeof(err)), 0);
    CHECK_INT(ini.n, 1);
    CHECK_STR(value(&ini, "b", 0), "2");
    gw_ini_dispose(&ini);
}

static void test_long_line(void)
{
    gw_ini_t ini;
    char err[256], *text = malloc(5000), *want = malloc(5000);
    memset(want, 'v', 4000);
    want[4000] = '\0';
    snprintf(text, 5000, "[uwsgi]\nenv = X=%s\n", want);
    CHECK_INT(read_text(&ini, "/x.ini", text, NULL, err, sizeof(err)), 0);
    CHECK_INT(strlen(value(&ini, "env", 0)), 4002);
    gw_ini_dispose(&ini);
    free(text);
    free(want);
}

static void test_placeholders(void)
{
    gw_ini_t ini;
    char err[256], want[64];
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);

    setenv("GW_INI_TEST", "from-env", 1);
    unsetenv("GW_INI_UNSET");
    CHECK_INT(read_text(&ini, "/srv/mysite/deploy/site.ini",
                        "[uwsgi]\n"
                        "project = mysite\n"
                        "project = second\n"
                        "module = %(project).wsgi:application\n"
                        "dirs = %d|%p|%n|%x|%c\n"
                        "math = %(%k + 1) %(2 * 3 - 1) %(7 / 2) %(1 / 0)\n"
                        "env = $(GW_INI_TEST) %%(project) 100%\n"
                        "nested = %(%(which))\n"
                        "which = project\n"
                        "later = %(which)\n"
                        "unknown = %(nothing) $(GW_INI_UNSET)\n",
                        NULL, err, sizeof(err)), 0);
    CHECK_STR(value(&ini, "module", 0), "mysite.wsgi:application"); /* the first value */
    CHECK(ini.v[0].is_referenced);
    CHECK(!ini.v[1].is_referenced);
    CHECK_STR(value(&ini, "dirs", 0), "/srv/mysite/deploy/|/srv/mysite/deploy/site.ini|site|"
                                      "site.ini|deploy");
    snprintf(want, sizeof(want), "%ld 5 3 %%(1 / 0)", (cpus > 0 ? cpus : 1) + 1);
    CHECK_STR(value(&ini, "math", 0), want);
    CHECK_STR(value(&ini, "env", 0), "from-env %(project) 100%");
    /* %(which) is not defined yet on the "nested" line: left as written. */
    CHECK_STR(value(&ini, "nested", 0), "%(%(which))");
    CHECK_STR(value(&ini, "later", 0), "project");
    CHECK_STR(value(&ini, "unknown", 0), "%(nothing) $(GW_INI_UNSET)");
    CHECK_INT(n_warn, 5); /* 1/0, %(which), %(%(which)), %(nothing), $(GW_INI_UNSET) */
    CHECK(strstr(last_warn, "site.ini:11: environment variable $(GW_INI_UNSET) is not set"));
    gw_ini_dispose(&ini);
}

/* log-format's own %(fields) are no placeholders: left as written, quietly;
 * a defined key still expands there, as in uWSGI. */
static void test_literal_keys(void)
{
    static const char *const literal[] = {"log-format", NULL};
    gw_ini_t ini;
    char err[256];

    gw_ini_init(&ini, on_warn, NULL);
    ini.literal_keys = literal;
    n_warn = 0;
    const char *text = "[uwsgi]\nsite = shop\n"
                       "log-format = %(site) %(addr) \"%(method) %(uri)\"\n"
                       "other = %(addr)\n";
    CHECK_INT(gw_ini_feed(&ini, "/l.ini", text, strlen(text), NULL, err, sizeof(err)), 0);
    CHECK_STR(value(&ini, "log-format", 0), "shop %(addr) \"%(method) %(uri)\"");
    CHECK_INT(n_warn, 1); /* only for "other" */
    gw_ini_dispose(&ini);
}

static void test_errors_name_file_and_line(void)
{
    gw_ini_t ini;
    char err[256];

    CHECK_INT(read_text(&ini, "/e.ini", "[uwsgi]\na = 1\n[broken\n", NULL, err, sizeof(err)),
              -EINVAL);
    CHECK_STR(err, "/e.ini:3: a section header needs its closing ']'");
    gw_ini_dispose(&ini);
    CHECK_INT(read_text(&ini, "/e.ini", "[uwsgi]\n = 1\n", NULL, err, sizeof(err)), -EINVAL);
    CHECK_STR(err, "/e.ini:2: a line needs a name before its '='");
    gw_ini_dispose(&ini);
    CHECK_INT(read_text(&ini, "/e.ini", "[uwsgi]\na = \x01\n", NULL, err, sizeof(err)), -EINVAL);
    CHECK_STR(err, "/e.ini:2: control character 0x01 (is this a text file?)");
    gw_ini_dispose(&ini);
    CHECK_INT(gw_ini_feed(&ini, "/e.ini", "[uwsgi]\na\0b\n", 11, NULL, err, sizeof(err)),
              -EINVAL);
    CHECK_STR(err, "/e.ini:2: control character 0x00 (is this a text file?)");
    gw_ini_dispose(&ini);
    gw_ini_init(&ini, NULL, NULL);
    CHECK_INT(gw_ini_load(&ini, "/nonexistent/gw.ini", err, sizeof(err)), -ENOENT);
    CHECK_STR(err, "/nonexistent/gw.ini: cannot read: No such file or directory");
    gw_ini_dispose(&ini);
}

static void put(const char *dir, const char *name, const char *text)
{
    char p[256];
    FILE *f;
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    f = fopen(p, "w");
    CHECK(f != NULL);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void test_includes(void)
{
    char dir[] = "/tmp/gw-ini-test-XXXXXX", spec[256], err[512], cwd[4096];
    gw_ini_t ini;

    CHECK(mkdtemp(dir) != NULL);
    CHECK(getcwd(cwd, sizeof(cwd)) != NULL);
    mkdir(strcat(strcpy(spec, dir), "/sub"), 0700);
    put(dir, "main.ini", "[uwsgi]\nbase = 1\nini = sub/inc.ini\nafter = %(from-inc)\n"
                         "ini = sub/inc.ini:extra\n");
    put(dir, "sub/inc.ini", "[uwsgi]\nfrom-inc = %(base)+%n\n[extra]\nx = %d\n");
    put(dir, "loop.ini", "[uwsgi]\nini = loop.ini\n");

    /* Relative includes are found next to the including file, wherever
     * gangway runs. */
    CHECK(chdir("/") == 0);
    gw_ini_init(&ini, on_warn, NULL);
    snprintf(spec, sizeof(spec), "%s/main.ini", dir);
    CHECK_INT(gw_ini_load(&ini, spec, err, sizeof(err)), 0);
    CHECK_STR(value(&ini, "from-inc", 0), "1+inc");
    CHECK_STR(value(&ini, "after", 0), "1+inc");
    snprintf(spec, sizeof(spec), "%s/sub/", dir);
    CHECK_STR(value(&ini, "x", 0), spec);
    gw_ini_dispose(&ini);

    gw_ini_init(&ini, on_warn, NULL);
    snprintf(spec, sizeof(spec), "%s/main.ini:extra", dir); /* nothing in [extra] there */
    CHECK_INT(gw_ini_load(&ini, spec, err, sizeof(err)), 0);
    CHECK_INT(ini.n, 0);
    gw_ini_dispose(&ini);

    gw_ini_init(&ini, on_warn, NULL);
    snprintf(spec, sizeof(spec), "%s/loop.ini", dir);
    CHECK_INT(gw_ini_load(&ini, spec, err, sizeof(err)), -ELOOP);
    CHECK(strstr(err, "loop.ini:2: includes nested more than 10 deep") != NULL);
    gw_ini_dispose(&ini);
    CHECK(chdir(cwd) == 0);

    snprintf(spec, sizeof(spec), "rm -rf '%s'", dir);
    CHECK(system(spec) == 0);
}

int main(void)
{
    test_lines_as_uwsgi_reads_them();
    test_named_section_only();
    test_long_line();
    test_placeholders();
    test_literal_keys();
    test_errors_name_file_and_line();
    test_includes();
    printf("ini_test: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
