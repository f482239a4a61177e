#include "permit/error.h"

#include <stdarg.h>
#include <stdio.h>

const char *permit_strerror(int code) {
  switch (code) {
  case PERMIT_OK: return "success";
  case PERMIT_EINVAL: return "invalid argument";
  case PERMIT_ENOMEM: return "out of memory";
  case PERMIT_ECRYPTO: return "crypto library failure";
  case PERMIT_EVERIFY: return "verification failed";
  case PERMIT_EIO: return "I/O error";
  case PERMIT_ENOTFOUND: return "not found";
  case PERMIT_EEXIST: return "already exists";
  case PERMIT_EPERM: return "permission denied";
  case PERMIT_ETOOBIG: return "too big";
  case PERMIT_ECORRUPT: return "stored data corrupt";
  default: return "unknown error";
  }
}

int permit_err_set(permit_err *err, int code, const char *fmt, ...) {
  if (err != NULL) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    err->code = code;
  }
  return code;
}

void permit_err_clear(permit_err *err) {
  if (err != NULL) {
    err->code = 0;
    err->msg[0] = '\0';
  }
}
