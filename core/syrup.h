/*
 * syrup.h -- Syrup, the byte format of OCapN, in plain C: a strict
 * decoder that reads a Syrup value as a stream of tokens, and the pieces
 * an encoder needs (integer and length prefixes, doubles, the canonical
 * order of dictionary keys and set members).
 *
 * lsyrup.c builds Lua values from the tokens and writes Lua values with the
 * pieces; this half needs no Lua state, so spec/c/test_syrup.c tests it
 * directly.
 *
 * The format (OCapN draft specification, "Syrup"):
 *   t f                   booleans
 *   <digits>+ <digits>-   integers of any size; zero is `0+`
 *   D <8 bytes>           IEEE 754 double, big-endian
 *   <len>:<bytes>         byte string
 *   <len>"<utf-8>         string
 *   <len>'<utf-8>         symbol
 *   [ ... ]               list
 *   { k v ... }           dictionary, keys sorted by their encoded bytes
 *   # ... $               set, members sorted by their encoded bytes
 *   < label ... >         record
 *
 * Conventions:
 *  1. Nothing here allocates: the reader lives where the caller puts it,
 *     and the encoding pieces write into the caller's buffers.
 *  2. The decoder takes only canonical input, the bytes the encoder would
 *     write for the value: no leading zeros, no `0-`, keys and set members
 *     in strictly increasing order (so no duplicates), strings and symbols
 *     valid UTF-8, NaN only as 0x7ff8000000000000, one value and nothing
 *     after it. Anything else is an error with a message and the byte
 *     offset where it was found.
 *  3. Lengths are checked against the input that remains before any use,
 *     so a huge length is an error, never an overflow or a large read.
 */
#ifndef OCAP_SYRUP_H
#define OCAP_SYRUP_H

#include <stddef.h>

/* Lists, dictionaries, sets and records nest at most this deep. */
#define OCAP_SYRUP_MAX_DEPTH 1000

/* Room ocap_syrup_put_int and ocap_syrup_put_len need (with a zero). */
#define OCAP_SYRUP_NUM_MAX 24

/* What a token is. */
enum ocap_syrup_kind {
  OCAP_SY_BOOL = 1,
  OCAP_SY_INT,    /* digits in p/n (no sign), neg set for `-` */
  OCAP_SY_FLOAT,  /* the value in d */
  OCAP_SY_BYTES,  /* p/n */
  OCAP_SY_STRING, /* p/n, valid UTF-8 */
  OCAP_SY_SYMBOL, /* p/n, valid UTF-8 */
  OCAP_SY_LIST,   /* opens a container: items follow until OCAP_SY_CLOSE */
  OCAP_SY_DICT,
  OCAP_SY_SET,
  OCAP_SY_RECORD, /* the first item is the label */
  OCAP_SY_CLOSE   /* closes the innermost open container */
};

typedef struct ocap_syrup_tok {
  int kind;
  const char *p; /* into the input */
  size_t n;
  int neg;    /* integers: negative */
  int b;      /* booleans */
  double d;   /* floats */
  size_t off; /* where the token starts */
} ocap_syrup_tok_t;

/* One open container while reading. */
typedef struct ocap_syrup_frame {
  unsigned char kind; /* OCAP_SY_LIST .. OCAP_SY_RECORD */
  size_t open;        /* offset of the opening byte */
  size_t count;       /* items read so far */
  size_t prev, prevn; /* the previous key or set member, as encoded bytes */
} ocap_syrup_frame_t;

typedef struct ocap_syrup_reader {
  const char *s;
  size_t n, pos;
  size_t depth;
  int done;        /* the top-level value is complete */
  const char *err; /* the error, once one happened */
  size_t err_off;  /* where */
  ocap_syrup_frame_t frames[OCAP_SYRUP_MAX_DEPTH];
} ocap_syrup_reader_t;

/* Starts reading the n bytes at s as one Syrup value. */
void ocap_syrup_reader_init(ocap_syrup_reader_t *r, const char *s, size_t n);

/*
 * Reads the next token into *t. Returns 1 for a token, 0 once the value is
 * complete and the input is used up, -1 on error (r->err, r->err_off; every
 * later call answers -1 again).
 */
int ocap_syrup_next(ocap_syrup_reader_t *r, ocap_syrup_tok_t *t);

/*
 * Checks that s holds exactly one canonical Syrup value. Returns 0, or -1
 * with the message in *err and the offset in *off.
 */
int ocap_syrup_check(const char *s, size_t n, const char **err, size_t *off);

/* Writes v as a Syrup integer (`42+`, `0+`, `7-`); returns the length. */
size_t ocap_syrup_put_int(long long v, char *out);

/* Writes the prefix `<n><tag>` of a byte string, string or symbol. */
size_t ocap_syrup_put_len(size_t n, char tag, char *out);

/*
 * Writes the decimal integer dec (an optional `-`, then digits; leading
 * zeros allowed) canonically into out, which holds n + 2 bytes. Returns the
 * length, or 0 when dec is not such an integer.
 */
size_t ocap_syrup_put_decimal(const char *dec, size_t n, char *out);

/* Writes `D` and the 8 big-endian bytes of d (NaN canonical) to out[9]. */
void ocap_syrup_put_double(double d, char *out);

/* The order of encoded keys and set members: <0, 0 or >0. */
int ocap_syrup_cmp(const char *a, size_t an, const char *b, size_t bn);

/* Whether s is valid UTF-8 (no overlongs, surrogates or values beyond
 * U+10FFFF). */
int ocap_syrup_utf8(const char *s, size_t n);

#endif
