/*
 * refs.h -- references, kernel objects and c-lists (internal to the
 * kernel; see kstate.h).
 *
 * A vat names things by vrefs, the kernel by krefs; each endpoint's c-list
 * maps one to the other in both directions, `<ep>.c.<kref> = <vref>` and
 * `<ep>.c.<vref> = <kref>` (docs/storage.md). The kernel endpoint uses
 * krefs as its erefs, so its c-list is the identity and is not stored.
 */
#ifndef OCAP_REFS_H
#define OCAP_REFS_H

#include <stdint.h>

#include "capdata.h"
#include "kstate.h"
#include "promise.h"

static inline int ocap__is_kpid(const char *ref) {
  return ref[0] == 'k' && ref[1] == 'p';
}

/* A remote peer's endpoint, `r<N>` (docs/remote.md): the kernel keeps its
 * c-list like a vat's, and the host's remote layer takes its deliveries. */
static inline int ocap__is_peer_ep(const char *ep) {
  return ep[0] == 'r';
}

/*
 * A reference in one word, its code: the N of a kref `ko<N>` or `kp<N>`
 * or of a vref `o+<N>`, `o-<N>`, `p+<N>`, `p-<N>`, shifted left by three,
 * with its kind (REF_*) in the three low bits. Only the canonical text of
 * a number has a code (no leading zero, at most 18 digits), so a code
 * stands for exactly one text and back; any other reference (a virtual
 * object's `o+d12/3`, or whatever a damaged store holds) has code 0 and
 * is handled as text. The c-lists (clist.c) key their entries by code and
 * keep their values as codes, so that a lookup neither hashes nor
 * compares strings; the text is made only for the store and for callers.
 */
enum {
  REF_KO = 1, /* ko<N>: an object's kref */
  REF_KP,     /* kp<N>: a promise's kref */
  REF_OE,     /* o+<N>: an object a vat exports */
  REF_OI,     /* o-<N>: an object a vat imports */
  REF_PE,     /* p+<N>: a promise a vat exports */
  REF_PI,     /* p-<N>: a promise a vat imports */
  REF_TEXT    /* not a code: the kind c-lists give a reference kept as text */
};
#define REF_KIND(w) ((unsigned)(w)&7u)
#define REF_NUM(w) ((uint64_t)(w) >> 3)
#define REF_MAKE(kind, n) (((uint64_t)(n) << 3) | (uint64_t)(kind))
#define REF_IS_KREF(w) (REF_KIND(w) == REF_KO || REF_KIND(w) == REF_KP)
#define REF_IS_VREF(w) (REF_KIND(w) >= REF_OE && REF_KIND(w) <= REF_PI)

/* The code of ref, read in one pass without strlen; 0 when it has none. */
static inline uint64_t ocap__ref_code(const char *r) {
  unsigned kind;
  if (r[0] == 'k') {
    if (r[1] == 'o')
      kind = REF_KO;
    else if (r[1] == 'p')
      kind = REF_KP;
    else
      return 0;
  } else if (r[0] == 'o' || r[0] == 'p') {
    if (r[1] == '+')
      kind = r[0] == 'o' ? REF_OE : REF_PE;
    else if (r[1] == '-')
      kind = r[0] == 'o' ? REF_OI : REF_PI;
    else
      return 0;
  } else {
    return 0;
  }
  const char *d = r + 2, *p = d + 1;
  uint64_t n = (unsigned char)d[0] - (unsigned)'0';
  if (n >= 10)
    return 0;
  if (n == 0)
    return d[1] ? 0 : kind;
  /* Two digits a step: a kref's number has a few. The length is checked
   * once at the end: n may wrap on the way. */
  for (;;) {
    unsigned c0 = (unsigned char)p[0] - (unsigned)'0';
    if (c0 >= 10)
      break;
    unsigned c1 = (unsigned char)p[1] - (unsigned)'0';
    if (c1 >= 10) {
      n = n * 10 + c0;
      p++;
      break;
    }
    n = n * 100 + c0 * 10 + c1;
    p += 2;
  }
  return *p || p - d > 18 ? 0 : REF_MAKE(kind, n);
}

/* The N of a kref of kind REF_KO or REF_KP written as the kernel writes
 * it, at most COUNT_MAX; -1 for anything else (a kref read from a damaged
 * store may not be). */
static inline long long ocap__kref_number(const char *r, unsigned kind) {
  uint64_t w = ocap__ref_code(r);
  return REF_KIND(w) == kind && REF_NUM(w) <= (uint64_t)COUNT_MAX ? (long long)REF_NUM(w) : -1;
}

