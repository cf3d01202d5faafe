/*
 * refs.c -- references, kernel objects and c-lists (see refs.h).
 *
 * A message's slots pass here twice: when a vat sends, its vrefs become
 * krefs (exporting what the vat names for the first time), and when the
 * kernel delivers, krefs become the receiver's vrefs (importing what it
 * has not seen yet).
 */
#include "refs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "promise.h"

/* An endpoint: `kernel` or a vat id `v<N>`. */
int ocap__valid_ep(const char *ep) {
  size_t n = strlen(ep);
  if (ocap__is_kernel_ep(ep))
    return 1;
  if (n < 2 || n > 17 || ep[0] != 'v' || (ep[1] == '0' && n > 2))
    return 0;
  for (size_t i = 1; i < n; i++)
    if (ep[i] < '0' || ep[i] > '9')
      return 0;
  return 1;
}

int ocap__valid_eref(const char *r) {
  size_t n = strlen(r);
  if (n < 3 || n >= OCAP_REF_MAX)
    return 0;
  if ((r[0] != 'o' && r[0] != 'p') || (r[1] != '+' && r[1] != '-'))
    return 0;
  for (size_t i = 2; i < n; i++) {
    char c = r[i];
    if (!((c >= '0' && c <= '9') || c == 'd' || c == 'v' || c == '/' || c == ':'))
      return 0;
  }
  return 1;
}

int ocap__valid_kref(const char *r) {
  size_t n = strlen(r);
  if (n < 3 || n >= OCAP_REF_MAX || r[0] != 'k' || (r[1] != 'o' && r[1] != 'p'))
    return 0;
  for (size_t i = 2; i < n; i++)
    if (r[i] < '0' || r[i] > '9')
      return 0;
  return 1;
}

/* Checks an endpoint a caller passed in. */
int ocap__check_ep(ocap_kernel_t *k, const char *ep) {
  return ocap__valid_ep(ep) ? 0 : ocap__fail(k, OCAP_EINVAL, "invalid endpoint '%.60s'", ep);
}

int ocap_kernel_alloc_object(ocap_kernel_t *k, const char *ep, char *out) {
  long long n;
  int rc = ocap__check_ep(k, ep);
  if (!rc)
    rc = ocap__bump(k, CTR_OBJECT, &n);
  if (rc)
    return rc;
  memcpy(out, "ko", 2);
  out[2 + ocap__fmt_ll(out + 2, n)] = '\0';
  return ocap__setv(k, ep, "%s.owner", out);
}

static int clist_add(ocap_kernel_t *k, const char *ep, const char *kref, const char *eref) {
  int rc = ocap__setv(k, eref, "%s.c.%s", ep, kref);
  if (!rc)
    rc = ocap__setv(k, kref, "%s.c.%s", ep, eref);
  if (!rc)
    rc = ocap__incref(k, kref);
  return rc;
}

int ocap__clist_remove(ocap_kernel_t *k, const char *ep, const char *kref) {
  char eref[OCAP_REF_MAX];
  if (ocap__is_kernel_ep(ep))
    return 0;
  int rc = ocap__get_ref(k, eref, "%s.c.%s", ep, kref);
  if (rc <= 0)
    return rc;
  rc = ocap__delv(k, "%s.c.%s", ep, kref);
  if (!rc)
    rc = ocap__delv(k, "%s.c.%s", ep, eref);
  if (!rc)
    rc = ocap__decref(k, kref);
  return rc;
}

int ocap_kernel_eref_to_kref(ocap_kernel_t *k, const char *ep, const char *eref, char *out) {
  if (ocap__is_kernel_ep(ep)) {
    if (!ocap__valid_kref(eref))
      return ocap__fail(k, OCAP_EINVAL, "invalid kref '%.60s'", eref);
    memcpy(out, eref, strlen(eref) + 1);
    return 0;
  }
  if (!ocap__valid_ep(ep))
    return ocap__fail(k, OCAP_EINVAL, "invalid endpoint '%.60s'", ep);
  if (!ocap__valid_eref(eref))
    return ocap__fail(k, OCAP_EINVAL, "vat %s used invalid vref '%.60s'", ep, eref);
  int rc = ocap__get_ref(k, out, "%s.c.%s", ep, eref);
  if (rc < 0)
    return rc;
  if (rc > 0) {
    if (!ocap__valid_kref(out))
      return ocap__broken(k, OCAP_ECORRUPT,
                          "corrupt database: key '%s.c.%s' holds '%s', not a kref", ep, eref, out);
    return 0;
  }
  if (eref[1] == '-')
    return ocap__fail(k, OCAP_EINVAL, "vat %s used unknown import '%s'", ep, eref);
  rc =
      eref[0] == 'o' ? ocap_kernel_alloc_object(k, ep, out) : ocap_kernel_alloc_promise(k, ep, out);
  if (!rc)
    rc = clist_add(k, ep, out, eref);
  return rc;
}

