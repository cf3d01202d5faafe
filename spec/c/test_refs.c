/*
 * test_refs.c -- unit tests for the references as words (core/refs.h,
 * ocap__ref_code and ocap__ref_text): every kind and every length of
 * number goes to its code and back to the same text; any text that is not
 * the canonical one of a number (a leading zero, a sign or kind unknown, a
 * character after the digits, more than 18 digits, a virtual object's
 * vref) has no code, so that no two texts share one; and the c-list key of
 * a text with no code keeps the text.
 */
#include <stdio.h>
#include <string.h>

#include "clist.h"
#include "refs.h"

#include "check.h"

static int test_round_trips(void) {
  int fails = 0;
  static const char *const kinds[] = {"ko", "kp", "o+", "o-", "p+", "p-"};
  static const unsigned kind_of[] = {REF_KO, REF_KP, REF_OE, REF_OI, REF_PE, REF_PI};
  /* Every length of number from 1 to 18 digits, at both ends of the range
   * of that length (and 0). */
  unsigned long long nums[40];
  size_t nn = 0;
  nums[nn++] = 0;
  for (unsigned long long p = 1; nn < 37; p *= 10) {
    nums[nn++] = p;
    nums[nn++] = p * 10 - 1;
  }
  for (size_t k = 0; k < 6; k++) {
    for (size_t i = 0; i < nn; i++) {
      char text[64], back[64];
      snprintf(text, sizeof text, "%s%llu", kinds[k], nums[i]);
      uint64_t w = ocap__ref_code(text);
      CHECK(w != 0);
      CHECK(REF_KIND(w) == kind_of[k]);
      CHECK(REF_NUM(w) == nums[i]);
      size_t n = ocap__ref_text(w, back);
      CHECK(n == strlen(text));
      CHECK(strcmp(back, text) == 0);
      CHECK(REF_IS_KREF(w) == (k < 2));
      CHECK(REF_IS_VREF(w) == (k >= 2));
    }
  }
  return fails;
}

static int test_no_code(void) {
  int fails = 0;
  static const char *const texts[] = {"",
                                      "k",
                                      "ko",
                                      "kx1",
                                      "o",
                                      "o*1",
                                      "o+",
                                      "ko01",
                                      "o+00",
                                      "p-012",
                                      "ko1a",
                                      "ko-1",
                                      "o+1 ",
                                      "q+1",
                                      "o+d12/3",
                                      "o+v5/1:2",
                                      "kernel",
                                      "v1",
                                      "_ o-1",
                                      "KO1",
                                      "ko+1",
                                      "ko1000000000000000000" /* 19 digits */,
                                      "kp99999999999999999999"};
  for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
    if (ocap__ref_code(texts[i]) != 0) {
      fprintf(stderr, "test_refs: '%s' has a code\n", texts[i]);
      fails++;
    }
  }
  /* The longest number with a code: 18 nines. */
  CHECK(ocap__ref_code("ko999999999999999999") != 0);
  return fails;
}

static int test_text_keys(void) {
  int fails = 0;
  ocap__ckey_t a, b, c;
  ocap__ckey(&a, "o+d12/3");
  ocap__ckey(&b, "o+d12/4");
  ocap__ckey(&c, "ko12");
  CHECK(REF_KIND(a.w) == REF_TEXT && strcmp(a.s, "o+d12/3") == 0);
  CHECK(REF_KIND(b.w) == REF_TEXT);
  CHECK(a.w != b.w);
  CHECK(c.w == REF_MAKE(REF_KO, 12));
  return fails;
}

int main(void) {
  int fails = test_round_trips() + test_no_code() + test_text_keys();
  if (fails)
    fprintf(stderr, "test_refs: %d failure(s)\n", fails);
  return fails ? 1 : 0;
}
