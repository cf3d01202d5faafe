/*
 * smallcaps.c -- the text side of smallcaps in plain C; see smallcaps.h.
 *
 * Every rule here mirrors one in lua/ocap/marshal.lua, the reference
 * codec, which spec/smallcaps_spec.lua compares with this one on many
 * random values: a difference is a bug in one of the two.
 */
#include "smallcaps.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hex.h"

/* The smallest positive normal double. */
#define MIN_NORMAL 2.2250738585072014e-308

/* ---- numbers ---- */

/* Whether the decimal text s reads back as x. */
static int reads_back(const char *s, double x) {
  return strtod(s, NULL) == x;
}

/*
 * For a power of two the interval of decimals that read back as x is
 * lopsided, so the 16-digit decimal nearest to x (in s, as "%.15e" writes
 * it) may not read back while its neighbour on the far side does. Writes
 * that neighbour to s and returns 1 when it reads back.
 */
static int far_neighbour16(char *s, double x) {
  char digits[17];
  digits[0] = s[0];
  memcpy(digits + 1, s + 2, 15);
  digits[16] = '\0';
  const char *exp = s + 17; /* "e+21" */
  long long m = strtoll(digits, NULL, 10);
  m = strtod(s, NULL) < x ? m + 1 : m - 1;
  if (m >= 10000000000000000LL || m < 1000000000000000LL)
    return 0;
  char ds[24], cand[80];
  snprintf(ds, sizeof ds, "%lld", m);
  snprintf(cand, sizeof cand, "%c.%se%s", ds[0], ds + 1, exp + 1);
  if (!reads_back(cand, x))
    return 0;
  strcpy(s, cand);
  return 1;
}

/*
 * The shortest decimal that reads back as x > 0 (the nearest one when
 * there are several): its digits without trailing zeros go to digits
 * (zero-terminated), its exponent in scientific notation is returned.
 */
static int shortest(double x, char *digits) {
  char s[48];
  if (x >= MIN_NORMAL) {
    /* Any decimal of at most 15 digits that reads back as x is the nearest
     * 15-digit decimal, so one try covers all lengths up to 15. */
    snprintf(s, sizeof s, "%.14e", x);
    if (!reads_back(s, x)) {
      snprintf(s, sizeof s, "%.15e", x);
      if (!reads_back(s, x)) {
        int e2;
        int pow2 = frexp(x, &e2) == 0.5;
        if (!(pow2 && far_neighbour16(s, x)))
          snprintf(s, sizeof s, "%.16e", x);
      }
    }
  } else {
    for (int p = 0; p <= 16; p++) {
      snprintf(s, sizeof s, "%.*e", p, x);
      if (reads_back(s, x))
        break;
    }
  }
  size_t k = 0;
  const char *q = s;
  for (; *q && *q != 'e'; q++)
    if (*q != '.')
      digits[k++] = *q;
  while (k > 1 && digits[k - 1] == '0')
    k--;
  digits[k] = '\0';
  return atoi(q + 1);
}

/* Two decimal digits of each number below 100, for ocap_sc_format_int. */
static const char digit_pairs[] = "00010203040506070809"
                                  "10111213141516171819"
                                  "20212223242526272829"
                                  "30313233343536373839"
                                  "40414243444546474849"
                                  "50515253545556575859"
                                  "60616263646566676869"
                                  "70717273747576777879"
                                  "80818283848586878889"
                                  "90919293949596979899";

/* Writes the two digits of r (below 100) at o. */
static void put_pair(char *o, unsigned r) {
  o[0] = digit_pairs[2 * r];
  o[1] = digit_pairs[2 * r + 1];
}

