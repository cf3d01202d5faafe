/*
 * srccache.c -- the kernel's cache of compiled vat sources (see
 * srccache.h).
 *
 * A kernel launches vats from a handful of distinct sources, so the
 * entries are a short array in recency order: a lookup compares lengths
 * first and whole keys only for a match, which costs far less than the
 * parse it saves, and eviction takes the last.
 */
#include "srccache.h"

#include <stdlib.h>
#include <string.h>

#include "errors.h"

/* One entry: its chunk name, source and code, one after the other. */
struct ocap__srcentry {
  size_t namelen, srclen, codelen;
  char data[];
};

static size_t entry_bytes(const ocap__srcentry_t *e) {
  return e->namelen + e->srclen + e->codelen;
}

/* Whether e is the entry of src under name. */
static int entry_is(const ocap__srcentry_t *e, const char *name, size_t namelen, const char *src,
                    size_t srclen) {
  return e->srclen == srclen && e->namelen == namelen && memcmp(e->data, name, namelen) == 0 &&
         memcmp(e->data + namelen, src, srclen) == 0;
}

/* Drops the least recently found entry. */
static void drop_last(ocap__srccache_t *c) {
  ocap__srcentry_t *e = c->e[--c->n];
  c->bytes -= entry_bytes(e);
  free(e);
  c->e[c->n] = NULL;
}

const char *ocap__srccache_find(ocap__srccache_t *c, const char *name, const char *src,
                                size_t srclen, size_t *codelen) {
  size_t namelen = strlen(name);
  for (size_t i = 0; i < c->n; i++) {
    ocap__srcentry_t *e = c->e[i];
    if (entry_is(e, name, namelen, src, srclen)) {
      memmove(&c->e[1], &c->e[0], i * sizeof c->e[0]);
      c->e[0] = e;
      *codelen = e->codelen;
      return e->data + namelen + srclen;
    }
  }
  return NULL;
}

int ocap__srccache_put(ocap__srccache_t *c, const char *name, const char *src, size_t srclen,
                       const char *code, size_t codelen) {
  size_t namelen = strlen(name), bytes = namelen + srclen + codelen;
  if (bytes > OCAP__SRCCACHE_BYTES / 4)
    return 0;
  ocap__srcentry_t *e = malloc(sizeof *e + bytes);
  if (!e)
    return OCAP_ENOMEM;
  e->namelen = namelen;
  e->srclen = srclen;
  e->codelen = codelen;
  memcpy(e->data, name, namelen);
  memcpy(e->data + namelen, src, srclen);
  memcpy(e->data + namelen + srclen, code, codelen);
  while (c->n == OCAP__SRCCACHE_ENTRIES || c->bytes + bytes > OCAP__SRCCACHE_BYTES)
    drop_last(c);
  memmove(&c->e[1], &c->e[0], c->n * sizeof c->e[0]);
  c->e[0] = e;
  c->n++;
  c->bytes += bytes;
  return 0;
}

void ocap__srccache_free(ocap__srccache_t *c) {
  while (c->n)
    drop_last(c);
}
