/* Bytes as lower-case hex digits, and back: the one place the C core
 * writes them (designators, JSON's \u00XX escapes, bytes shown in
 * messages). Inline, since the JSON escapes are on the path of every
 * message a vat sends: a call costs what the code it replaces did. */
#ifndef OCAP_HEX_H
#define OCAP_HEX_H

#include <stddef.h>

/* Writes the two hex digits of c at out (no NUL) and returns out + 2. */
static inline char *ocap_hex_byte(char *out, unsigned char c) {
  static const char digits[] = "0123456789abcdef";
  out[0] = digits[c >> 4];
  out[1] = digits[c & 15];
  return out + 2;
}

/* Writes the n bytes at in as 2n hex digits and a NUL at out, which
 * holds 2n + 1 bytes. */
static inline void ocap_hex_encode(char *out, const unsigned char *in, size_t n) {
  for (size_t i = 0; i < n; i++)
    out = ocap_hex_byte(out, in[i]);
  *out = '\0';
}

/* Writes the JSON escape of byte c, `\u00` and its two hex digits (no
 * NUL), at out and returns out + 6. */
static inline char *ocap_hex_json_escape(char *out, unsigned char c) {
  out[0] = '\\';
  out[1] = 'u';
  out[2] = '0';
  out[3] = '0';
  return ocap_hex_byte(out + 4, c);
}

/* The value of the hex digit c (either case), or -1. */
static inline int ocap_hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

#endif
