/* The protocols gangway speaks. A connection embeds a gw_proto_state_t,
 * room for any one's parser state, and drives it through the operations of
 * its listener's protocol (proto.h); this list is the only place that names
 * them all. Adding a protocol: docs/ARCHITECTURE.md, "Where to add a
 * protocol or a transport". */
#ifndef GW_PROTOCOLS_H
#define GW_PROTOCOLS_H

#include "proto/http1.h" /* gw_proto_http1 */
#include "proto/uwsgi.h" /* gw_proto_uwsgi */

typedef union gw_proto_state {
    gw_http1_t http1;
    gw_uwsgi_t uwsgi;
} gw_proto_state_t;

#endif
