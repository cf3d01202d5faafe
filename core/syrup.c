/*
 * syrup.c -- the Syrup decoder and encoding pieces (syrup.h).
 */
#include "syrup.h"

#include <stdint.h>
#include <string.h>

void ocap_syrup_reader_init(ocap_syrup_reader_t *r, const char *s, size_t n) {
  r->s = s;
  r->n = n;
  r->pos = 0;
  r->depth = 0;
  r->done = 0;
  r->err = NULL;
  r->err_off = 0;
}

/* Records the first error; later calls keep answering it. */
static int fail(ocap_syrup_reader_t *r, const char *msg, size_t off) {
  r->err = msg;
  r->err_off = off;
  return -1;
}

int ocap_syrup_cmp(const char *a, size_t an, const char *b, size_t bn) {
  size_t m = an < bn ? an : bn;
  int c = memcmp(a, b, m);
  if (c != 0)
    return c;
  return an < bn ? -1 : an > bn ? 1 : 0;
}

int ocap_syrup_utf8(const char *str, size_t n) {
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0)
        lo = 0xA0; /* overlong */
      if (c == 0xED)
        hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0)
        lo = 0x90; /* overlong */
      if (c == 0xF4)
        hi = 0x8F; /* beyond U+10FFFF */
    } else {
      return 0;
    }
    if (n - i < len)
      return 0;
    if (s[i + 1] < lo || s[i + 1] > hi)
      return 0;
    for (size_t k = 2; k < len; k++)
      if (s[i + k] < 0x80 || s[i + k] > 0xBF)
        return 0;
    i += len;
  }
  return 1;
}

/*
 * Notes that a value spanning [start, end) was completed inside the
 * innermost open container, checking the canonical order of dictionary
 * keys and set members. Returns 0 or -1.
 */
static int value_done(ocap_syrup_reader_t *r, size_t start, size_t end) {
  if (r->depth == 0) {
    r->done = 1;
    return 0;
  }
  ocap_syrup_frame_t *f = &r->frames[r->depth - 1];
  int ordered = (f->kind == OCAP_SY_DICT && f->count % 2 == 0) || f->kind == OCAP_SY_SET;
  if (ordered) {
    if (f->count > 0) {
      int c = ocap_syrup_cmp(r->s + f->prev, f->prevn, r->s + start, end - start);
      int dict = f->kind == OCAP_SY_DICT;
      if (c == 0)
        return fail(r, dict ? "duplicate dictionary key" : "duplicate set member", start);
      if (c > 0)
        return fail(r,
                    dict ? "dictionary keys not in canonical order"
                         : "set members not in canonical order",
                    start);
    }
    f->prev = start;
    f->prevn = end - start;
  }
  f->count++;
  return 0;
}

/* Reads an atom that starts with digits: an integer or a length prefix. */
static int read_digits(ocap_syrup_reader_t *r, ocap_syrup_tok_t *t) {
  size_t start = r->pos, i = r->pos;
  while (i < r->n && r->s[i] >= '0' && r->s[i] <= '9')
    i++;
  if (i == r->n)
    return fail(r, "truncated input: number without its type", start);
  size_t nd = i - start;
  if (nd > 1 && r->s[start] == '0')
    return fail(r, "non-canonical number: leading zero", start);
  char tag = r->s[i];
  t->off = start;
  if (tag == '+' || tag == '-') {
    if (tag == '-' && nd == 1 && r->s[start] == '0')
      return fail(r, "non-canonical integer: negative zero", start);
    t->kind = OCAP_SY_INT;
    t->p = r->s + start;
    t->n = nd;
    t->neg = tag == '-';
    r->pos = i + 1;
    return value_done(r, start, r->pos) < 0 ? -1 : 1;
  }
  if (tag != ':' && tag != '"' && tag != '\'')
    return fail(r, "unexpected byte after a number", i);
  /* A length: checked against what remains, so no overflow and no long
   * read. */
  size_t remain = r->n - (i + 1), len = 0;
  for (size_t k = start; k < i; k++) {
    len = len * 10 + (size_t)(r->s[k] - '0');
    if (len > remain)
      return fail(r, "length exceeds the remaining input", start);
  }
  const char *p = r->s + i + 1;
  if (tag == ':') {
    t->kind = OCAP_SY_BYTES;
  } else {
    t->kind = tag == '"' ? OCAP_SY_STRING : OCAP_SY_SYMBOL;
    if (!ocap_syrup_utf8(p, len))
      return fail(r, tag == '"' ? "string is not valid UTF-8" : "symbol is not valid UTF-8", start);
  }
  t->p = p;
  t->n = len;
  r->pos = i + 1 + len;
  return value_done(r, start, r->pos) < 0 ? -1 : 1;
}

static int open_frame(ocap_syrup_reader_t *r, ocap_syrup_tok_t *t, int kind) {
  if (r->depth >= OCAP_SYRUP_MAX_DEPTH)
    return fail(r, "nested too deeply", r->pos);
  ocap_syrup_frame_t *f = &r->frames[r->depth++];
  f->kind = (unsigned char)kind;
  f->open = r->pos;
  f->count = 0;
  f->prev = f->prevn = 0;
  t->kind = kind;
  t->off = r->pos;
  r->pos++;
  return 1;
}

