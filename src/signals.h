/* Signals as loop events: a handler that only writes the signal's number to
 * a non-blocking pipe, which the loop reads. Unlike signalfd this needs no
 * blocked mask, so threads and the app's child processes (subprocess keeps
 * the mask across exec) get normal signal behaviour. One set per process. */
#ifndef GW_SIGNALS_H
#define GW_SIGNALS_H

#include <stddef.h>

/* Installs handlers for sigs (replacing any earlier set) and returns the
 * pipe's read end, or -errno. SIGPIPE is ignored as well. */
int gw_signals_open(const int *sigs, size_t n);

/* The next signal received, 0 when none is pending. */
int gw_signals_next(int fd);

/* Restores default handlers and closes the pipe (a child after fork). */
void gw_signals_close(int fd);

#endif