/* Writes the text of code w (not 0) into out, NUL-terminated; returns its
 * length (at most 20). */
size_t ocap__ref_text(uint64_t w, char *out);

/* Syntax checks: an endpoint (`kernel`, `v<N>` or `r<N>`), a vref, a kref.
 * ocap__valid_ep takes a vat of one digit inline, where a round trip
 * checks a few and the call cost more than the check. */
int ocap__valid_ep_any(const char *ep);
static inline int ocap__valid_ep(const char *ep) {
  if (ep[0] == 'v' && (unsigned char)ep[1] - (unsigned)'1' < 9u && !ep[2])
    return 1;
  return ocap__valid_ep_any(ep);
}
int ocap__valid_eref(const char *r);
int ocap__valid_kref(const char *r);
/* Checks an endpoint a caller passed in (a caller's fault when bad). */
int ocap__check_ep(ocap_kernel_t *k, const char *ep);

/* Removes kref from ep's c-list, both directions, dropping its reference
 * (for the kernel endpoint, from its table of imports). */
int ocap__clist_remove(ocap_kernel_t *k, const char *ep, const char *kref);
/* The same for a promise whose record the caller holds (promise.h). */
int ocap__clist_remove_kp(ocap_kernel_t *k, const char *ep, const char *kpid, ocap__kp_t *rec);
/* ocap_kernel_kref_to_eref (kernel.h) for a kref the kernel holds, which
 * it gave out itself: the public call checks the caller's kref first. */
int ocap__kref_to_eref(ocap_kernel_t *k, const char *ep, const char *kref, char *out);
/* ocap_kernel_kref_to_eref (kernel.h) for a promise whose record the
 * caller holds. */
int ocap__kp_to_eref(ocap_kernel_t *k, const char *ep, const char *kpid, ocap__kp_t *rec,
                     char *out);
/* ep's entry for kref: 1 with its eref in eref (OCAP_REF_MAX bytes) and
 * *reach 0 when ep dropped it (an import it only recognizes), else 1; 0
 * when ep has none (for the kernel endpoint: when it does not import it),
 * or a negative code. */
int ocap__clist_entry(ocap_kernel_t *k, const char *ep, const char *kref, char *eref, int *reach);
/* Rewrites ep's kref-keyed entry for an import, reachable or dropped. */
int ocap__clist_set_reach(ocap_kernel_t *k, const char *ep, const char *kref, const char *eref,
                          int reach);
/* Allocates the promise that `result`, the result vref of a message vat
 * ep sends, stands for (a new export p+N: checked here, a caller's fault
 * when it is not one or when ep's c-list has it already), with its kpid in
 * out and its record in *rec, and enters it in ep's c-list. */
int ocap__export_result(ocap_kernel_t *k, const char *ep, const char *result, char *out,
                        ocap__kp_t **rec);
/* The same for the result p+<n> (0 < n <= COUNT_MAX), given as its
 * number: a vat's syscall passes it so, and no text of it is made unless
 * the call fails. */
int ocap__export_result_pe(ocap_kernel_t *k, const char *ep, long long n, char *out,
                           ocap__kp_t **rec);
/* ocap_kernel_eref_to_kref of vat ep's vref p-<n> (0 < n <= COUNT_MAX),
 * given as its number, as a vat's resolve syscall has it: the kpid in out
 * and its code in *kcode (0 when it has none). No text of the vref is
 * made unless the call fails. */
int ocap__import_kp(ocap_kernel_t *k, const char *ep, long long n, char *out, uint64_t *kcode);
/* The eref of koid in its exporter ep: 1 with it in eref, 0 when ep's
 * c-list lacks it, or a negative code. */
int ocap__export_eref(ocap_kernel_t *k, const char *ep, const char *koid, char *eref);
/*
 * The krefs in ep's c-list that start with `kind` ("k" for all, "kp" for
 * promises). Returns the count, or a negative code; *out is malloc'd.
 */
long ocap__clist_krefs(ocap_kernel_t *k, const char *ep, const char *kind,
                       char (**out)[OCAP_REF_MAX]);

/* Translates capdata from ep's erefs into a stored encoding in krefs. */
int ocap__capdata_e2k(ocap_kernel_t *k, const char *ep, const ocap_capdata_t *cd, ocap__buf_t *out);
/* Translates a stored capdata into ep's erefs, importing as needed; the
 * erefs are written into `pool`, which must outlive `slots`. */
int ocap__capdata_k2e(ocap_kernel_t *k, const char *ep, const ocap__pcap_t *in,
                      char (*pool)[OCAP_REF_MAX], const char **slots);

#endif
