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

#include "clist.h"
#include "gc.h"
#include "object.h"
#include "promise.h"

/* An endpoint: `kernel`, a vat id `v<N>` or a peer's `r<N>`. Checked in
 * one pass without strlen, as every syscall checks its endpoint. */
int ocap__valid_ep_any(const char *ep) {
  return ocap__ep_code(ep) != 0;
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

/* A kref, checked in one pass without strlen. */
int ocap__valid_kref(const char *r) {
  if (r[0] != 'k' || (r[1] != 'o' && r[1] != 'p') || !r[2])
    return 0;
  for (size_t i = 2; r[i]; i++)
    if (r[i] < '0' || r[i] > '9' || i >= OCAP_REF_MAX - 1)
      return 0;
  return 1;
}

/* Checks an endpoint a caller passed in. */
int ocap__check_ep(ocap_kernel_t *k, const char *ep) {
  return ocap__valid_ep(ep) ? 0 : ocap__fail(k, OCAP_EINVAL, "invalid endpoint '%.60s'", ep);
}

/* A new object owned by ep (a valid endpoint): its kref in out, its code
 * in *code. */
static int alloc_object(ocap_kernel_t *k, const char *ep, char *out, uint64_t *code) {
  long long n;
  int rc = ocap__bump(k, CTR_OBJECT, &n);
  if (rc)
    return rc;
  *code = REF_MAKE(REF_KO, n);
  ocap__ref_text(*code, out);
  return ocap__set_owner(k, out, ep);
}

int ocap_kernel_alloc_object(ocap_kernel_t *k, const char *ep, char *out) {
  uint64_t code;
  int rc = ocap__check_ep(k, ep);
  return rc ? rc : alloc_object(k, ep, out, &code);
}

/* The key of kref, whose record rec (when not NULL) the caller found: a
 * promise's record has its number, so its kpid, canonical, need not be
 * read again. */
static inline void kref_key(ocap__ckey_t *key, const char *kref, const ocap__kp_t *rec) {
  if (rec) {
    key->w = REF_MAKE(REF_KP, ocap__kp_id(rec));
    key->s = kref;
  } else {
    ocap__ckey(key, kref);
  }
}

/* entry_val for a value kept as text: checked, as it may be anything a
 * damaged store held. */
__attribute__((noinline)) static int text_val(ocap_kernel_t *k, const ocap__clist_t *c,
                                              const ocap__ckey_t *key, const ocap__ctext_t *t,
                                              char *out, int *reach, uint64_t *code) {
  const char *v = t->s;
  size_t vl = t->len;
  int r = !(vl > 2 && v[0] == '_' && v[1] == ' ');
  if (!r) {
    v += 2;
    vl -= 2;
  }
  *reach = r;
  *code = 0;
  if (!ocap__ref_like(v, vl)) {
    char kbuf[KEY_MAX], rbuf[OCAP_REF_MAX];
    const char *ref = key->s;
    if (REF_KIND(key->w) != REF_TEXT) {
      ocap__ref_text(key->w, rbuf);
      ref = rbuf;
    }
    snprintf(kbuf, sizeof kbuf, "%s.c.%s", c->ep, ref);
    return ocap__corrupt(k, kbuf, v, vl, "a reference");
  }
  memcpy(out, v, vl);
  out[vl] = '\0';
  return 1;
}

/*
 * The reference in e, c's entry for key (with a value), into out
 * (OCAP_REF_MAX bytes): 1, or a negative code when a value read from the
 * store cannot be a reference (corruption). An object's kref-keyed entry
 * is marked `_ ` once the endpoint dropped it (it recognizes it but no
 * longer reaches it): the mark is taken off, and *reach says whether it
 * was there. *code gets the reference's code, 0 when it has none.
 */
static inline int entry_val(ocap_kernel_t *k, const ocap__clist_t *c, const ocap__ckey_t *key,
                            ocap__centry_t *e, char *out, int *reach, uint64_t *code) {
  uint64_t val = e->val;
  const ocap__ctext_t *t = ocap__cv_text(val);
  if (t)
    return text_val(k, c, key, t, out, reach, code);
  *reach = !(val & CV_DROP);
  *code = val & ~CV_DROP;
  /* Copied whole: a code's text and its NUL fit vt, and out is longer. */
  memcpy(out, ocap__centry_vt(e), sizeof e->vt);
  return 1;
}

/* c's entry for key, read into out (entry_val): 1 found, 0 missing, or a
 * negative code. *sl gets its slot (ocap__clist_slot). */
static inline int entry_look(ocap_kernel_t *k, ocap__clist_t *c, const ocap__ckey_t *key, char *out,
                             int *reach, uint64_t *code, void ***sl) {
  *sl = ocap__clist_slot(c, key);
  ocap__centry_t *e = **sl;
  if (!e || !e->val)
    return 0;
  return entry_val(k, c, key, e, out, reach, code);
}

/* ep's entry for ref into out (entry_look), with *reach when not NULL. */
static int clist_ref_reach(ocap_kernel_t *k, const char *ep, const char *ref, char *out,
                           int *reach) {
  ocap__clist_t *c;
  int rc = ocap__clist_of(k, ep, &c);
  if (rc)
    return rc;
  ocap__ckey_t key;
  ocap__ckey(&key, ref);
  int r;
  uint64_t code;
  void **sl;
  rc = entry_look(k, c, &key, out, &r, &code, &sl);
  if (reach)
    *reach = r;
  return rc;
}

static int clist_ref(ocap_kernel_t *k, const char *ep, const char *ref, char *out) {
  return clist_ref_reach(k, ep, ref, out, NULL);
}

int ocap__clist_entry(ocap_kernel_t *k, const char *ep, const char *kref, char *eref, int *reach) {
  return clist_ref_reach(k, ep, kref, eref, reach);
}

static int nomem(ocap_kernel_t *k, const char *ep) {
  return ocap__broken(k, OCAP_ENOMEM, "out of memory changing the c-list of %s", ep);
}

/* Sets c's entry for key (slot sl, or NULL) to reference ref (its code
 * when it has one, else its text), marked dropped unless reach. */
static int put_ref(ocap_kernel_t *k, ocap__clist_t *c, const ocap__ckey_t *key, void **sl,
                   const char *ref, int reach) {
  uint64_t w = ocap__ref_code(ref);
  if (w)
    return ocap__clist_put(k, c, key, sl, reach ? w : w | CV_DROP);
  char v[OCAP_REF_MAX + 2];
  int n = snprintf(v, sizeof v, "%s%s", reach ? "" : "_ ", ref);
  w = ocap__cv_make(v, n < 0 ? 0 : (size_t)n < sizeof v ? (size_t)n : sizeof v - 1);
  return w ? ocap__clist_put(k, c, key, sl, w) : nomem(k, c->ep);
}

int ocap__clist_set_reach(ocap_kernel_t *k, const char *ep, const char *kref, const char *eref,
                          int reach) {
  ocap__clist_t *c;
  int rc = ocap__clist_of(k, ep, &c);
  if (rc)
    return rc;
  ocap__ckey_t key;
  ocap__ckey(&key, kref);
  return put_ref(k, c, &key, NULL, eref, reach);
}

int ocap__export_eref(ocap_kernel_t *k, const char *ep, const char *koid, char *eref) {
  if (ocap__is_kernel_ep(ep)) {
    memcpy(eref, koid, strlen(koid) + 1);
    return 1;
  }
  return clist_ref(k, ep, koid, eref);
}

/*
 * The kernel endpoint's table of what the host imports: `kernel.c.<kref>`,
 * the kref itself ("_ " in front once dropped), for each object it was
 * given that another endpoint owns. Its exports need no entry: krefs are
 * its erefs. Marks kref reachable there, counting it in the object.
 */
static int host_import(ocap_kernel_t *k, const char *kref) {
  ocap__objinfo_t o;
  char have[OCAP_REF_MAX];
  int reach = 0;
  int rc = ocap__obj_info(k, kref, &o);
  if (rc < 0 || ocap__is_kernel_ep(o.owner))
    return rc < 0 ? rc : 0;
  ocap__clist_t *c;
  rc = ocap__clist_of(k, "kernel", &c);
  if (rc)
    return rc;
  ocap__ckey_t key;
  ocap__ckey(&key, kref);
  uint64_t code;
  void **sl;
  int found = entry_look(k, c, &key, have, &reach, &code, &sl);
  if (found < 0 || (found > 0 && reach))
    return found < 0 ? found : 0;
  rc = put_ref(k, c, &key, sl, kref, 1);
  return rc ? rc : ocap__obj_count(k, kref, 1, found ? 0 : 1);
}

/* The value word for a reference the kernel enters (kref or eref, key
 * w): its code, or a text value; 0 when out of memory. */
static uint64_t entered(const ocap__ckey_t *key, const char *ref) {
  return REF_KIND(key->w) == REF_TEXT ? ocap__cv_make(ref, strlen(ref)) : key->w;
}

/* Adds an entry to c, both directions: kref (key kkey) and eref (key
 * ekey). An import of an object counts in both its counts (gc.h); the
 * exporter's own entry counts in neither. A promise's entry counts in the
 * promise, whose record the caller may pass (rec, else NULL); its eref
 * may be NULL when ekey is a code (export_new). ksl or esl,
 * when not NULL, is the slot where a lookup of kref or of eref just
 * missed: that direction is entered first, there. */
static int clist_add(ocap_kernel_t *k, ocap__clist_t *c, const char *kref, const ocap__ckey_t *kkey,
                     const char *eref, const ocap__ckey_t *ekey, ocap__kp_t *rec, void **ksl,
                     void **esl) {
  uint64_t kv = entered(kkey, kref), ev = entered(ekey, eref);
  if (!kv || !ev) {
    ocap__cv_free(kv);
    ocap__cv_free(ev);
    return nomem(k, c->ep);
  }
  int rc = esl ? ocap__clist_put2(k, c, ekey, esl, kv, kkey, ev)
               : ocap__clist_put2(k, c, kkey, ksl, ev, ekey, kv);
  if (rc)
    return rc;
  if (ocap__is_kpid(kref))
    return rec ? ocap__kp_incref(k, rec) : ocap__incref(k, kref);
  return eref[1] == '-' ? ocap__obj_count(k, kref, 1, 1) : 0;
}

/* ocap__clist_remove, with kref's record when it is a promise the caller
 * found (rec, else NULL). */
static int clist_remove(ocap_kernel_t *k, const char *ep, const char *kref, ocap__kp_t *rec) {
  ocap__clist_t *c;
  int rc = ocap__clist_of(k, ep, &c);
  if (rc)
    return rc;
  ocap__ckey_t key;
  kref_key(&key, kref, rec);
  void **sl = ocap__clist_slot(c, &key);
  ocap__centry_t *e = *sl;
  if (!e || !e->val)
    return 0;
  /* The eref's code is all a code's removal needs; a text one is read
   * and checked. */
  uint64_t val = e->val, ecode = val & ~CV_DROP;
  int reach = !(val & CV_DROP), import = REF_KIND(ecode) == REF_OI;
  char eref[OCAP_REF_MAX];
  if (REF_KIND(val) == REF_TEXT) {
    rc = text_val(k, c, &key, ocap__cv_text(val), eref, &reach, &ecode);
    if (rc < 0)
      return rc;
    import = eref[1] == '-';
  }
  if (ocap__is_kernel_ep(ep)) {
    rc = ocap__clist_put(k, c, &key, sl, 0);
  } else {
    ocap__ckey_t ekey = ocap__ckey_code(ecode);
    if (!ecode)
      ocap__ckey(&ekey, eref);
    rc = ocap__clist_put2(k, c, &key, sl, 0, &ekey, 0);
  }
  if (rc)
    return rc;
  if (rec)
    return ocap__kp_decref(k, rec);
  if (ocap__is_kpid(kref))
    return ocap__decref(k, kref);
  /* The kernel endpoint's table holds imports only. */
  if (ocap__is_kernel_ep(ep) || import)
    return ocap__obj_count(k, kref, -reach, -1);
  return 0;
}

int ocap__clist_remove(ocap_kernel_t *k, const char *ep, const char *kref) {
  return clist_remove(k, ep, kref, NULL);
}

int ocap__clist_remove_kp(ocap_kernel_t *k, const char *ep, const char *kpid, ocap__kp_t *rec) {
  return clist_remove(k, ep, kpid, rec);
}

/* An exporter names its own object again: if it was told nobody reaches
 * it, it is reachable again, and will be told again when it is not. */
static int reexport(ocap_kernel_t *k, const char *ep, const char *kref) {
  ocap__objinfo_t o;
  int rc = ocap__obj_info(k, kref, &o);
  if (rc <= 0 || !o.dropped || strcmp(o.owner, ep) != 0)
    return rc < 0 ? rc : 0;
  return ocap__obj_set_flag(k, kref, OBJ_DROPPED, 0);
}

/* The new export eref (key ekey) of c's endpoint, whose lookup missed at
 * slot esl: ocap__export_new. A promise's eref with a code may be NULL:
 * its code is all the entry needs. */
static int export_new(ocap_kernel_t *k, ocap__clist_t *c, const char *eref,
                      const ocap__ckey_t *ekey, void **esl, char *out, ocap__kp_t **rec) {
  ocap__kp_t *r = NULL;
  ocap__ckey_t kkey = {0, out};
  int object = REF_KIND(ekey->w) == REF_TEXT ? eref[0] == 'o' : REF_KIND(ekey->w) == REF_OE;
  int rc = object ? alloc_object(k, c->ep, out, &kkey.w) : ocap__alloc_promise(k, c->ep, out, &r);
  if (rec)
    *rec = r;
  if (rc)
    return rc;
  if (r)
    kkey.w = REF_MAKE(REF_KP, ocap__kp_id(r));
  return clist_add(k, c, out, &kkey, eref, ekey, r, NULL, esl);
}

/*
 * Checks a kref (code, its code) that a caller outside the kernel names:
 * only one the kernel has given out names anything. `ko02` would be taken
 * for a damaged database; an id the counter has not reached yet would get
 * a record now, and a second one of the same id when the counter gives it
 * out (freed twice at the next abort). Returns 0, or OCAP_EINVAL through
 * ocap__fail (the kernel stays usable).
 */
static int host_kref(ocap_kernel_t *k, uint64_t code, const char *kref) {
  if (!REF_IS_KREF(code))
    return ocap__fail(k, OCAP_EINVAL, "invalid kref '%.60s'", kref);
  int rc = ocap__issued(k, REF_KIND(code) == REF_KO ? CTR_OBJECT : CTR_PROMISE,
                        (long long)REF_NUM(code));
  return rc > 0 ? 0 : rc < 0 ? rc : ocap__fail(k, OCAP_EINVAL, "unknown kref '%.60s'", kref);
}

int ocap_kernel_eref_to_kref(ocap_kernel_t *k, const char *ep, const char *eref, char *out) {
  if (ocap__is_kernel_ep(ep)) {
    int rc = host_kref(k, ocap__ref_code(eref), eref);
    if (rc)
      return rc;
    memcpy(out, eref, strlen(eref) + 1);
    return out[1] == 'o' ? reexport(k, ep, out) : 0;
  }
  ocap__ckey_t key;
  ocap__ckey(&key, eref);
  /* A vref with a code is valid; any other is checked as text, after the
   * endpoint. */
  if (!REF_IS_VREF(key.w) && (REF_KIND(key.w) != REF_TEXT || !ocap__valid_eref(eref))) {
    int bad = ocap__check_ep(k, ep);
    return bad ? bad : ocap__fail(k, OCAP_EINVAL, "vat %s used invalid vref '%.60s'", ep, eref);
  }
  ocap__clist_t *c;
  int rc = ocap__clist_of_ep(k, ep, &c);
  if (rc)
    return rc;
  uint64_t kcode;
  int reach;
  void **sl; /* where a new export's entry goes */
  rc = entry_look(k, c, &key, out, &reach, &kcode, &sl);
  if (rc < 0)
    return rc;
  if (rc > 0) {
    if (kcode ? !REF_IS_KREF(kcode) : !ocap__valid_kref(out))
      return ocap__broken(k, OCAP_ECORRUPT,
                          "corrupt database: key '%s.c.%s' holds '%s', not a kref", ep, eref, out);
    if (eref[0] != 'o')
      return 0;
    if (eref[1] == '+')
      return reexport(k, ep, out);
    /* A vat may only send what it still reaches: a dropped import may
     * already be retired by its exporter. */
    ocap__ckey_t kkey = ocap__ckey_code(kcode);
    if (!kcode)
      ocap__ckey(&kkey, out);
    ocap__centry_t *e = *ocap__clist_slot(c, &kkey);
    if (e && e->val && REF_KIND(e->val) != REF_TEXT) {
      reach = !(e->val & CV_DROP);
    } else if (e && e->val) {
      char v[OCAP_REF_MAX];
      uint64_t code;
      rc = entry_val(k, c, &kkey, e, v, &reach, &code);
      if (rc < 0)
        return rc;
    }
    if (!e || !e->val || !reach)
      return ocap__fail(k, OCAP_EINVAL, "vat %s used dropped import '%s'", ep, eref);
    return 0;
  }
  if (eref[1] == '-')
    return ocap__fail(k, OCAP_EINVAL, "vat %s used unknown import '%s'", ep, eref);
  return export_new(k, c, eref, &key, sl, out, NULL);
}

int ocap__import_kp(ocap_kernel_t *k, const char *ep, long long n, char *out, uint64_t *kcode) {
  ocap__ckey_t key = ocap__ckey_code(REF_MAKE(REF_PI, n));
  ocap__clist_t *c;
  int rc = ocap__clist_of_ep(k, ep, &c);
  if (rc)
    return rc;
  int reach;
  void **sl;
  rc = entry_look(k, c, &key, out, &reach, kcode, &sl);
  if (rc < 0)
    return rc;
  if (rc > 0 && (*kcode ? REF_IS_KREF(*kcode) : ocap__valid_kref(out)))
    return 0;
  /* Failed: the vref's text is made for the message only. */
  char eref[OCAP_REF_MAX];
  ocap__ref_text(key.w, eref);
  if (rc > 0)
    return ocap__broken(k, OCAP_ECORRUPT, "corrupt database: key '%s.c.%s' holds '%s', not a kref",
                        ep, eref, out);
  return ocap__fail(k, OCAP_EINVAL, "vat %s used unknown import '%s'", ep, eref);
}

/* ocap__export_result of the result whose key is key (checked) and whose
 * text is result, NULL when it has a code. */
static int export_result_key(ocap_kernel_t *k, const char *ep, const ocap__ckey_t *key,
                             const char *result, char *out, ocap__kp_t **rec) {
  ocap__clist_t *c;
  int rc = ocap__clist_of(k, ep, &c);
  if (rc)
    return rc;
  /* Looked up once: a new export is entered where the lookup missed. */
  void **sl = ocap__clist_slot(c, key);
  if (ocap__clist_val(sl)) {
    char text[OCAP_REF_MAX];
    if (!result)
      ocap__ref_text(key->w, text);
    return ocap__fail(k, OCAP_EINVAL, "vat %s reused result vref '%s'", ep, result ? result : text);
  }
  return export_new(k, c, result, key, sl, out, rec);
}

int ocap__export_result(ocap_kernel_t *k, const char *ep, const char *result, char *out,
                        ocap__kp_t **rec) {
  ocap__ckey_t key;
  ocap__ckey(&key, result);
  /* A p+N with a code is valid; any other is checked as text. */
  if (REF_KIND(key.w) != REF_PE && (REF_KIND(key.w) != REF_TEXT || !ocap__valid_eref(result) ||
                                    result[0] != 'p' || result[1] != '+'))
    return ocap__fail(k, OCAP_EINVAL, "vat %s used invalid result vref '%.60s'", ep, result);
  return export_result_key(k, ep, &key, result, out, rec);
}

int ocap__export_result_pe(ocap_kernel_t *k, const char *ep, long long n, char *out,
                           ocap__kp_t **rec) {
  ocap__ckey_t key = ocap__ckey_code(REF_MAKE(REF_PE, n));
  return export_result_key(k, ep, &key, NULL, out, rec);
}

int ocap_kernel_kref_of(ocap_kernel_t *k, const char *ep, const char *eref, char *out) {
  if (ocap__is_kernel_ep(ep) || !ocap__valid_ep(ep) || !ocap__valid_eref(eref))
    return 0;
  return clist_ref(k, ep, eref, out);
}

/* ocap_kernel_kref_to_eref, with kref's record when it is a promise the
 * caller found (rec, else NULL). */
static int kref_to_eref(ocap_kernel_t *k, const char *ep, const char *kref, ocap__kp_t *rec,
                        char *out) {
  ocap__ckey_t key;
  kref_key(&key, kref, rec);
  /* A kref with a code is valid; any other is checked as text. */
  if (!REF_IS_KREF(key.w) && (REF_KIND(key.w) != REF_TEXT || !ocap__valid_kref(kref)))
    return ocap__broken(k, OCAP_ECORRUPT, "corrupt database: '%.60s' is not a kref", kref);
  if (ocap__is_kernel_ep(ep)) {
    memcpy(out, kref, strlen(kref) + 1);
    return kref[1] == 'o' ? host_import(k, kref) : 0;
  }
  ocap__clist_t *c;
  int rc = ocap__clist_of_ep(k, ep, &c);
  if (rc)
    return rc;
  int reach;
  uint64_t ecode;
  void **sl; /* the entry's slot, for the changes below */
  rc = entry_look(k, c, &key, out, &reach, &ecode, &sl);
  if (rc < 0)
    return rc;
  if (rc > 0) {
    if (ecode ? !REF_IS_VREF(ecode) : !ocap__valid_eref(out))
      return ocap__broken(k, OCAP_ECORRUPT,
                          "corrupt database: key '%s.c.%s' holds '%s', not a vref", ep, kref, out);
    /* An import the vat dropped and is given again: it reaches it again. */
    if (reach)
      return 0;
    rc = put_ref(k, c, &key, sl, out, 1);
    return rc ? rc : ocap__obj_count(k, kref, 1, 0);
  }
  int promise = REF_KIND(key.w) == REF_KP || (REF_KIND(key.w) == REF_TEXT && ocap__is_kpid(kref));
  long long n;
  rc = ocap__clist_next_id(k, c, promise, &n);
  if (rc)
    return rc;
  ocap__ckey_t ekey = ocap__ckey_code(REF_MAKE(promise ? REF_PI : REF_OI, n));
  ocap__ref_text(ekey.w, out);
  return clist_add(k, c, kref, &key, out, &ekey, rec, sl, NULL);
}

int ocap_kernel_kref_to_eref(ocap_kernel_t *k, const char *ep, const char *kref, char *out) {
  int rc = host_kref(k, ocap__ref_code(kref), kref);
  return rc ? rc : kref_to_eref(k, ep, kref, NULL, out);
}

int ocap__kref_to_eref(ocap_kernel_t *k, const char *ep, const char *kref, char *out) {
  return kref_to_eref(k, ep, kref, NULL, out);
}

int ocap__kp_to_eref(ocap_kernel_t *k, const char *ep, const char *kpid, ocap__kp_t *rec,
                     char *out) {
  return kref_to_eref(k, ep, kpid, rec, out);
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
    int rc = ocap__kref_to_eref(k, ep, in->slotv[i], pool[i]);
    if (rc)
      return rc;
    slots[i] = pool[i];
  }
  return 0;
}

