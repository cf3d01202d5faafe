/*
 * srccache.h -- the kernel's cache of compiled vat sources (internal to
 * the kernel): the code the kernel made from a module's text, kept under
 * the exact text and chunk name, so that vats launched from the same
 * sources load it instead of parsing the text again.
 *
 * Conventions:
 * 1. The cache keeps copies of the keys and the code it is given; code
 *    that ocap__srccache_find returns stays valid until the next put or
 *    free on the same cache.
 * 2. It is bounded: at most OCAP__SRCCACHE_ENTRIES entries and
 *    OCAP__SRCCACHE_BYTES bytes of names, sources and code. Putting an
 *    entry drops the least recently found ones to make room; an entry
 *    larger than a quarter of the bytes is not kept.
 * 3. A zeroed ocap__srccache_t is an empty cache. There is no global
 *    state: each kernel has its own cache, and kernels in different
 *    threads stay independent.
 * 4. Nothing here knows what the code is: that only the kernel makes it,
 *    from text, is lvat.c's business (docs/security.md).
 */
#ifndef OCAP_SRCCACHE_H
#define OCAP_SRCCACHE_H

#include <stddef.h>

#define OCAP__SRCCACHE_ENTRIES 32
#define OCAP__SRCCACHE_BYTES ((size_t)1 << 20)

typedef struct ocap__srcentry ocap__srcentry_t;

typedef struct ocap__srccache {
  ocap__srcentry_t *e[OCAP__SRCCACHE_ENTRIES]; /* the most recently found first */
  size_t n;                                    /* entries held */
  size_t bytes;                                /* their names, sources and code */
} ocap__srccache_t;

/* The code kept for src under chunk name `name`, or NULL; *codelen is
 * set to its length when found. Makes it the most recently found. */
const char *ocap__srccache_find(ocap__srccache_t *c, const char *name, const char *src,
                                size_t srclen, size_t *codelen);

/* Keeps a copy of code for src under `name`, which must not be kept
 * already. Returns 0 (also when it is too large to keep) or OCAP_ENOMEM,
 * with the cache unchanged. */
int ocap__srccache_put(ocap__srccache_t *c, const char *name, const char *src, size_t srclen,
                       const char *code, size_t codelen);

/* Drops every entry; the cache is then empty and may be used again. */
void ocap__srccache_free(ocap__srccache_t *c);

#endif
