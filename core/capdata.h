/*
 * capdata.h -- capdata as the kernel stores it, "slot slot\nbody" (internal
 * to the kernel; see kstate.h).
 *
 * The slots of a stored capdata are krefs; ocap_capdata_encode (kernel.h)
 * writes one, ocap__pcap_load reads one back.
 */
#ifndef OCAP_CAPDATA_H
#define OCAP_CAPDATA_H

#include "kstate.h"

/* Encodings up to this size (with the terminating zero) are copied into
 * the parsed capdata itself: a notify's result is usually a few bytes,
 * and a malloc and a free cost more than the rest of its parse. */
#define OCAP_PCAP_LOCAL 80

/* A parsed capdata: slots point into a private copy, which is `local`
 * when it fits. Like the inline slot array, that makes an ocap__pcap_t
 * point into itself: it must not be moved or copied once parsed. */
typedef struct ocap__pcap {
  char *copy;
  char local[OCAP_PCAP_LOCAL];
  const char *slots[64];
  const char **slotv;
  size_t nslots;
  const char *body;
  size_t blen;
} ocap__pcap_t;

/* Parses an encoding the kernel stored (`what` names where it came from);
 * one it cannot parse is corruption. p must be freed in every case. */
int ocap__pcap_load(ocap_kernel_t *k, ocap__pcap_t *p, const char *enc, size_t len,
                    const char *what);
/* The same, but the body is read in place and only the slots are copied
 * (nothing, when there are none): enc must outlive p. A message delivered
 * from the run queue is parsed this way, sparing a copy of its body. */
int ocap__pcap_borrow(ocap_kernel_t *k, ocap__pcap_t *p, const char *enc, size_t len,
                      const char *what);
void ocap__pcap_free(ocap__pcap_t *p);
/* The parsed capdata as the interface passes it (no copy). */
ocap_capdata_t ocap__pcap_view(const ocap__pcap_t *p);

/* Builds the capdata of a kernel error `[KERNEL:<code>] <detail>` into b. */
int ocap__error_capdata(ocap__buf_t *b, const char *code, const char *detail);

#endif
