#include "errors.h"

const char *ocap_strerror(int code) {
  switch (code) {
  case OCAP_OK:
    return "success";
  case OCAP_ENOMEM:
    return "out of memory";
  case OCAP_EIO:
    return "input/output error";
  case OCAP_ELOCKED:
    return "database is in use by another process";
  case OCAP_ECORRUPT:
    return "database is corrupt";
  case OCAP_ENOTDB:
    return "not an ocap database";
  case OCAP_EVERSION:
    return "database has another schema version";
  case OCAP_EINVAL:
    return "invalid argument";
  case OCAP_ENOTFOUND:
    return "not found";
  case OCAP_EFATAL:
    return "vat failed fatally";
  case OCAP_EREFUSED:
    return "delivery refused";
  case OCAP_ESCRIPT:
    return "Lua code failed";
  case OCAP_ESTOPPED:
    return "host is stopped";
  default:
    return "unknown error";
  }
}