/* What ocap__clist_krefs collects. */
typedef struct krefs {
  ocap_kernel_t *k;
  const char *ep;
  char (*v)[OCAP_REF_MAX];
  size_t n, cap;
} krefs_t;

static int collect_kref(void *ud, const char *ref) {
  krefs_t *c = ud;
  if (strlen(ref) >= OCAP_REF_MAX || !ocap__valid_kref(ref))
    return ocap__broken(c->k, OCAP_ECORRUPT,
                        "corrupt database: c-list key '%s.c.%.60s' names no kref", c->ep, ref);
  if (c->n == c->cap) {
    c->cap = c->cap ? c->cap * 2 : 64;
    void *nv = realloc(c->v, c->cap * OCAP_REF_MAX);
    if (!nv)
      return ocap__broken(c->k, OCAP_ENOMEM, "out of memory listing the c-list of %s", c->ep);
    c->v = nv;
  }
  memcpy(c->v[c->n++], ref, strlen(ref) + 1);
  return 0;
}

/*
 * The krefs in ep's c-list that start with `kind` ("k" for all, "kp" for
 * promises), in byte order, collected first because callers delete
 * entries as they go. Returns the count, or a negative code; *out is
 * malloc'd (caller frees).
 */
long ocap__clist_krefs(ocap_kernel_t *k, const char *ep, const char *kind,
                       char (**out)[OCAP_REF_MAX]) {
  krefs_t c = {k, ep, NULL, 0, 0};
  int rc = ocap__clist_each(k, ep, kind, collect_kref, &c);
  *out = NULL;
  if (rc) {
    free(c.v);
    return rc;
  }
  *out = c.v;
  return (long)c.n;
}

int ocap_kernel_revoke(ocap_kernel_t *k, const char *kref) {
  if (!ocap__valid_kref(kref))
    return ocap__fail(k, OCAP_EINVAL, "invalid kref '%.60s'", kref);
  if (ocap__is_kpid(kref))
    return ocap__fail(k, OCAP_EINVAL, "cannot revoke promise %s", kref);
  char owner[OCAP_REF_MAX];
  int owned = ocap__get_owner(k, kref, owner);
  int revoked = owned ? 0 : ocap__get_revoked(k, kref);
  if (owned < 0 || revoked < 0)
    return owned < 0 ? owned : revoked;
  if (!owned && !revoked)
    return ocap__fail(k, OCAP_ENOTFOUND, "unknown object %s", kref);
  return ocap__set_revoked(k, kref);
}

int ocap_kernel_is_revoked(ocap_kernel_t *k, const char *kref) {
  if (!ocap__valid_kref(kref))
    return 0;
  return ocap__get_revoked(k, kref);
}