size_t ocap_sc_format_int(long long v, char *out) {
  unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
  char *o = out;
  if (v < 0)
    *o++ = '-';
  /* Most numbers written are below 10,000 (vpids, slots, counters): they
   * take one or two pairs in 32-bit arithmetic. */
  if (u < 100) {
    if (u < 10) {
      *o = (char)('0' + u);
      return (size_t)(o + 1 - out);
    }
    put_pair(o, (unsigned)u);
    return (size_t)(o + 2 - out);
  }
  if (u < 10000) {
    unsigned x = (unsigned)u, hi = x / 100;
    if (hi < 10)
      *o++ = (char)('0' + hi);
    else {
      put_pair(o, hi);
      o += 2;
    }
    put_pair(o, x % 100);
    return (size_t)(o + 2 - out);
  }
  size_t digits = 5;
  for (unsigned long long t = u / 100000; t > 0; t /= 10)
    digits++;
  char *p = o + digits;
  while (u >= 100) {
    p -= 2;
    put_pair(p, (unsigned)(u % 100));
    u /= 100;
  }
  if (u >= 10)
    put_pair(p - 2, (unsigned)u);
  else
    p[-1] = (char)('0' + u);
  return (size_t)(o + digits - out);
}

size_t ocap_sc_format_number(double x, char *out) {
  if (x != x)
    return (size_t)snprintf(out, OCAP_SC_NUMBER_MAX, "NaN");
  if (isinf(x))
    return (size_t)snprintf(out, OCAP_SC_NUMBER_MAX, x > 0 ? "Infinity" : "-Infinity");
  if (x == floor(x) && fabs(x) <= (double)OCAP_SC_MAX_SAFE)
    return (size_t)snprintf(out, OCAP_SC_NUMBER_MAX, "%lld", (long long)x);
  int neg = x < 0;
  char d[24];
  int e = shortest(neg ? -x : x, d);
  int k = (int)strlen(d);
  int n = e + 1; /* the value is 0.<digits> * 10^n */
  char *o = out;
  if (neg)
    *o++ = '-';
  if (k <= n && n <= 21) {
    memcpy(o, d, (size_t)k);
    o += k;
    for (int i = k; i < n; i++)
      *o++ = '0';
  } else if (0 < n && n <= 21) {
    memcpy(o, d, (size_t)n);
    o += n;
    *o++ = '.';
    memcpy(o, d + n, (size_t)(k - n));
    o += k - n;
  } else if (-6 < n && n <= 0) {
    *o++ = '0';
    *o++ = '.';
    for (int i = 0; i < -n; i++)
      *o++ = '0';
    memcpy(o, d, (size_t)k);
    o += k;
  } else {
    *o++ = d[0];
    if (k > 1) {
      *o++ = '.';
      memcpy(o, d + 1, (size_t)(k - 1));
      o += k - 1;
    }
    o += sprintf(o, e >= 0 ? "e+%d" : "e%d", e);
  }
  *o = '\0';
  return (size_t)(o - out);
}

/* ---- strings and keys ---- */

char *ocap_sc_quote(const char *s, size_t n, int special, char *out) {
  char *o = out;
  *o++ = '"';
  if (special && n > 0 && (unsigned char)s[0] >= 33 && (unsigned char)s[0] <= 45)
    *o++ = '!';
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') {
      *o++ = (char)c;
      continue;
    }
    *o++ = '\\';
    switch (c) {
    case '"':
      *o++ = '"';
      break;
    case '\\':
      *o++ = '\\';
      break;
    case '\b':
      *o++ = 'b';
      break;
    case '\f':
      *o++ = 'f';
      break;
    case '\n':
      *o++ = 'n';
      break;
    case '\r':
      *o++ = 'r';
      break;
    case '\t':
      *o++ = 't';
      break;
    default:
      *o++ = 'u';
      *o++ = '0';
      *o++ = '0';
      o = ocap_hex_byte(o, c);
    }
  }
  *o++ = '"';
  return o;
}

/* A byte in an order where lead bytes EE and EF (U+E000..U+FFFF) come after
 * F4 (the last lead byte of supplementary characters), as in UTF-16. */
static unsigned utf16_rank(unsigned char c) {
  return c == 0xEE ? 0xF6u : c == 0xEF ? 0xF7u : c;
}