static int close_frame(ocap_syrup_reader_t *r, ocap_syrup_tok_t *t, int kind) {
  size_t at = r->pos;
  if (r->depth == 0 || r->frames[r->depth - 1].kind != kind)
    return fail(r, "unexpected closing byte", at);
  ocap_syrup_frame_t *f = &r->frames[r->depth - 1];
  if (kind == OCAP_SY_DICT && f->count % 2 != 0)
    return fail(r, "dictionary key without a value", at);
  if (kind == OCAP_SY_RECORD && f->count == 0)
    return fail(r, "record without a label", at);
  size_t open = f->open;
  r->depth--;
  r->pos++;
  t->kind = OCAP_SY_CLOSE;
  t->off = at;
  return value_done(r, open, r->pos) < 0 ? -1 : 1;
}

int ocap_syrup_next(ocap_syrup_reader_t *r, ocap_syrup_tok_t *t) {
  if (r->err)
    return -1;
  if (r->done) {
    if (r->pos != r->n)
      return fail(r, "trailing bytes after the value", r->pos);
    return 0;
  }
  if (r->pos >= r->n)
    return fail(r, r->depth ? "truncated input: container not closed" : "empty input", r->pos);
  t->p = NULL;
  t->n = 0;
  t->neg = 0;
  t->b = 0;
  t->d = 0;
  t->off = r->pos;
  char c = r->s[r->pos];
  switch (c) {
  case 't':
  case 'f':
    t->kind = OCAP_SY_BOOL;
    t->b = c == 't';
    r->pos++;
    return value_done(r, t->off, r->pos) < 0 ? -1 : 1;
  case 'D': {
    if (r->n - r->pos < 9)
      return fail(r, "truncated input: double needs 8 bytes", r->pos);
    const unsigned char *b = (const unsigned char *)r->s + r->pos + 1;
    uint64_t bits = 0;
    for (int k = 0; k < 8; k++)
      bits = bits << 8 | b[k];
    double d;
    memcpy(&d, &bits, sizeof d);
    if (d != d && bits != 0x7ff8000000000000ULL)
      return fail(r, "non-canonical NaN", r->pos);
    t->kind = OCAP_SY_FLOAT;
    t->d = d;
    r->pos += 9;
    return value_done(r, t->off, r->pos) < 0 ? -1 : 1;
  }
  case '[':
    return open_frame(r, t, OCAP_SY_LIST);
  case '{':
    return open_frame(r, t, OCAP_SY_DICT);
  case '#':
    return open_frame(r, t, OCAP_SY_SET);
  case '<':
    return open_frame(r, t, OCAP_SY_RECORD);
  case ']':
    return close_frame(r, t, OCAP_SY_LIST);
  case '}':
    return close_frame(r, t, OCAP_SY_DICT);
  case '$':
    return close_frame(r, t, OCAP_SY_SET);
  case '>':
    return close_frame(r, t, OCAP_SY_RECORD);
  default:
    if (c >= '0' && c <= '9')
      return read_digits(r, t);
    return fail(r, "unexpected byte", r->pos);
  }
}

int ocap_syrup_check(const char *s, size_t n, const char **err, size_t *off) {
  /* The reader's frames take about 40 KB of stack; callers that cannot
   * spare it use a reader of their own (lsyrup.c keeps one in a
   * userdata). */
  ocap_syrup_reader_t r;
  ocap_syrup_tok_t t;
  int rc;
  ocap_syrup_reader_init(&r, s, n);
  while ((rc = ocap_syrup_next(&r, &t)) == 1) {
  }
  if (rc < 0) {
    *err = r.err;
    *off = r.err_off;
    return -1;
  }
  return 0;
}

size_t ocap_syrup_put_len(size_t n, char tag, char *out) {
  char tmp[OCAP_SYRUP_NUM_MAX];
  size_t k = 0;
  do {
    tmp[k++] = (char)('0' + n % 10);
    n /= 10;
  } while (n);
  for (size_t i = 0; i < k; i++)
    out[i] = tmp[k - 1 - i];
  out[k] = tag;
  out[k + 1] = 0;
  return k + 1;
}

size_t ocap_syrup_put_int(long long v, char *out) {
  /* The magnitude as unsigned, so that LLONG_MIN does not overflow. */
  unsigned long long m = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
  char tmp[OCAP_SYRUP_NUM_MAX];
  size_t k = 0;
  do {
    tmp[k++] = (char)('0' + m % 10);
    m /= 10;
  } while (m);
  for (size_t i = 0; i < k; i++)
    out[i] = tmp[k - 1 - i];
  out[k] = v < 0 ? '-' : '+';
  out[k + 1] = 0;
  return k + 1;
}

size_t ocap_syrup_put_decimal(const char *dec, size_t n, char *out) {
  size_t i = 0;
  int neg = 0;
  if (i < n && dec[i] == '-') {
    neg = 1;
    i++;
  }
  if (i == n)
    return 0;
  for (size_t k = i; k < n; k++)
    if (dec[k] < '0' || dec[k] > '9')
      return 0;
  while (i + 1 < n && dec[i] == '0')
    i++;
  size_t len = n - i;
  memcpy(out, dec + i, len);
  if (len == 1 && dec[i] == '0')
    neg = 0;
  out[len] = neg ? '-' : '+';
  return len + 1;
}

void ocap_syrup_put_double(double d, char *out) {
  uint64_t bits;
  if (d != d)
    bits = 0x7ff8000000000000ULL;
  else
    memcpy(&bits, &d, sizeof bits);
  out[0] = 'D';
  for (int k = 0; k < 8; k++)
    out[1 + k] = (char)(bits >> (56 - 8 * k) & 0xff);
}
