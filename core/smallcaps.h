/*
 * smallcaps.h -- the text side of @endo/marshal's smallcaps format, in
 * plain C: numbers as JavaScript prints them, JSON strings as
 * JSON.stringify writes them, record keys in JavaScript's order, and a
 * checking scan of a body that says, before any value is built, whether the
 * body is one the fast decoder takes as it is.
 *
 * lsmallcaps.c builds Lua values from these pieces; this half needs no Lua
 * state, so spec/c/test_smallcaps.c tests it directly.
 *
 * Conventions:
 *  1. Nothing here allocates: callers give the output buffers, sized with
 *     the bounds below.
 *  2. The scan never fails with a message. It answers "take" or "leave"
 *     (OCAP_SC_LEAVE): a body it leaves is decoded by the reference
 *     decoder in lua/ocap/marshal.lua, which gives the error message or,
 *     for the rare bodies this half does not handle, the value. So the
 *     fast path decides nothing the reference decoder would decide
 *     otherwise.
 *  3. Lengths are byte counts; strings are bytes and need not be UTF-8.
 */
#ifndef OCAP_SMALLCAPS_H
#define OCAP_SMALLCAPS_H

#include <stddef.h>

/* Arrays and records nest at most this deep, both ways. */
#define OCAP_SC_MAX_DEPTH 1000

/* Room ocap_sc_format_number needs, with the terminating zero. */
#define OCAP_SC_NUMBER_MAX 40

/* 2^53: integers up to it in magnitude are JavaScript numbers. */
#define OCAP_SC_MAX_SAFE 9007199254740992LL

/* What ocap_sc_scan answers for a body it does not take. */
#define OCAP_SC_LEAVE (-1)

/* The bytes ocap_sc_quote writes at most for n bytes of string. */
#define OCAP_SC_QUOTE_BOUND(n) (6 * (n) + 3)

/*
 * Writes x as JavaScript's Number.prototype.toString does (`1e+21`,
 * `1.5e-7`, `0.000001`, `0` for -0, `NaN`, `Infinity`) into out, which
 * holds OCAP_SC_NUMBER_MAX bytes, zero-terminated; returns the length.
 */
size_t ocap_sc_format_number(double x, char *out);

/* Room ocap_sc_format_int needs: a sign and 20 digits. */
#define OCAP_SC_INT_MAX 21

/*
 * Writes v in decimal (`-` and the digits, no leading zero) into out,
 * which holds OCAP_SC_INT_MAX bytes, not zero-terminated; returns the
 * length. Two digits at a time from a table: safe integers, vpids and
 * slot numbers are written several times per message.
 */
size_t ocap_sc_format_int(long long v, char *out);

/*
 * Writes s as a JSON string the way JSON.stringify does (only `"`, `\` and
 * control characters escaped, with short escapes where JSON has them and
 * lowercase \u00xx otherwise). With special set, a string starting with one
 * of smallcaps' special characters (`!` to `-`, ASCII 33..45) gets a `!`
 * in front. Returns the end of what it wrote; out holds
 * OCAP_SC_QUOTE_BOUND(n) bytes.
 */
char *ocap_sc_quote(const char *s, size_t n, int special, char *out);

/*
 * Compares two record keys in the order JavaScript sorts strings (UTF-16
 * code units): <0, 0 or >0. Keys are UTF-8; byte order agrees with UTF-16
 * order except that characters U+E000..U+FFFF sort after supplementary ones.
 */
int ocap_sc_key_cmp(const char *a, size_t an, const char *b, size_t bn);

/*
 * Whether k is an array-index-like key ("0", "1", ... "4294967294"), which
 * a JavaScript object enumerates first, in numeric order; its value goes to
 * *index.
 */
int ocap_sc_index_key(const char *k, size_t n, unsigned long long *index);

/* What a slot has been seen as while scanning. */
typedef struct ocap_sc_slot {
  unsigned char style; /* 0 not seen, 1 remotable, 2 promise */
  unsigned char named; /* an occurrence named the interface */
  const char *iface;   /* into the body, when named */
  size_t ilen;
} ocap_sc_slot_t;

/* The scan's input and findings. */
typedef struct ocap_sc_scan {
  /* Input: the slots given with the body, all zeroed; slots may be NULL
   * when nslots is 0, and slot references are then left. */
  ocap_sc_slot_t *slots;
  size_t nslots;
  /* Input: room for the sizes of the first nsizes arrays and records, in
   * the order they open, so that their tables can be made at their size;
   * sizes may be NULL. */
  unsigned *sizes;
  size_t nsizes;
  /* Findings. */
  size_t containers;  /* arrays and records */
  size_t values;      /* JSON values, for charging the work */
  size_t escaped_max; /* the longest string with escapes, in body bytes */
  int bang_keys;      /* some record key starts with `!` */
  const char *why;    /* why the body was left, for tests */
} ocap_sc_scan_t;

/*
 * Checks the JSON text of a body (after its `#`): JSON as JSON.parse reads
 * it, nested at most OCAP_SC_MAX_DEPTH deep, every special string one the
 * fast decoder understands (`!`-escaped, `#undefined`, `#NaN`, `#Infinity`,
 * `#-Infinity`, `$i`, `$i.iface`, `&i`, bigints within int64), every slot
 * used in one style and given at most one interface name, no record key
 * starting with a special character other than `!` (but for error records
 * of the form the encoder writes, `{"#error":<string>,"name":<string>}`,
 * whose strings decode to strings), and no string that starts with a
 * special character other than `!` written with escapes.
 * Returns 0 or OCAP_SC_LEAVE; sc->slots[i] says how slot i is used.
 */
int ocap_sc_scan(ocap_sc_scan_t *sc, const char *json, size_t n);

/*
 * Writes the bytes of a JSON string whose body (between the quotes) is s,
 * as checked by ocap_sc_scan, to out (at least n bytes); returns the
 * length written.
 */
size_t ocap_sc_unescape(const char *s, size_t n, char *out);

/*
 * Reads a JSON number, as checked by ocap_sc_scan, as a smallcaps decoder
 * does: an integral value within 2^53 is an integer (*i, returns 1), any
 * other a double (*d, returns 0).
 */
int ocap_sc_number(const char *s, size_t n, long long *i, double *d);

/*
 * Reads a bigint encoding's digits (after `+` or `-`), as checked by
 * ocap_sc_scan, into *v; neg says which sign.
 */
void ocap_sc_bigint(const char *digits, size_t n, int neg, long long *v);

#endif
