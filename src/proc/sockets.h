/* The master's listening sockets, from the strongest source: what a
 * previous image handed over (a reload), the sockets systemd handed in
 * (LISTEN_FDS), or --http / --uwsgi bound here. */
#ifndef GW_SOCKETS_H
#define GW_SOCKETS_H

#include "config/config.h"
#include "proc/handover.h"
#include "proc/listen.h"

#include <stddef.h>

/* Opens the listeners into *ls (malloc'd, *nl of them; 127.0.0.1:8000 when
 * nothing is given; --check-config binds nothing). 0, or -1 after logging:
 * the caller closes and frees what *ls holds either way. */
int gw_sockets_open(const gw_config_t *cfg, const gw_handover_t *h, gw_listener_t **ls,
                   size_t *nl);

#endif