int ocap_sc_key_cmp(const char *a, size_t an, const char *b, size_t bn) {
  size_t n = an < bn ? an : bn;
  for (size_t i = 0; i < n; i++) {
    if (a[i] != b[i])
      return (int)utf16_rank((unsigned char)a[i]) - (int)utf16_rank((unsigned char)b[i]);
  }
  return an < bn ? -1 : an > bn;
}

int ocap_sc_index_key(const char *k, size_t n, unsigned long long *index) {
  if (n == 0 || n > 10 || k[0] < '0' || k[0] > '9' || (k[0] == '0' && n > 1))
    return 0;
  unsigned long long v = 0;
  for (size_t i = 0; i < n; i++) {
    if (k[i] < '0' || k[i] > '9')
      return 0;
    v = v * 10 + (unsigned)(k[i] - '0');
  }
  if (v > 4294967294ULL)
    return 0;
  *index = v;
  return 1;
}

/* ---- scanning a body ---- */

typedef struct scanner {
  ocap_sc_scan_t *sc;
  const char *p, *end;
} scanner_t;

static int leave(scanner_t *s, const char *why) {
  s->sc->why = why;
  return OCAP_SC_LEAVE;
}

static void skip_ws(scanner_t *s) {
  while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
    s->p++;
}

/* The value of the four hex digits at p, or -1. */
static long hex4(const char *p) {
  long v = 0;
  for (int i = 0; i < 4; i++) {
    int h = ocap_hex_value(p[i]);
    if (h < 0)
      return -1;
    v = v * 16 + h;
  }
  return v;
}

/*
 * Reads the string whose opening quote is at s->p: its body goes to *body
 * and *n, whether it has escapes to *escaped, and its first byte once
 * unescaped (or -1 when it is empty) to *first. JSON refuses control
 * characters, unknown escapes and lone surrogates.
 */
static int scan_string(scanner_t *s, const char **body, size_t *n, int *escaped, int *first) {
  const char *p = ++s->p, *end = s->end;
  int esc = 0;
  *first = p < end && *p != '"' ? (unsigned char)*p : -1;
  while (p < end && *p != '"') {
    unsigned char c = (unsigned char)*p;
    if (c < 0x20)
      return leave(s, "control character in string");
    if (c != '\\') {
      p++;
      continue;
    }
    if (end - p < 2)
      return leave(s, "unterminated escape");
    char e = p[1];
    int at_start = p == s->p;
    esc = 1;
    if (e == 'u') {
      if (end - p < 6)
        return leave(s, "truncated \\u escape");
      long cp = hex4(p + 2);
      if (cp < 0)
        return leave(s, "bad \\u escape");
      if (cp >= 0xDC00 && cp < 0xE000)
        return leave(s, "lone surrogate");
      p += 6;
      if (cp >= 0xD800 && cp < 0xDC00) {
        long lo = end - p >= 6 && p[0] == '\\' && p[1] == 'u' ? hex4(p + 2) : -1;
        if (lo < 0xDC00 || lo >= 0xE000)
          return leave(s, "lone surrogate");
        p += 6;
      }
      if (at_start)
        *first = cp < 0x80 ? (int)cp : 0xC2;
    } else {
      const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
      const char *f = strchr(from, e);
      if (e == '\0' || f == NULL)
        return leave(s, "bad escape");
      if (at_start)
        *first = (unsigned char)to[f - from];
      p += 2;
    }
  }
  if (p >= end)
    return leave(s, "unterminated string");
  *body = s->p;
  *n = (size_t)(p - s->p);
  *escaped = esc;
  s->p = p + 1;
  if (esc && *n > s->sc->escaped_max)
    s->sc->escaped_max = *n;
  return 0;
}

/* Reads decimal digits as a slot index; -1 when there are none or it is
 * beyond every slot. */
static long long slot_index(const char *p, size_t n, size_t nslots) {
  if (n == 0)
    return -1;
  unsigned long long v = 0;
  for (size_t i = 0; i < n; i++) {
    if (p[i] < '0' || p[i] > '9')
      return -1;
    v = v * 10 + (unsigned)(p[i] - '0');
    if (v >= nslots)
      return -1;
  }
  return (long long)v;
}

