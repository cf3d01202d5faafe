/*
 * test_syrup.c -- unit tests for core/syrup.c, the Syrup reader and the
 * encoding pieces: golden vectors for every type, canonical order, and a
 * clean error with its offset for every class of malformed input. The
 * mapping to Lua values is specced in spec/syrup_spec.lua.
 *
 * Vectors marked "draft spec" restate examples of the OCapN draft Syrup
 * specification (ocapn/ocapn, draft-specifications/Syrup.md) and of the
 * Syrup README (ocapn/syrup); those marked "endo" restate cases of the
 * @endo/ocapn codec tests (endo/packages/ocapn/test/codecs). They are
 * written here as our own data.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "syrup.h"

#include "check.h"

/* The reader is large; one shared instance keeps the tests off the stack. */
static ocap_syrup_reader_t reader;

/*
 * Reads s (n bytes) and writes a compact trace of its tokens to out: one
 * letter per token kind, with atoms' contents, so that a test can state
 * the whole structure in one string. Returns what ocap_syrup_next last
 * answered (0 for a complete value, -1 for an error).
 */
static int trace(const char *s, size_t n, char *out, size_t cap) {
  ocap_syrup_tok_t t;
  int rc;
  size_t k = 0;
  out[0] = 0;
  ocap_syrup_reader_init(&reader, s, n);
  while ((rc = ocap_syrup_next(&reader, &t)) == 1) {
    char buf[64];
    switch (t.kind) {
    case OCAP_SY_BOOL:
      snprintf(buf, sizeof buf, "%s ", t.b ? "T" : "F");
      break;
    case OCAP_SY_INT:
      snprintf(buf, sizeof buf, "I%s%.*s ", t.neg ? "-" : "", (int)t.n, t.p);
      break;
    case OCAP_SY_FLOAT:
      snprintf(buf, sizeof buf, "D%g ", t.d);
      break;
    case OCAP_SY_BYTES:
    case OCAP_SY_STRING:
    case OCAP_SY_SYMBOL:
      snprintf(buf, sizeof buf, "%c(%.*s) ",
               t.kind == OCAP_SY_BYTES    ? 'B'
               : t.kind == OCAP_SY_STRING ? 'S'
                                          : 'Y',
               (int)t.n, t.p);
      break;
    case OCAP_SY_LIST:
      snprintf(buf, sizeof buf, "[ ");
      break;
    case OCAP_SY_DICT:
      snprintf(buf, sizeof buf, "{ ");
      break;
    case OCAP_SY_SET:
      snprintf(buf, sizeof buf, "# ");
      break;
    case OCAP_SY_RECORD:
      snprintf(buf, sizeof buf, "< ");
      break;
    default:
      snprintf(buf, sizeof buf, ". ");
    }
    size_t bl = strlen(buf);
    if (k + bl < cap) {
      memcpy(out + k, buf, bl + 1);
      k += bl;
    }
  }
  return rc;
}

static int test_golden(void) {
  int fails = 0;
  static const struct {
    const char *syrup;
    size_t n; /* 0: strlen */
    const char *tokens;
  } cases[] = {
      {"t", 0, "T "},
      {"f", 0, "F "},
      {"0+", 0, "I0 "},
      {"42+", 0, "I42 "},
      {"42-", 0, "I-42 "},
      /* Integers of any size. */
      {"123456789012345678901234567890+", 0, "I123456789012345678901234567890 "},
      /* draft spec: a double, 8 bytes big-endian. */
      {"D\x3f\xf8\x00\x00\x00\x00\x00\x00", 9, "D1.5 "},
      {"D\x80\x00\x00\x00\x00\x00\x00\x00", 9, "D-0 "},
      {"D\x7f\xf0\x00\x00\x00\x00\x00\x00", 9, "Dinf "},
      {"D\x7f\xf8\x00\x00\x00\x00\x00\x00", 9, "Dnan "},
      /* draft spec and Syrup README. */
      {"12:a bytestring", 0, "B(a bytestring) "},
      {"8\"a string", 0, "S(a string) "},
      {"3'cat", 0, "Y(cat) "},
      {"0\"", 0, "S() "},
      {"3:\x01\xff\x02", 5, "B(\x01\xff\x02) "},
      {"[]", 0, "[ . "},
      {"[1+2+3+]", 0, "[ I1 I2 I3 . "},
      {"{}", 0, "{ . "},
      {"#$", 0, "# . "},
      {"#1+2+3+$", 0, "# I1 I2 I3 . "},
      /* endo: struct keys in canonical order, the empty key first. */
      {"{0\"10+1\"i20+}", 0, "{ S() I10 S(i) I20 . "},
      /* endo: a tagged value. */
      {"<11'desc:tagged5'hello[5\"world]>", 0, "< Y(desc:tagged) Y(hello) [ S(world) . . "},
      /* endo: the OCapN passables void and null. */
      {"<4'void>", 0, "< Y(void) . "},
      {"<4'null>", 0, "< Y(null) . "},
      /* endo: a descriptor as the suite sends it. */
      {"<18'desc:import-object123+>", 0, "< Y(desc:import-object) I123 . "},
      /* Keys sort by encoded bytes: "10..." before "9...", and lengths
       * before contents. */
      {"{10\"aaaaaaaaaat9\"bbbbbbbbbf}", 0, "{ S(aaaaaaaaaa) T S(bbbbbbbbb) F . "},
      {"{1\"bt2\"aaf}", 0, "{ S(b) T S(aa) F . "},
      /* Mixed key types sort by their bytes: `1"` before `1+` before `<`
       * before `[`. */
      {"{1\"af1+t<1'a>f[]t}", 0, "{ S(a) F I1 T < Y(a) . F [ . T . "},
  };
  char out[512];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    size_t n = cases[i].n ? cases[i].n : strlen(cases[i].syrup);
    int rc = trace(cases[i].syrup, n, out, sizeof out);
    if (rc != 0 || strcmp(out, cases[i].tokens) != 0) {
      fprintf(stderr, "golden %zu (%s): rc %d err %s, got '%s'\n", i, cases[i].syrup, rc,
              reader.err ? reader.err : "-", out);
      fails++;
    }
  }
  return fails;
}

