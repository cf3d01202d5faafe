/*
 * check.h -- the C unit tests' one assertion: CHECK(cond) reports a false
 * condition with its file and line and counts it in the test's local
 * `fails`, then goes on, so that one run shows every failure.
 */
#ifndef OCAP_SPEC_CHECK_H
#define OCAP_SPEC_CHECK_H

#include <stdio.h>

/* Each test counts its own failures in a local `fails`. */
#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                     \
      fails++;                                                                                     \
    }                                                                                              \
  } while (0)

#endif