/* Notes a use of a slot (style 1 remotable, 2 promise), refusing a second
 * style or a second interface name. */
static int use_slot(scanner_t *s, long long index, int style, const char *iface, size_t ilen) {
  if (index < 0)
    return leave(s, "slot reference beyond the slots");
  ocap_sc_slot_t *slot = &s->sc->slots[index];
  if (slot->style && slot->style != style)
    return leave(s, "slot used in two styles");
  slot->style = (unsigned char)style;
  if (iface) {
    if (slot->named && (slot->ilen != ilen || memcmp(slot->iface, iface, ilen) != 0))
      return leave(s, "slot given two interface names");
    slot->named = 1;
    slot->iface = iface;
    slot->ilen = ilen;
  }
  return 0;
}

/* Whether digits[0..n) (no sign) is an int64 of that sign, as Lua's
 * tonumber reads integers. */
static int bigint_fits(const char *d, size_t n, int neg) {
  if (n == 0)
    return 0;
  unsigned long long v = 0, max = 9223372036854775807ULL + (unsigned)neg;
  for (size_t i = 0; i < n; i++) {
    if (d[i] < '0' || d[i] > '9')
      return 0;
    unsigned dig = (unsigned)(d[i] - '0');
    if (v > (max - dig) / 10)
      return 0;
    v = v * 10 + dig;
  }
  return 1;
}

/* Checks a string value that starts with a special character and has no
 * escapes. */
static int scan_special(scanner_t *s, const char *p, size_t n) {
  switch (p[0]) {
  case '!':
    return 0;
  case '#':
    if ((n == 10 && memcmp(p, "#undefined", 10) == 0) || (n == 4 && memcmp(p, "#NaN", 4) == 0) ||
        (n == 9 && memcmp(p, "#Infinity", 9) == 0) || (n == 10 && memcmp(p, "#-Infinity", 10) == 0))
      return 0;
    return leave(s, "unknown constant");
  case '$': {
    if (!s->sc->slots)
      return leave(s, "slot reference without slots");
    const char *dot = memchr(p, '.', n);
    size_t dn = (size_t)((dot ? dot : p + n) - (p + 1));
    long long index = slot_index(p + 1, dn, s->sc->nslots);
    if (dot)
      return use_slot(s, index, 1, dot + 1, (size_t)(p + n - dot - 1));
    return use_slot(s, index, 1, NULL, 0);
  }
  case '&':
    if (!s->sc->slots)
      return leave(s, "slot reference without slots");
    return use_slot(s, slot_index(p + 1, n - 1, s->sc->nslots), 2, NULL, 0);
  case '+':
  case '-':
    return bigint_fits(p + 1, n - 1, p[0] == '-') ? 0 : leave(s, "bad bigint");
  default:
    return leave(s, "reserved special character");
  }
}

/* Checks a number's JSON grammar: no leading zeros, '+', bare '.', hex. */
static int scan_number(scanner_t *s) {
  const char *q = s->p, *end = s->end;
  if (q < end && *q == '-')
    q++;
  if (q < end && *q == '0') {
    q++;
  } else if (q < end && *q >= '1' && *q <= '9') {
    while (q < end && *q >= '0' && *q <= '9')
      q++;
  } else {
    return leave(s, "bad number");
  }
  if (q < end && *q == '.') {
    q++;
    if (!(q < end && *q >= '0' && *q <= '9'))
      return leave(s, "bad number");
    while (q < end && *q >= '0' && *q <= '9')
      q++;
  }
  if (q < end && (*q == 'e' || *q == 'E')) {
    q++;
    if (q < end && (*q == '+' || *q == '-'))
      q++;
    if (!(q < end && *q >= '0' && *q <= '9'))
      return leave(s, "bad number");
    while (q < end && *q >= '0' && *q <= '9')
      q++;
  }
  /* The vat's JSON reader refuses longer ones; let the reference say so. */
  if (q - s->p >= 64)
    return leave(s, "number too long");
  s->p = q;
  return 0;
}

