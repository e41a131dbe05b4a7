/* Signals as loop events: a handler that only writes the signal's number to
 * a non-blocking pipe, which the loop reads. Unlike signalfd this needs no
 * blocked mask, so threads and the app's child processes (subprocess keeps
 * the mask across exec) get normal signal behaviour. One set per process. */
#ifndef GW_SIGNALS_H
#define GW_SIGNALS_H

#include <signal.h>
#include <stddef.h>

/* Installs handlers for sigs (replacing any earlier set) and returns the
 * pipe's read end, or -errno. SIGPIPE is ignored as well (see
 * gw_signals_ignore()). */
int gw_signals_open(const int *sigs, size_t n);

/* Makes sigs harmless to this process: a handler that does nothing. Not
 * SIG_IGN, because an ignored signal stays ignored across execve and the
 * app's child processes would start deaf to it; exec resets a handler to the
 * default. They leave the set of gw_signals_open() (a forked child's parent's
 * set included) and gw_signals_open()/gw_signals_close() leave them be. */
void gw_signals_ignore(const int *sigs, size_t n);

/* The next signal received, 0 when none is pending. */
int gw_signals_next(int fd);

/* Restores default handlers and closes the pipe (before exec, or at exit). */
void gw_signals_close(int fd);

/* Around fork(): the parent blocks its handled signals (old keeps the mask
 * to restore) so that the child never runs a handler that writes to the
 * parent's pipe. The child calls gw_signals_forked(): the parent's pipe is
 * closed and the mask restored, and signals that arrive until its own
 * gw_signals_open() are kept and delivered then (a SIGTERM sent to a worker
 * still importing the app is not lost). The parent calls
 * gw_signals_restore(). */
void gw_signals_block(sigset_t *old);
void gw_signals_forked(int fd, const sigset_t *old);
void gw_signals_restore(const sigset_t *old);

/* Blocks sigs (old keeps the mask to restore): at the very start of a
 * process that will handle them, so that one arriving before the handlers
 * are in place stays pending instead of taking its default action (SIGHUP
 * and SIGUSR1 kill, SIGTTIN and SIGTTOU stop). gw_signals_open() unblocks
 * the set it handles; gw_signals_restore(old) gives up on handling them. */
void gw_signals_hold(const int *sigs, size_t n, sigset_t *old);

#endif
