/*
 * errors.h -- error codes shared by every core module.
 *
 * Core C functions return 0 on success or a negative OCAP_E* code, and
 * ocap_strerror() turns a code into a short English phrase. The codes are
 * part of the public embedding API, so they are defined once, in the
 * public header, and the core takes them from there.
 */
#ifndef OCAP_ERRORS_H
#define OCAP_ERRORS_H

#include "ocap.h"

#endif