static int scan_word(scanner_t *s, const char *w, size_t n) {
  if ((size_t)(s->end - s->p) < n || memcmp(s->p, w, n) != 0)
    return leave(s, "unexpected token");
  s->p += n;
  return 0;
}

/* Checks a string member value of an error record: plain or `!`-escaped,
 * so that it decodes to a string. */
static int scan_text_member(scanner_t *s) {
  const char *b;
  size_t n;
  int esc, first;
  skip_ws(s);
  if (s->p >= s->end || *s->p != '"')
    return leave(s, "error record member is not a string");
  if (scan_string(s, &b, &n, &esc, &first))
    return OCAP_SC_LEAVE;
  s->sc->values++;
  if (first >= 33 && first <= 45 && first != '!')
    return leave(s, "special string in an error record");
  return 0;
}

/* Checks the rest of a record whose first key is "#error", up to its
 * closing brace: only the form the encoder writes is taken,
 * {"#error":<string>,"name":<string>}. */
static int scan_error_record(scanner_t *s) {
  const char *key;
  size_t kn;
  int esc, first;
  s->p++; /* : */
  if (scan_text_member(s))
    return OCAP_SC_LEAVE;
  skip_ws(s);
  if (s->p >= s->end || *s->p != ',')
    return leave(s, "error record of another form");
  s->p++;
  skip_ws(s);
  if (s->p >= s->end || *s->p != '"' || scan_string(s, &key, &kn, &esc, &first) || esc || kn != 4 ||
      memcmp(key, "name", 4) != 0)
    return leave(s, "error record of another form");
  skip_ws(s);
  if (s->p >= s->end || *s->p != ':')
    return leave(s, "expected ':'");
  s->p++;
  if (scan_text_member(s))
    return OCAP_SC_LEAVE;
  skip_ws(s);
  if (s->p >= s->end || *s->p != '}')
    return leave(s, "error record of another form");
  s->p++;
  return 0;
}

static int scan_value(scanner_t *s, int depth) {
  skip_ws(s);
  if (s->p >= s->end)
    return leave(s, "unexpected end");
  s->sc->values++;
  char c = *s->p;
  if (c == '[' || c == '{') {
    if (depth >= OCAP_SC_MAX_DEPTH)
      return leave(s, "nesting too deep");
    char close = c == '[' ? ']' : '}';
    size_t k = s->sc->containers++;
    unsigned count = 0;
    s->p++;
    skip_ws(s);
    if (k < s->sc->nsizes)
      s->sc->sizes[k] = 0;
    if (s->p < s->end && *s->p == close) {
      s->p++;
      return 0;
    }
    for (;; count++) {
      if (c == '{') {
        skip_ws(s);
        const char *key;
        size_t kn;
        int esc, first;
        if (s->p >= s->end || *s->p != '"')
          return leave(s, "expected key");
        if (scan_string(s, &key, &kn, &esc, &first))
          return OCAP_SC_LEAVE;
        skip_ws(s);
        if (s->p >= s->end || *s->p != ':')
          return leave(s, "expected ':'");
        if (first >= 33 && first <= 45) {
          if (first == '#' && count == 0 && !esc && kn == 6 && memcmp(key, "#error", 6) == 0)
            return scan_error_record(s);
          if (first != '!')
            return leave(s, "special record key");
          s->sc->bang_keys = 1;
        }
        s->p++;
      }
      if (scan_value(s, depth + 1))
        return OCAP_SC_LEAVE;
      skip_ws(s);
      if (s->p < s->end && *s->p == ',') {
        s->p++;
        continue;
      }
      if (s->p < s->end && *s->p == close) {
        s->p++;
        if (k < s->sc->nsizes)
          s->sc->sizes[k] = count + 1;
        return 0;
      }
      return leave(s, "expected ',' or closing bracket");
    }
  }
  if (c == '"') {
    const char *b;
    size_t n;
    int esc, first;
    if (scan_string(s, &b, &n, &esc, &first))
      return OCAP_SC_LEAVE;
    if (first < 33 || first > 45 || first == '!')
      return 0;
    if (esc)
      return leave(s, "special string with escapes");
    return scan_special(s, b, n);
  }
  if (c == 't')
    return scan_word(s, "true", 4);
  if (c == 'f')
    return scan_word(s, "false", 5);
  if (c == 'n')
    return scan_word(s, "null", 4);
  if (c == '-' || (c >= '0' && c <= '9'))
    return scan_number(s);
  return leave(s, "unexpected token");
}

