/*
 * capdata.c -- capdata as the kernel stores it (see capdata.h).
 */
#include "capdata.h"

#include <stdlib.h>
#include <string.h>

char *ocap_capdata_encode(const ocap_capdata_t *cd, size_t *len) {
  ocap__buf_t b = {0};
  for (size_t i = 0; i < cd->nslots; i++) {
    if ((i && ocap__buf_add(&b, " ", 1)) || ocap__buf_adds(&b, cd->slots[i])) {
      free(b.p);
      return NULL;
    }
  }
  if (ocap__buf_add(&b, "\n", 1) || ocap__buf_add(&b, cd->body, cd->blen)) {
    free(b.p);
    return NULL;
  }
  *len = b.len;
  return b.p;
}

void ocap__pcap_free(ocap__pcap_t *p) {
  if (p->copy != p->local)
    free(p->copy);
  if (p->slotv != p->slots)
    free((void *)p->slotv);
}

/* Parses an encoding. Returns 0, OCAP_ENOMEM, or OCAP_EINVAL when it has no
 * slot line; p must be freed with pcap_free in every case. With `borrow`,
 * only the slot line is copied (nothing when there are no slots) and the
 * body is read in place. */
static int pcap_parse(ocap__pcap_t *p, const char *enc, size_t len, int borrow) {
  /* The fields one by one: the inline slot array is filled as parsed, and
   * clearing it whole cost more than the rest of a small capdata's parse. */
  p->copy = NULL;
  p->slotv = p->slots;
  p->nslots = 0;
  p->body = NULL;
  p->blen = 0;
  if (borrow) {
    const char *nl = memchr(enc, '\n', len);
    if (!nl)
      return OCAP_EINVAL;
    size_t sl = (size_t)(nl - enc);
    p->body = nl + 1;
    p->blen = len - sl - 1;
    if (sl == 0)
      return 0;
    p->copy = sl < sizeof p->local ? p->local : malloc(sl + 1);
    if (!p->copy)
      return OCAP_ENOMEM;
    memcpy(p->copy, enc, sl);
    p->copy[sl] = '\0';
  } else {
    p->copy = len < sizeof p->local ? p->local : malloc(len + 1);
    if (!p->copy)
      return OCAP_ENOMEM;
    memcpy(p->copy, enc, len);
    p->copy[len] = '\0';
    char *nl = memchr(p->copy, '\n', len);
    if (!nl)
      return OCAP_EINVAL;
    *nl = '\0';
    p->body = nl + 1;
    p->blen = len - (size_t)(nl + 1 - p->copy);
  }
  size_t count = 0;
  for (char *c = p->copy; *c; c++)
    if (*c == ' ')
      count++;
  count = p->copy[0] ? count + 1 : 0;
  if (count > 64) {
    p->slotv = malloc(count * sizeof *p->slotv);
    if (!p->slotv)
      return OCAP_ENOMEM;
  }
  if (count == 0)
    return 0;
  char *save = NULL;
  for (char *t = strtok_r(p->copy, " ", &save); t; t = strtok_r(NULL, " ", &save))
    p->slotv[p->nslots++] = t;
  return 0;
}

/* Parses an encoding the kernel stored (what names where it came from);
 * one it cannot parse is corruption. */
static int pcap_load(ocap_kernel_t *k, ocap__pcap_t *p, const char *enc, size_t len,
                     const char *what, int borrow) {
  int rc = pcap_parse(p, enc, len, borrow);
  if (rc == OCAP_ENOMEM)
    return ocap__broken(k, rc, "out of memory parsing %s", what);
  if (rc)
    return ocap__broken(k, OCAP_ECORRUPT,
                        "corrupt database: %s is not capdata (it has no slot line)", what);
  return 0;
}

int ocap__pcap_load(ocap_kernel_t *k, ocap__pcap_t *p, const char *enc, size_t len,
                    const char *what) {
  return pcap_load(k, p, enc, len, what, 0);
}

int ocap__pcap_borrow(ocap_kernel_t *k, ocap__pcap_t *p, const char *enc, size_t len,
                      const char *what) {
  return pcap_load(k, p, enc, len, what, 1);
}

ocap_capdata_t ocap__pcap_view(const ocap__pcap_t *p) {
  ocap_capdata_t cd = {p->body, p->blen, p->slotv, p->nslots};
  return cd;
}

/* Builds the capdata of a kernel error `[KERNEL:<code>] <detail>`. */
int ocap__error_capdata(ocap__buf_t *b, const char *code, const char *detail) {
  b->len = 0;
  if (ocap__buf_adds(b, "\n#{\"#error\":\"[KERNEL:") || ocap__buf_adds(b, code) ||
      ocap__buf_adds(b, "] ") || ocap__buf_add_json(b, detail) ||
      ocap__buf_adds(b, "\",\"name\":\"Error\"}"))
    return OCAP_ENOMEM;
  return 0;
}
