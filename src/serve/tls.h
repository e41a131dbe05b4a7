/* TLS on gangway's own listeners (--https): the OpenSSL contexts (one per
 * --https socket, one per --tls-sni name), loaded by the master before it
 * drops privileges and inherited by the workers through fork(); session
 * ticket keys every worker derives alike (a resumed session works on any
 * worker); and the TLS transport (transport.h) a connection of such a
 * socket gets in gw_conn_open(). conn.c, the protocols, static files and
 * the WSGI bridge see only the transport's operations, plus the environ
 * keys below.
 *
 * Ownership: gw_tls_t owns every SSL_CTX; a listener borrows its context
 * (gw_listener_t.tls) for the process's lifetime. A connection owns its SSL
 * object and its socket through the transport (freed by its close()).
 * A reload re-executes the master, which loads every certificate again:
 * the old workers finish with the old contexts, the new ones serve the new
 * certificates; a certificate that does not load fails the reload's check,
 * and the old generation goes on serving. Nothing here runs Python. */
#ifndef GW_TLS_H
#define GW_TLS_H

#include "config/config.h"
#include "proc/listen.h"
#include "serve/transport.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct gw_tls gw_tls_t;
typedef struct gw_tls_ctx gw_tls_ctx_t; /* one --https socket's context */

/* Loads the certificates of every --https socket and --tls-sni name, checks
 * each key against its certificate, and gives each listener whose `https`
 * names an --https option its context (ls[i].tls; its url becomes
 * https://). Warns (one line) about a key file others may read and an
 * expired certificate; says once whether kernel TLS can carry sendfile.
 * Returns the contexts (NULL when there is no --https: nothing to free), or
 * sets *failed after one line naming the option, the file and the reason. */
gw_tls_t *gw_tls_new(const gw_config_t *cfg, gw_listener_t *ls, size_t nl, bool *failed);
void gw_tls_free(gw_tls_t *tls);

/* The address part of an --https value ("ADDR,CERT,KEY..."), copied into
 * buf (n bytes); false when it does not fit or there is no comma. */
bool gw_tls_https_addr(const char *spec, char *buf, size_t n);

/* Makes t the TLS transport of the accepted socket fd (owned from now on,
 * closed by t's close()), server side of ctx; the handshake happens in its
 * first read. 0, or -ENOMEM (fd is not closed then). */
int gw_tls_open(gw_transport_t *t, int fd, const gw_tls_ctx_t *ctx);

/* The request environ's TLS keys for a connection through t (nothing for
 * another transport): SSL_PROTOCOL, SSL_CIPHER, SSL_SESSION_RESUMED,
 * SSL_TLS_SNI, and with client certificates SSL_CLIENT_VERIFY,
 * SSL_CLIENT_S_DN, SSL_CLIENT_I_DN, SSL_CLIENT_M_SERIAL, SSL_CLIENT_V_START,
 * SSL_CLIENT_V_END, SSL_CLIENT_CERT and uWSGI's HTTPS_DN and HTTPS_CC. each
 * is called once per key (value: val, vlen bytes, not NUL-terminated
 * necessarily); it returns 0 or -1, which stops the walk and is returned.
 * The client certificate's keys are formatted once per connection. */
typedef int (*gw_tls_var_cb)(void *arg, const char *key, const char *val, size_t vlen);
int gw_tls_each_var(gw_transport_t *t, gw_tls_var_cb each, void *arg);

/* The master's tick: moves the session ticket keys on when their hour is
 * over and forgets the old ones (workers do the same when they next issue
 * or read a ticket). */
void gw_tls_tick(void);

#endif