int ocap_kernel_kref_to_eref(ocap_kernel_t *k, const char *ep, const char *kref, char *out) {
  if (!ocap__valid_kref(kref))
    return ocap__broken(k, OCAP_ECORRUPT, "corrupt database: '%.60s' is not a kref", kref);
  if (ocap__is_kernel_ep(ep)) {
    memcpy(out, kref, strlen(kref) + 1);
    return 0;
  }
  if (!ocap__valid_ep(ep))
    return ocap__fail(k, OCAP_EINVAL, "invalid endpoint '%.60s'", ep);
  int rc = ocap__get_ref(k, out, "%s.c.%s", ep, kref);
  if (rc < 0)
    return rc;
  if (rc > 0) {
    if (!ocap__valid_eref(out))
      return ocap__broken(k, OCAP_ECORRUPT,
                          "corrupt database: key '%s.c.%s' holds '%s', not a vref", ep, kref, out);
    return 0;
  }
  int promise = ocap__is_kpid(kref);
  long long n;
  rc = ocap__get_count(k, 1, &n, "%s.%s", ep, promise ? "nextPromiseId" : "nextObjectId");
  if (!rc && n >= COUNT_MAX)
    rc = ocap__broken(k, OCAP_ECORRUPT, "counter '%s.%s' is exhausted", ep,
                      promise ? "nextPromiseId" : "nextObjectId");
  if (!rc)
    rc = ocap__seti(k, n + 1, "%s.%s", ep, promise ? "nextPromiseId" : "nextObjectId");
  if (rc)
    return rc;
  out[0] = promise ? 'p' : 'o';
  out[1] = '-';
  out[2 + ocap__fmt_ll(out + 2, n)] = '\0';
  return clist_add(k, ep, kref, out);
}

/* Translates capdata slots from ep's erefs to krefs into an encoding. */
int ocap__capdata_e2k(ocap_kernel_t *k, const char *ep, const ocap_capdata_t *cd,
                      ocap__buf_t *out) {
  char kref[OCAP_REF_MAX];
  for (size_t i = 0; i < cd->nslots; i++) {
    int rc = ocap_kernel_eref_to_kref(k, ep, cd->slots[i], kref);
    if (rc)
      return rc;
    if ((i && ocap__buf_add(out, " ", 1)) || ocap__buf_adds(out, kref))
      return ocap__broken(k, OCAP_ENOMEM, "out of memory translating capdata");
  }
  if (ocap__buf_add(out, "\n", 1) || ocap__buf_add(out, cd->body, cd->blen))
    return ocap__broken(k, OCAP_ENOMEM, "out of memory translating capdata");
  return 0;
}

/* Translates a stored capdata (krefs) into ep's erefs, importing as needed.
 * The erefs are written into `pool`, which must outlive `out`. */
int ocap__capdata_k2e(ocap_kernel_t *k, const char *ep, const ocap__pcap_t *in,
                      char (*pool)[OCAP_REF_MAX], const char **slots) {
  for (size_t i = 0; i < in->nslots; i++) {
    int rc = ocap_kernel_kref_to_eref(k, ep, in->slotv[i], pool[i]);
    if (rc)
      return rc;
    slots[i] = pool[i];
  }
  return 0;
}

/*
 * The krefs in ep's c-list that start with `kind` ("k" for all, "kp" for
 * promises), collected first because callers delete entries as they go.
 * The scan moves on from the last key it saw, so it reads each key once.
 * Returns the count, or a negative code; *out is malloc'd (caller frees).
 */
long ocap__clist_krefs(ocap_kernel_t *k, const char *ep, const char *kind,
                       char (**out)[OCAP_REF_MAX]) {
  char prefix[KEY_MAX];
  int plen = snprintf(prefix, sizeof prefix, "%s.c.%s", ep, kind);
  size_t skip = (size_t)plen - strlen(kind); /* where the kref starts */
  size_t n = 0, cap = 0;
  char(*krefs)[OCAP_REF_MAX] = NULL;
  const char *key;
  size_t klen;
  char after[KEY_MAX] = "";
  size_t alen = 0;
  int rc;
  *out = NULL;
  while ((rc = ocap_store_next_key(k->s, prefix, (size_t)plen, after, alen, 0, &key, &klen)) == 1) {
    if (klen - skip >= OCAP_REF_MAX || klen >= KEY_MAX) {
      char sk[64];
      free(krefs);
      return ocap__broken(k, OCAP_ECORRUPT, "corrupt database: c-list key %s is too long",
                          ocap__shown(key, klen, sk));
    }
    memcpy(after, key, klen);
    after[klen] = '\0';
    alen = klen;
    if (n == cap) {
      cap = cap ? cap * 2 : 64;
      void *nk = realloc(krefs, cap * OCAP_REF_MAX);
      if (!nk) {
        free(krefs);
        return ocap__broken(k, OCAP_ENOMEM, "out of memory listing the c-list of %s", ep);
      }
      krefs = nk;
    }
    memcpy(krefs[n], after + skip, klen - skip + 1);
    if (!ocap__valid_kref(krefs[n])) {
      free(krefs);
      return ocap__broken(k, OCAP_ECORRUPT, "corrupt database: c-list key '%s' names no kref",
                          after);
    }
    n++;
  }
  if (rc < 0) {
    free(krefs);
    return ocap__store_failed(k, rc, "scan", prefix, (size_t)plen);
  }
  *out = krefs;
  return (long)n;
}

int ocap_kernel_revoke(ocap_kernel_t *k, const char *kref) {
  if (!ocap__valid_kref(kref))
    return ocap__fail(k, OCAP_EINVAL, "invalid kref '%.60s'", kref);
  if (ocap__is_kpid(kref))
    return ocap__fail(k, OCAP_EINVAL, "cannot revoke promise %s", kref);
  int owned = ocap__has(k, "%s.owner", kref);
  int revoked = owned ? 0 : ocap__has(k, "%s.revoked", kref);
  if (owned < 0 || revoked < 0)
    return owned < 0 ? owned : revoked;
  if (!owned && !revoked)
    return ocap__fail(k, OCAP_ENOTFOUND, "unknown object %s", kref);
  return ocap__setv(k, "true", "%s.revoked", kref);
}

int ocap_kernel_is_revoked(ocap_kernel_t *k, const char *kref) {
  if (!ocap__valid_kref(kref))
    return 0;
  return ocap__has(k, "%s.revoked", kref);
}