static int test_malformed(void) {
  int fails = 0;
  static const struct {
    const char *syrup;
    size_t n;
    const char *err; /* a prefix of the message */
    size_t off;
  } cases[] = {
      {"", 0, "empty input", 0},
      {"x", 0, "unexpected byte", 0},
      {"[1+2+}", 0, "unexpected closing byte", 5},
      {"]", 0, "unexpected closing byte", 0},
      {"t f", 0, "trailing bytes", 1},
      {"1+2+", 0, "trailing bytes", 2},
      /* Truncation anywhere. */
      {"<3'foo", 0, "truncated input: container not closed", 6},
      {"<3'foo1+", 0, "truncated input: container not closed", 8},
      {"5\"abc", 0, "length exceeds", 0},
      {"123", 0, "truncated input: number", 0},
      {"D\x3f\xf8", 3, "truncated input: double", 0},
      /* Non-canonical. */
      {"01+", 0, "non-canonical number", 0},
      {"00+", 0, "non-canonical number", 0},
      {"0-", 0, "non-canonical integer: negative zero", 0},
      {"03:abc", 0, "non-canonical number", 0},
      {"{1\"b1+1\"a2+}", 0, "dictionary keys not in canonical order", 6},
      {"{1\"a1+1\"a2+}", 0, "duplicate dictionary key", 6},
      {"{9\"bbbbbbbbbf10\"aaaaaaaaaat}", 0, "dictionary keys not in canonical order", 13},
      {"#2+1+$", 0, "set members not in canonical order", 3},
      {"#1+1+$", 0, "duplicate set member", 3},
      {"D\x7f\xf8\x00\x00\x00\x00\x00\x01", 9, "non-canonical NaN", 0},
      {"D\xff\xf8\x00\x00\x00\x00\x00\x00", 9, "non-canonical NaN", 0},
      /* Structure. */
      {"{1\"a}", 0, "dictionary key without a value", 4},
      {"<>", 0, "record without a label", 1},
      {"3\"\xff\xfe\xfd", 0, "string is not valid UTF-8", 0},
      {"2'\xc0\xaf", 0, "symbol is not valid UTF-8", 0},
      {"3\"\xed\xa0\x80", 0, "string is not valid UTF-8", 0},
      {"1+x", 0, "trailing bytes", 2},
      {"12x", 0, "unexpected byte after a number", 2},
      /* float32 is not in the OCapN data model. */
      {"F\x3f\xc0\x00\x00", 5, "unexpected byte", 0},
      /* Huge lengths: more than the input, more than size_t. */
      {"99999999999999999999999999999:", 0, "length exceeds", 0},
      {"18446744073709551617\"", 0, "length exceeds", 0},
      {"[4294967296:]", 0, "length exceeds", 1},
  };
  char out[512];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    size_t n = cases[i].n ? cases[i].n : strlen(cases[i].syrup);
    int rc = trace(cases[i].syrup, n, out, sizeof out);
    if (rc != -1 || !reader.err || strncmp(reader.err, cases[i].err, strlen(cases[i].err)) != 0 ||
        reader.err_off != cases[i].off) {
      fprintf(stderr, "malformed %zu (%s): rc %d, err '%s' at %zu; want '%s' at %zu\n", i,
              cases[i].syrup, rc, reader.err ? reader.err : "-", reader.err_off, cases[i].err,
              cases[i].off);
      fails++;
    }
    /* After an error, the reader keeps answering it. */
    ocap_syrup_tok_t t;
    CHECK(ocap_syrup_next(&reader, &t) == -1);
  }
  return fails;
}

