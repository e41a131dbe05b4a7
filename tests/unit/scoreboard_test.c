/* Unit tests for the scoreboard a reload hands over (proc/scoreboard.c): the
 * re-executed master maps it again only when the layout is its own (the
 * same magic, layout number, slot size, slot count and extra size) and
 * refuses anything else with -EPROTO, starting a scoreboard of its own; a
 * slot read at another version's offsets would feed the accept step-back
 * and the statistics garbage. */
#include "proc/scoreboard.c"

#include "check.h"

#include <stdio.h>

enum { NSLOTS = 4, EXTRA = 256 };

/* A scoreboard as an image made it, its memfd kept (the handed-over fd). */
static int made(gw_scoreboard_t *sb)
{
    int fd;

    CHECK(gw_scoreboard_open(sb, NSLOTS, EXTRA) == 0);
    fd = dup(sb->fd);
    CHECK(fd >= 0);
    return fd;
}

static void test_its_own_layout_is_adopted_with_what_it_holds(void)
{
    gw_scoreboard_t old, sb;
    int fd = made(&old);

    atomic_store(&old.slots[2].conns, 7);
    atomic_store(&old.slots[2].accepts[1], 3);
    CHECK_INT(gw_scoreboard_adopt(&sb, fd, NSLOTS, EXTRA), 0);
    CHECK_INT(atomic_load(&sb.slots[2].conns), 7);
    CHECK_INT(atomic_load(&sb.slots[2].accepts[1]), 3);
    gw_scoreboard_close(&sb);
    gw_scoreboard_close(&old);
}

static void test_another_layout_is_refused(void)
{
    static const size_t fields[] = {offsetof(head_t, magic), offsetof(head_t, layout),
                                    offsetof(head_t, slot_size)};

    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        gw_scoreboard_t old, sb;
        int fd = made(&old);
        uint32_t v;

        /* another version's head, same size (a field moved within the slot,
         * or its meaning changed: LAYOUT) */
        memcpy(&v, (char *)(void *)old.nused + fields[i], sizeof(v));
        v++;
        memcpy((char *)(void *)old.nused + fields[i], &v, sizeof(v));
        CHECK_INT(gw_scoreboard_adopt(&sb, fd, NSLOTS, EXTRA), -EPROTO);
        CHECK(sb.fd == -1);
        close(fd);
        gw_scoreboard_close(&old);
    }
}

static void test_another_size_is_refused(void)
{
    gw_scoreboard_t old, sb;
    int fd = made(&old);
    int p[2];

    /* a slot that grew (LAYOUT 3 to 4: accepts became one per listener),
     * other slot counts or extra areas: the mapping's size differs */
    CHECK_INT(gw_scoreboard_adopt(&sb, fd, NSLOTS + 1, EXTRA), -EPROTO);
    CHECK_INT(gw_scoreboard_adopt(&sb, fd, NSLOTS, EXTRA + 8), -EPROTO);
    CHECK(ftruncate(fd, (off_t)map_size(NSLOTS, EXTRA) - 16) == 0);
    CHECK_INT(gw_scoreboard_adopt(&sb, fd, NSLOTS, EXTRA), -EPROTO);
    close(fd);
    gw_scoreboard_close(&old);
    /* not a memfd at all */
    CHECK(pipe(p) == 0);
    CHECK_INT(gw_scoreboard_adopt(&sb, p[0], NSLOTS, EXTRA), -EPROTO);
    close(p[0]);
    close(p[1]);
}

int main(void)
{
    test_its_own_layout_is_adopted_with_what_it_holds();
    test_another_layout_is_refused();
    test_another_size_is_refused();
    printf("scoreboard: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
