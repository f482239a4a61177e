/*
 * permit/logging.h - JSON-lines logs on stderr, one object per line:
 * {"ts":"2026-11-22T17:34:49.123Z","level":"info","event":"keys.created",
 *  "msg":"..."}.  |event| is a stable dotted name that tools can match;
 * |msg| is for people.
 */
#ifndef PERMIT_LOGGING_H
#define PERMIT_LOGGING_H

typedef enum permit_level {
  PERMIT_LEVEL_DEBUG = 0,
  PERMIT_LEVEL_INFO = 1,
  PERMIT_LEVEL_WARN = 2,
  PERMIT_LEVEL_ERROR = 3
} permit_level;

/* Sets the lowest level written; call once at start (default info). */
void permit_logging_set_level(permit_level level);

/* Parses "debug", "info", "warn" or "error"; -1 for anything else. */
int permit_logging_parse_level(const char *name);

/* Writes one line if |level| is enabled.  Thread safe (one write(2)). */
void permit_logf(permit_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