int ocap_sc_scan(ocap_sc_scan_t *sc, const char *json, size_t n) {
  scanner_t s = {sc, json, json + n};
  if (scan_value(&s, 0))
    return OCAP_SC_LEAVE;
  skip_ws(&s);
  if (s.p != s.end)
    return leave(&s, "trailing garbage");
  return 0;
}

/* ---- reading what the scan checked ---- */

/* Writes code point cp as UTF-8; returns the bytes written. */
static size_t put_utf8(char *o, unsigned long cp) {
  if (cp < 0x80) {
    o[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (char)(0xC0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xE0 | (cp >> 12));
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (char)(0xF0 | (cp >> 18));
  o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  o[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

size_t ocap_sc_unescape(const char *s, size_t n, char *out) {
  char *o = out;
  const char *end = s + n;
  while (s < end) {
    if (*s != '\\') {
      *o++ = *s++;
      continue;
    }
    char e = s[1];
    if (e == 'u') {
      unsigned long cp = (unsigned long)hex4(s + 2);
      s += 6;
      if (cp >= 0xD800 && cp < 0xDC00) {
        unsigned long lo = (unsigned long)hex4(s + 2);
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        s += 6;
      }
      o += put_utf8(o, cp);
      continue;
    }
    switch (e) {
    case 'b':
      *o++ = '\b';
      break;
    case 'f':
      *o++ = '\f';
      break;
    case 'n':
      *o++ = '\n';
      break;
    case 'r':
      *o++ = '\r';
      break;
    case 't':
      *o++ = '\t';
      break;
    default: /* " \ / */
      *o++ = e;
    }
    s += 2;
  }
  return (size_t)(o - out);
}

int ocap_sc_number(const char *s, size_t n, long long *i, double *d) {
  /* The common case, an integer of at most 15 digits (so a safe one),
   * read here: strtoll costs several times as much. */
  size_t k0 = n > 0 && s[0] == '-';
  if (n - k0 <= 15 && n > k0) {
    long long v = 0;
    size_t k = k0;
    while (k < n && s[k] >= '0' && s[k] <= '9')
      v = v * 10 + (s[k++] - '0');
    if (k == n) {
      *i = k0 ? -v : v;
      return 1;
    }
  }
  char buf[64];
  int is_float = 0;
  for (size_t k = 0; k < n; k++)
    if (s[k] == '.' || s[k] == 'e' || s[k] == 'E')
      is_float = 1;
  memcpy(buf, s, n);
  buf[n] = '\0';
  if (!is_float && n < 17) {
    long long v = strtoll(buf, NULL, 10);
    if (v <= OCAP_SC_MAX_SAFE && v >= -OCAP_SC_MAX_SAFE) {
      *i = v;
      return 1;
    }
  }
  double x = strtod(buf, NULL);
  if (x == floor(x) && fabs(x) <= (double)OCAP_SC_MAX_SAFE) {
    *i = (long long)x;
    return 1;
  }
  *d = x;
  return 0;
}

void ocap_sc_bigint(const char *digits, size_t n, int neg, long long *v) {
  unsigned long long u = 0;
  for (size_t k = 0; k < n; k++)
    u = u * 10 + (unsigned)(digits[k] - '0');
  *v = neg ? (long long)(0ULL - u) : (long long)u;
}
