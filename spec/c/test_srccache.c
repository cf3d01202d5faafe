/*
 * test_srccache.c -- unit tests for core/srccache.c: a key is the exact
 * chunk name and source, the cache keeps copies, and it stays within its
 * bounds by dropping the least recently found entries, never keeping one
 * too large.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include "srccache.h"

#include "check.h"

/* Whether c holds code for src under name. */
static int holds(ocap__srccache_t *c, const char *name, const char *src, const char *code) {
  size_t len = 0;
  const char *got = ocap__srccache_find(c, name, src, strlen(src), &len);
  return got && len == strlen(code) && memcmp(got, code, len) == 0;
}

static int test_keys(void) {
  int fails = 0;
  ocap__srccache_t c = {0};
  char src[] = "return 1", code[] = "code-a";
  size_t len = 99;
  CHECK(ocap__srccache_find(&c, "=a", src, strlen(src), &len) == NULL && len == 99);
  CHECK(ocap__srccache_put(&c, "=a", src, strlen(src), code, strlen(code)) == 0);
  /* Copies: changing the caller's buffers changes nothing kept. */
  src[7] = '2';
  code[5] = 'x';
  CHECK(!holds(&c, "=a", "return 2", "code-a"));
  CHECK(holds(&c, "=a", "return 1", "code-a"));
  /* The same source under another name, another source of the same
   * length, and a prefix of it, are other keys. */
  CHECK(!holds(&c, "=b", "return 1", "code-a"));
  CHECK(!holds(&c, "=a", "return 9", "code-a"));
  CHECK(!holds(&c, "=a", "return ", "code-a"));
  CHECK(!holds(&c, "=", "areturn 1", "code-a"));
  CHECK(ocap__srccache_put(&c, "=b", "return 1", 8, "code-b", 6) == 0);
  CHECK(holds(&c, "=a", "return 1", "code-a"));
  CHECK(holds(&c, "=b", "return 1", "code-b"));
  CHECK(c.n == 2 && c.bytes == 2 * (2 + 8 + 6));
  ocap__srccache_free(&c);
  CHECK(c.n == 0 && c.bytes == 0);
  CHECK(!holds(&c, "=a", "return 1", "code-a"));
  return fails;
}

static int test_bounds(void) {
  int fails = 0;
  ocap__srccache_t c = {0};
  char name[32];
  /* One more entry than fits: the least recently found goes. */
  for (int i = 0; i <= OCAP__SRCCACHE_ENTRIES; i++) {
    snprintf(name, sizeof name, "=m%d", i);
    CHECK(ocap__srccache_put(&c, name, "x", 1, "y", 1) == 0);
    if (i == 0)
      continue;
    /* Finding m0 keeps it; m1 is then the oldest. */
    CHECK(holds(&c, "=m0", "x", "y"));
  }
  CHECK(c.n == OCAP__SRCCACHE_ENTRIES);
  CHECK(holds(&c, "=m0", "x", "y"));
  CHECK(!holds(&c, "=m1", "x", "y"));
  snprintf(name, sizeof name, "=m%d", OCAP__SRCCACHE_ENTRIES);
  CHECK(holds(&c, name, "x", "y"));
  ocap__srccache_free(&c);

  /* Bytes: four entries of a quarter (a name of 2, the code 1) fill it,
   * a fifth drops the oldest, and one larger than a quarter is not kept. */
  size_t quarter = OCAP__SRCCACHE_BYTES / 4, srclen = quarter - 3;
  char *big = malloc(quarter + 1);
  if (!big) {
    fprintf(stderr, "test_srccache: out of memory\n");
    exit(1);
  }
  memset(big, 's', quarter + 1);
  for (int i = 0; i < 5; i++) {
    snprintf(name, sizeof name, "=%d", i);
    CHECK(ocap__srccache_put(&c, name, big, srclen, "y", 1) == 0);
    CHECK(c.bytes <= OCAP__SRCCACHE_BYTES);
  }
  CHECK(c.n == 4 && c.bytes == OCAP__SRCCACHE_BYTES);
  size_t len;
  CHECK(ocap__srccache_find(&c, "=0", big, srclen, &len) == NULL);
  CHECK(ocap__srccache_find(&c, "=4", big, srclen, &len) != NULL);
  CHECK(ocap__srccache_put(&c, "=z", big, srclen + 1, "y", 1) == 0);
  CHECK(ocap__srccache_find(&c, "=z", big, srclen + 1, &len) == NULL);
  CHECK(c.n == 4);
  ocap__srccache_free(&c);
  free(big);
  return fails;
}

int main(void) {
  int fails = 0;
  fails += test_keys();
  fails += test_bounds();
  if (fails) {
    fprintf(stderr, "test_srccache: %d failure(s)\n", fails);
    return 1;
  }
  printf("test_srccache: ok\n");
  return 0;
}
