#include "permit/logging.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static permit_level min_level = PERMIT_LEVEL_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void permit_logging_set_level(permit_level level) { min_level = level; }

int permit_logging_parse_level(const char *name) {
  for (int i = 0; i < 4; i++)
    if (strcmp(name, level_names[i]) == 0) return i;
  return -1;
}

/* Appends |s| to |out| as the inside of a JSON string. */
static size_t json_escape(char *out, size_t cap, size_t pos, const char *s) {
  for (; *s != '\0' && pos + 7 < cap; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      out[pos++] = '\\';
      out[pos++] = (char)c;
    } else if (c < 0x20) {
      pos += (size_t)snprintf(out + pos, cap - pos, "\\u%04x", c);
    } else {
      out[pos++] = (char)c;
    }
  }
  return pos;
}

void permit_logf(permit_level level, const char *event, const char *fmt, ...) {
  if (level < min_level) return;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);

  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  char line[2600];
  size_t pos = (size_t)snprintf(
      line, sizeof line,
      "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\","
      "\"event\":\"",
      tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
      tm.tm_sec, ts.tv_nsec / 1000000, level_names[level]);
  pos = json_escape(line, sizeof line - 16, pos, event);
  pos += (size_t)snprintf(line + pos, sizeof line - pos, "\",\"msg\":\"");
  pos = json_escape(line, sizeof line - 8, pos, msg);
  pos += (size_t)snprintf(line + pos, sizeof line - pos, "\"}\n");
  ssize_t w = write(STDERR_FILENO, line, pos);
  (void)w;
}