static int test_depth(void) {
  int fails = 0;
  size_t d = OCAP_SYRUP_MAX_DEPTH;
  char *s = malloc(2 * (d + 1));
  const char *err;
  size_t off;
  /* Exactly the limit is fine. */
  memset(s, '[', d);
  memset(s + d, ']', d);
  CHECK(ocap_syrup_check(s, 2 * d, &err, &off) == 0);
  /* One more is refused where the extra container opens. */
  memset(s, '[', d + 1);
  memset(s + d + 1, ']', d + 1);
  CHECK(ocap_syrup_check(s, 2 * (d + 1), &err, &off) == -1);
  CHECK(strcmp(err, "nested too deeply") == 0 && off == d);
  free(s);
  return fails;
}

static int test_encoding_pieces(void) {
  int fails = 0;
  char out[64];
  CHECK(ocap_syrup_put_int(0, out) == 2 && strcmp(out, "0+") == 0);
  CHECK(ocap_syrup_put_int(42, out) == 3 && strcmp(out, "42+") == 0);
  CHECK(ocap_syrup_put_int(-42, out) == 3 && strcmp(out, "42-") == 0);
  CHECK(ocap_syrup_put_int(-9223372036854775807LL - 1, out) == 20 &&
        strcmp(out, "9223372036854775808-") == 0);
  CHECK(ocap_syrup_put_len(0, '"', out) == 2 && strcmp(out, "0\"") == 0);
  CHECK(ocap_syrup_put_len(12, ':', out) == 3 && strcmp(out, "12:") == 0);

  size_t n = ocap_syrup_put_decimal("-000123", 7, out);
  CHECK(n == 4 && memcmp(out, "123-", 4) == 0);
  n = ocap_syrup_put_decimal("-0", 2, out);
  CHECK(n == 2 && memcmp(out, "0+", 2) == 0);
  CHECK(ocap_syrup_put_decimal("", 0, out) == 0);
  CHECK(ocap_syrup_put_decimal("-", 1, out) == 0);
  CHECK(ocap_syrup_put_decimal("12a", 3, out) == 0);
  CHECK(ocap_syrup_put_decimal("+1", 2, out) == 0);

  ocap_syrup_put_double(1.5, out);
  CHECK(memcmp(out, "D\x3f\xf8\x00\x00\x00\x00\x00\x00", 9) == 0);
  ocap_syrup_put_double(-0.0, out);
  CHECK(memcmp(out, "D\x80\x00\x00\x00\x00\x00\x00\x00", 9) == 0);
  /* Every NaN is written as the one canonical NaN. */
  double nan = -(0.0 / 0.0);
  ocap_syrup_put_double(nan, out);
  CHECK(memcmp(out, "D\x7f\xf8\x00\x00\x00\x00\x00\x00", 9) == 0);

  /* Order: bytes, then length. */
  CHECK(ocap_syrup_cmp("1\"a", 3, "1\"b", 3) < 0);
  CHECK(ocap_syrup_cmp("1\"a", 3, "1\"a1", 4) < 0);
  CHECK(ocap_syrup_cmp("10\"", 3, "9\"", 2) < 0);
  CHECK(ocap_syrup_cmp("x", 1, "x", 1) == 0);
  CHECK(ocap_syrup_cmp("\xff", 1, "\x01", 1) > 0);

  CHECK(ocap_syrup_utf8("h\xc3\xa9llo \xf0\x9f\x8d\x81", 11));
  CHECK(!ocap_syrup_utf8("\xc3", 1));
  CHECK(!ocap_syrup_utf8("\xe0\x80\x80", 3));     /* overlong */
  CHECK(!ocap_syrup_utf8("\xf4\x90\x80\x80", 4)); /* beyond U+10FFFF */
  CHECK(!ocap_syrup_utf8("\xed\xbf\xbf", 3));     /* surrogate */
  return fails;
}

int main(void) {
  int fails = test_golden() + test_malformed() + test_depth() + test_encoding_pieces();
  if (fails) {
    fprintf(stderr, "test_syrup: %d failure(s)\n", fails);
    return 1;
  }
  printf("test_syrup: ok\n");
  return 0;
}
