/*
 * lsyscall.c -- a vat's syscalls: what its liveslots calls to send,
 * resolve and subscribe, to use its own part of the store, to log, and to
 * drop the references it no longer uses. Every syscall that acts for its
 * vat holds the vat's record, so a vat can only act as itself, and checks the vat's budgets
 * before the kernel holds anything. A message sent here waits in the
 * kernel's run queue (kernel.c) for a crank (lkernel.c) to deliver it
 * (ldeliver.c).
 */
#include <string.h>

#include "lkernel_int.h"

#include "hex.h"
#include "lsmallcaps.h"
#include "smallcaps.h"

/*
 * [-0, +(0|1), e] Reads the slots table at idx into `small` when it fits
 * (the common case, so the crank path does not allocate), else into a
 * temporary array owned by a userdata it pushes, so that nothing leaks if a
 * later call raises. The strings stay owned by the table, which the caller
 * keeps on the stack; that is why a slot must already be a string.
 */
static const char **read_slots(lua_State *L, int idx, size_t *n, const char **small) {
  idx = lua_absindex(L, idx);
  if (lua_isnoneornil(L, idx)) {
    *n = 0;
    return NULL;
  }
  luaL_checktype(L, idx, LUA_TTABLE);
  size_t len = (size_t)lua_rawlen(L, idx);
  const char **slots = len <= SMALL_SLOTS ? small : lua_newuserdatauv(L, len * sizeof *slots, 0);
  for (size_t i = 0; i < len; i++) {
    /* A number would be converted on the stack only, and the new string
     * would die with the pop below. */
    slots[i] = lua_rawgeti(L, idx, (lua_Integer)i + 1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1);
    if (!slots[i])
      luaL_error(L, "slot %d is not a string", (int)i + 1);
  }
  *n = len;
  return slots;
}

/* [-0, +(0|1), e] Reads a body and its slots (see read_slots); the
 * capdata borrows the strings from the stack. */
ocap_capdata_t ocap__check_capdata(lua_State *L, int body_idx, int slots_idx, const char **small) {
  ocap_capdata_t cd;
  cd.body = luaL_checklstring(L, body_idx, &cd.blen);
  cd.slots = read_slots(L, slots_idx, &cd.nslots, small);
  return cd;
}

/* ---- syscalls of a vat ---- */

/* [-0, +0, e] Makes the vat's crank fatal, then raises so the vat stops
 * here; it never returns. The mark survives a pcall in the vat that would
 * catch the error. */
static int illegal(lua_State *V, lvat_t *rec, const char *msg) {
  if (!rec->fatal) {
    rec->fatal = OCAP_FATAL_ILLEGAL_SYSCALL;
    free(rec->why);
    rec->why = dupstr(msg);
  }
  return luaL_error(V, "illegal syscall: %s", msg);
}

/*
 * [-0, +0, e] Reports a syscall's failure and never returns. A kernel
 * failure (the store failed, or holds something that cannot be right) is
 * not the vat's fault: the vat is stopped with an error, and the crank
 * fails and rolls back. Anything else is the vat's illegal syscall.
 */
static int syscall_failed(lua_State *V, lvat_t *rec) {
  ocap_kernel_t *k = rec->lk->k;
  if (ocap_kernel_failed(k))
    return luaL_error(V, "kernel failure: %s", ocap_kernel_errmsg(k));
  return illegal(V, rec, ocap_kernel_errmsg(k));
}

/* [-0, +0, e] Records a failed store call of a syscall as a kernel failure
 * and raises; it never returns. */
static int store_call_failed(lua_State *V, lvat_t *rec, int rc, const char *what) {
  char msg[512];
  snprintf(msg, sizeof msg, "%s failed: %s: %s", what, ocap_strerror(rc),
           ocap_store_errmsg(rec->lk->s));
  ocap_kernel_note_failure(rec->lk->k, rc, msg);
  return syscall_failed(V, rec);
}

/*
 * [-0, +0, e] Makes the vat's crank fatal for going over a budget of one
 * delivery, then raises; it never returns. Like an illegal syscall, the
 * mark survives a pcall in the vat that would catch the error.
 */
static int over_quota(lua_State *V, lvat_t *rec, const char *fmt, long long n, long long max) {
  char msg[256];
  snprintf(msg, sizeof msg, fmt, n, max);
  if (!rec->fatal) {
    rec->fatal = OCAP_FATAL_QUOTA;
    free(rec->why);
    rec->why = dupstr(msg);
  }
  return luaL_error(V, "%s", msg);
}

/* [-0, +0, e] Adds s to b as the inside of a JSON string. */
void ocap__add_json_string(luaL_Buffer *b, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      luaL_addchar(b, '\\');
      luaL_addchar(b, (char)c);
    } else if (c < 0x20 || c == 0x7f) {
      char esc[6];
      luaL_addlstring(b, esc, (size_t)(ocap_hex_json_escape(esc, c) - esc));
    } else {
      luaL_addchar(b, (char)c);
    }
  }
}

/* [-0, +1, e] Pushes the smallcaps body of an error whose message is msg
 * and returns it, with its length in *len. */
static const char *push_error_body(lua_State *L, const char *msg, size_t *len) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "#{\"#error\":\"");
  ocap__add_json_string(&b, msg, strlen(msg));
  luaL_addstring(&b, "\",\"name\":\"Error\"}");
  luaL_pushresult(&b);
  return lua_tolstring(L, -1, len);
}

/* The bytes of a capdata as the kernel stores it: body and slots. */
static lua_Integer capdata_bytes(const ocap_capdata_t *cd) {
  size_t n = cd->blen;
  for (size_t i = 0; i < cd->nslots; i++)
    n += strlen(cd->slots[i]) + 1;
  return (lua_Integer)n;
}

/*
 * [-0, +0] Checks one message (or resolution) against the vat's budget for
 * a single message. Returns NULL when it fits, else a description of the
 * excess in buf.
 */
static const char *message_excess(const lvat_t *rec, const ocap_capdata_t *cd, lua_Integer bytes,
                                  const char *what, char *buf, size_t size) {
  if ((lua_Integer)cd->nslots > rec->budget.message_slots)
    snprintf(buf, size, "%s with %zu slots is over this vat's limit of %lld (maxMessageSlots)",
             what, cd->nslots, (long long)rec->budget.message_slots);
  else if (bytes > rec->budget.message_bytes)
    snprintf(buf, size, "%s of %lld bytes is over this vat's limit of %lld (maxMessageBytes)", what,
             (long long)bytes, (long long)rec->budget.message_bytes);
  else
    return NULL;
  return buf;
}

/* [-0, +0, e] Charges bytes sent or resolved to the current delivery;
 * going over the delivery's budget is fatal. */
static void charge_sent(lua_State *V, lvat_t *rec, lua_Integer bytes) {
  rec->sent += bytes;
  if (rec->sent > rec->budget.crank_bytes)
    over_quota(V, rec,
               "sent %lld bytes in one delivery, over this vat's limit of %lld (maxCrankBytes)",
               (long long)rec->sent, (long long)rec->budget.crank_bytes);
}

/* [-0, +0] Writes "<prefix><n>" into buf (at least 24 bytes) and returns
 * its length. */
static int format_vpid(char *buf, const char *prefix, lua_Integer n) {
  buf[0] = prefix[0];
  buf[1] = prefix[1];
  size_t len = 2 + ocap_sc_format_int((long long)n, buf + 2);
  buf[len] = '\0';
  return (int)len;
}

/* [-0, +0, e] Sends cd to target, with result as the result's vpid (NULL
 * for none), or when result is NULL and n is not 0, p+<n>. A message over
 * the vat's size budget raises an ordinary error in the sender before the
 * kernel holds any of it, so a receiver is never asked to decode it. */
static void send_capdata(lua_State *V, lvat_t *rec, const char *target, const ocap_capdata_t *cd,
                         const char *result, lua_Integer n) {
  char excess[192];
  lua_Integer bytes = capdata_bytes(cd);
  if (message_excess(rec, cd, bytes, "message", excess, sizeof excess)) {
    lua_pushstring(V, excess); /* no position: the sender's caller is not at fault */
    lua_error(V);
  }
  /* Messages wait in the kernel until delivered: in the run queue, or
   * parked on a promise nobody may ever resolve. */
  long long queued = ocap_kernel_queued_bytes(rec->lk->k, rec->id);
  if (queued + bytes > rec->budget.queued_bytes) {
    lua_pushfstring(V,
                    "this vat has %I bytes of messages waiting in the kernel; %I more would "
                    "pass its limit of %I (maxQueuedBytes)",
                    (LUAI_UACINT)queued, (LUAI_UACINT)bytes, (LUAI_UACINT)rec->budget.queued_bytes);
    lua_error(V);
  }
  charge_sent(V, rec, bytes);
  /* A number the kernel keeps as a code goes as it is; a larger one, as
   * the text it stands for. */
  char vpid[32];
  if (!result && n > COUNT_MAX) {
    format_vpid(vpid, "p+", n);
    result = vpid;
  }
  int rc = result || !n ? ocap_kernel_send(rec->lk->k, rec->id, target, cd, result)
                        : ocap__kernel_send_pe(rec->lk->k, rec->id, target, cd, (long long)n);
  if (rc)
    syscall_failed(V, rec);
}

/* [-0, +0, e] Sends body and slots (stack indices 2 and 3) to the target
 * at index 1, with result as the result's vpid (NULL for none). */
static void send_message(lua_State *V, lvat_t *rec, const char *result, lua_Integer n) {
  const char *small[SMALL_SLOTS];
  const char *target = luaL_checkstring(V, 1);
  ocap_capdata_t cd = ocap__check_capdata(V, 2, 3, small);
  send_capdata(V, rec, target, &cd, result, n);
}

/* send(target, body, slots, result?)  [-0, +0, e] */
static int sys_send(lua_State *V) {
  send_message(V, sysvat(V), luaL_optstring(V, 4, NULL), 0);
  return 0;
}

/*
 * sendNumbered(target, body, slots, n)  [-0, +0, e]
 * send with the vat's own promise number n as the result, "p+<n>":
 * liveslots numbers the promises it makes and keys those it awaits by the
 * number, which dispatchSettle hands back (ldeliver.c), so no string of
 * the vpid is made in the vat for a send.
 */
static int sys_send_numbered(lua_State *V) {
  lvat_t *rec = sysvat(V);
  lua_Integer n = luaL_checkinteger(V, 4);
  luaL_argcheck(V, n > 0, 4, "promise number must be positive");
  send_message(V, rec, NULL, n);
  return 0;
}

/*
 * sendCall(target, n, method, ...) -> true | nil  [-0, +(0|1), e]
 * sendNumbered(target, body, nil, n) of the body encodeCallArgs(method,
 * nil, ...) writes, in one call and without making the body a string,
 * when the codec writes it flat (ocap_sc_encode_flat_call: a plain method
 * and safe integers, booleans and plain strings); nil, having done
 * nothing, for any other call, which liveslots then encodes and sends the
 * usual way. Found through the syscall table's __index.
 */
static int sys_send_call(lua_State *V) {
  lvat_t *rec = sysvat(V);
  const char *target = luaL_checkstring(V, 1);
  lua_Integer n = luaL_checkinteger(V, 2);
  luaL_argcheck(V, n > 0, 2, "promise number must be positive");
  char body[OCAP_SC_FLAT_MAX];
  ocap_capdata_t cd = {body, ocap_sc_encode_flat_call(rec->vat, V, 3, body), NULL, 0};
  if (cd.blen == 0)
    return 0;
  send_capdata(V, rec, target, &cd, NULL, n);
  lua_pushboolean(V, 1);
  return 1;
}

/* subscribe(kpid)  [-0, +0, e] */
static int sys_subscribe(lua_State *V) {
  lvat_t *rec = sysvat(V);
  if (ocap_kernel_subscribe(rec->lk->k, rec->id, luaL_checkstring(V, 1)))
    return syscall_failed(V, rec);
  return 0;
}

/* [-0, +0, e] Reads the kpid resolve takes at index 1 and returns it: an
 * integer N for "p-N" the kernel keeps as a code is returned as NULL with
 * N in *n, a larger one is written into buf (32 bytes). */
static const char *check_kpid(lua_State *V, char *buf, lua_Integer *n) {
  *n = 0;
  if (lua_isinteger(V, 1)) {
    lua_Integer v = lua_tointeger(V, 1);
    luaL_argcheck(V, v > 0, 1, "promise number must be positive");
    if (v <= COUNT_MAX) {
      *n = v;
      return NULL;
    }
    format_vpid(buf, "p-", v);
    return buf;
  }
  return luaL_checkstring(V, 1);
}

/* [-0, +0, e] Resolves r (p-<n> when r->kpid is NULL), first checked
 * against the vat's budget for one message: a result over it rejects the
 * promise with the reason instead. */
static void resolve_one(lua_State *V, lvat_t *rec, ocap_resolution_t *r, lua_Integer n) {
  char excess[192];
  lua_Integer bytes = capdata_bytes(&r->data);
  if (message_excess(rec, &r->data, bytes, "result", excess, sizeof excess)) {
    /* The decider settles the promise all the same, so its callers are
     * not left waiting: it is rejected with the reason instead. */
    ocap_capdata_t err = {0};
    err.body = push_error_body(V, excess, &err.blen);
    r->rejected = 1;
    r->data = err;
    bytes = (lua_Integer)err.blen;
  }
  charge_sent(V, rec, bytes);
  int rc = r->kpid
               ? ocap_kernel_resolve(rec->lk->k, rec->id, r, 1)
               : ocap__kernel_resolve_pi(rec->lk->k, rec->id, (long long)n, r->rejected, &r->data);
  if (rc)
    syscall_failed(V, rec);
}

/*
 * resolve(kpid, rejected, body, slots)  [-0, +0, e]
 * kpid may be a positive integer N for "p-N", as dispatchCall hands a
 * message's result to liveslots (ldeliver.c).
 */
static int sys_resolve(lua_State *V) {
  const char *small[SMALL_SLOTS];
  lvat_t *rec = sysvat(V);
  ocap_resolution_t r;
  char vpid[32];
  lua_Integer n;
  r.kpid = check_kpid(V, vpid, &n);
  r.rejected = lua_toboolean(V, 2);
  r.data = ocap__check_capdata(V, 3, 4, small);
  resolve_one(V, rec, &r, n);
  return 0;
}

/*
 * resolveValue(kpid, value) -> true | nil  [-0, +(0|1), e]
 * resolve(kpid, false, body) of the body encodeParts(value) writes, in one
 * call and without making the body a string, when the codec writes it
 * flat (ocap_sc_encode_flat_value: a number, a boolean, nil or a short
 * string); nil, having done nothing, for any other value. Found through
 * the syscall table's __index.
 */
static int sys_resolve_value(lua_State *V) {
  lvat_t *rec = sysvat(V);
  ocap_resolution_t r;
  char vpid[32], body[OCAP_SC_FLAT_MAX];
  lua_Integer n;
  r.kpid = check_kpid(V, vpid, &n);
  r.rejected = 0;
  r.data = (ocap_capdata_t){body, ocap_sc_encode_flat_value(rec->vat, V, 2, body), NULL, 0};
  if (r.data.blen == 0)
    return 0;
  resolve_one(V, rec, &r, n);
  lua_pushboolean(V, 1);
  return 1;
}

/*
 * exit(failure, body)  [-0, +0, e]
 * Only records the exit: the vat is still running its crank, so
 * finish_exits terminates it after the crank.
 */
static int sys_exit(lua_State *V) {
  lvat_t *rec = sysvat(V);
  int failure = lua_toboolean(V, 1);
  const char *body = luaL_checkstring(V, 2);
  if (!rec->exiting) {
    rec->exiting = failure ? 2 : 1;
    rec->exit_body = dupstr(body);
    rec->lk->exits = 1;
  }
  return 0;
}

/* [-0, +1, e] Pushes "vs.<vatId>.<key>" for the key at idx and returns it.
 * Building the prefix here keeps a vat inside its own part of the store. */
static const char *vs_key(lua_State *V, lvat_t *rec, int idx, size_t *klen) {
  size_t n;
  const char *key = luaL_checklstring(V, idx, &n);
  luaL_Buffer b;
  luaL_buffinit(V, &b);
  luaL_addstring(&b, "vs.");
  luaL_addstring(&b, rec->id);
  luaL_addchar(&b, '.');
  luaL_addlstring(&b, key, n);
  luaL_pushresult(&b);
  return lua_tolstring(V, -1, klen);
}

/* vatstoreGet(key) -> value | nil  [-0, +1, e] */
static int sys_vatstore_get(lua_State *V) {
  lvat_t *rec = sysvat(V);
  size_t kl, vl;
  const char *key = vs_key(V, rec, 1, &kl), *val;
  int rc = ocap_store_get(rec->lk->s, key, kl, &val, &vl);
  if (rc < 0)
    return store_call_failed(V, rec, rc, "vatstore read");
  if (rc == 1)
    lua_pushlstring(V, val, vl);
  else
    lua_pushnil(V);
  return 1;
}

/* vatstoreSet(key, value)  [-0, +0, e] */
static int sys_vatstore_set(lua_State *V) {
  lvat_t *rec = sysvat(V);
  size_t kl, vl;
  const char *val = luaL_checklstring(V, 2, &vl);
  const char *key = vs_key(V, rec, 1, &kl);
  int rc = ocap_store_set(rec->lk->s, key, kl, val, vl);
  if (rc)
    return store_call_failed(V, rec, rc, "vatstore write");
  return 0;
}

/* vatstoreDelete(key)  [-0, +0, e] */
static int sys_vatstore_delete(lua_State *V) {
  lvat_t *rec = sysvat(V);
  size_t kl;
  const char *key = vs_key(V, rec, 1, &kl);
  int rc = ocap_store_delete(rec->lk->s, key, kl);
  if (rc)
    return store_call_failed(V, rec, rc, "vatstore delete");
  return 0;
}

/* vatstoreNext(prefix, after?) -> key | nil  [-0, +1, e]
 * The key comes back without the "vs.<vatId>." the vat never sees. */
static int sys_vatstore_next(lua_State *V) {
  lvat_t *rec = sysvat(V);
  size_t pl, al = 0, kl;
  const char *prefix = vs_key(V, rec, 1, &pl);
  const char *after = prefix;
  al = pl;
  int inclusive = 1;
  if (!lua_isnoneornil(V, 2)) {
    after = vs_key(V, rec, 2, &al);
    inclusive = 0;
  }
  const char *key;
  size_t strip = strlen(rec->id) + 4;
  int rc = ocap_store_next_key(rec->lk->s, prefix, pl, after, al, inclusive, &key, &kl);
  if (rc < 0)
    return store_call_failed(V, rec, rc, "vatstore scan");
  if (rc == 1 && kl >= strip)
    lua_pushlstring(V, key + strip, kl - strip);
  else
    lua_pushnil(V);
  return 1;
}

/*
 * Bounds of one log entry from a vat. The host decodes the entry and its
 * logger may walk every field, so what a vat can make the host do per log
 * call is bounded here, before the entry leaves C.
 */
#define LOG_ENTRY_MAX 16384 /* bytes of the payload */
#define LOG_VALUES_MAX 256  /* values (fields, elements) in the payload */
#define LOG_DEPTH_MAX 16    /* nesting of its tables */

/*
 * Why a log payload cannot go to the host, or NULL when it can: it must be
 * a smallcaps record within the bounds above. Only its shape is checked;
 * the host's decoder checks the syntax.
 */
static const char *log_problem(const char *p, size_t n) {
  if (n > LOG_ENTRY_MAX)
    return "it is over 16384 bytes";
  if (n < 2 || p[0] != '#' || p[1] != '{')
    return "it is not a smallcaps record";
  int depth = 0, in_string = 0;
  size_t values = 0;
  for (size_t i = 1; i < n; i++) {
    char c = p[i];
    if (in_string) {
      if (c == '\\')
        i++;
      else if (c == '"')
        in_string = 0;
    } else if (c == '"') {
      in_string = 1;
    } else if (c == '{' || c == '[') {
      values++;
      if (++depth > LOG_DEPTH_MAX)
        return "its tables are nested more than 16 deep";
    } else if (c == '}' || c == ']') {
      depth--;
    } else if (c == ',') {
      values++;
    }
    if (values > LOG_VALUES_MAX)
      return "it has more than 256 values";
  }
  return NULL;
}

/*
 * log(level, payload)  [-0, +0, e]
 * Hands a structured entry (a smallcaps record) to the host's logger, which
 * runs in the host's state; that state's stack is left as it was. An entry
 * over the bounds above reaches the host as a short notice instead, and
 * the payload bytes of one delivery count against the vat's maxLogBytes.
 */
static int sys_log(lua_State *V) {
  static const char *const levels[] = {"debug", "log", "warn", "error", NULL};
  lvat_t *rec = sysvat(V);
  lkernel_t *lk = rec->lk;
  const char *level = levels[luaL_checkoption(V, 1, NULL, levels)];
  size_t n;
  const char *payload = luaL_checklstring(V, 2, &n);
  rec->logged += (lua_Integer)n;
  if (rec->logged > rec->budget.log_bytes)
    return over_quota(V, rec,
                      "logged %lld bytes in one delivery, over this vat's limit of %lld "
                      "(maxLogBytes)",
                      (long long)rec->logged, (long long)rec->budget.log_bytes);
  lua_State *L = lk->L;
  if (!L || lk->logger_ref == LUA_NOREF)
    return 0;
  const char *problem = log_problem(payload, n);
  char notice[160];
  if (problem) {
    n = (size_t)snprintf(notice, sizeof notice,
                         "#{\"message\":\"log entry of %zu bytes dropped: %s\","
                         "\"tags\":[\"kernel\"]}",
                         n, problem);
    payload = notice;
  }
  STACK_CHECK_BEGIN(L);
  lk->host_ran = 1;
  lua_rawgeti(L, LUA_REGISTRYINDEX, lk->logger_ref);
  lua_pushstring(L, rec->id);
  lua_pushstring(L, level);
  lua_pushlstring(L, payload, n);
  if (lua_pcall(L, 3, 0, 0) != LUA_OK)
    lua_pop(L, 1); /* A broken logger must not break the vat. */
  STACK_CHECK_END(L, 0);
  return 0;
}

/*
 * decode(fn, ...) -> true, fn(...) | false, err  [-n, +r, e]
 * Liveslots decodes the capdata of every delivery through it, as through
 * pcall: this is the delivery's one protected call around decoding. When
 * the decoding exhausts the vat's memory or meter, the record says so and
 * the error is raised on, and the kernel refuses the delivery instead of
 * terminating the vat for what its sender made it decode (refuse_decode).
 * A vat that wraps its own code in it only spares itself.
 */
static int sys_decode(lua_State *V) {
  lvat_t *rec = sysvat(V);
  luaL_checktype(V, 1, LUA_TFUNCTION);
  int st = lua_pcall(V, lua_gettop(V) - 1, LUA_MULTRET, 0);
  if (st == LUA_OK) {
    lua_pushboolean(V, 1);
    lua_insert(V, 1);
    return lua_gettop(V);
  }
  if (ocap_vat_fatal(rec->vat)) {
    rec->decode_failed = 1;
    return lua_error(V);
  }
  if (st == LUA_ERRMEM) {
    /* One refused buffer, short of exhaustion: an ordinary error. */
    lua_pop(V, 1);
    lua_pushfstring(V, "vat %s has no memory to decode this message", rec->id);
  }
  lua_pushboolean(V, 0);
  lua_insert(V, -2);
  return 2;
}

/* traceback(msg?) -> string  [-0, +1, e]
 * It is the runtime's only window on the stack, since vats get no debug. */
static int sys_traceback(lua_State *V) {
  luaL_traceback(V, V, luaL_optstring(V, 1, NULL), 2);
  return 1;
}

/* collectGarbage()  [-0, +0]
 * A full collection of the vat's heap, for liveslots at a reap point
 * (bringOutYourDead, docs/gc.md): its weak tables then hold exactly what
 * the heap still reaches. The sandbox has no collectgarbage, so that vat
 * code can neither run a collection nor see when one runs. One cycle is
 * enough: a vat has no finalizers to revive an object. */
static int sys_collect_garbage(lua_State *V) {
  lua_gc(V, LUA_GCCOLLECT, 0);
  return 0;
}

/*
 * [-0, +(0|1), m] Reads the argument at idx as a GC syscall takes it, a
 * sequence of strings and nothing else, into `small` when it fits, else
 * into an array owned by a userdata it pushes (see read_slots). Returns
 * NULL with *n unset when it is anything else. Only raw accesses: a
 * metatable (a hardened table's) changes nothing.
 */
const char **ocap__read_vrefs(lua_State *L, int idx, size_t *n, const char **small) {
  idx = lua_absindex(L, idx);
  if (!lua_istable(L, idx))
    return NULL;
  size_t len = (size_t)lua_rawlen(L, idx), keys = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int ok = lua_isinteger(L, -2) && lua_tointeger(L, -2) >= 1 &&
             (size_t)lua_tointeger(L, -2) <= len && lua_type(L, -1) == LUA_TSTRING;
    lua_pop(L, 1);
    keys++;
    if (!ok) {
      lua_pop(L, 1);
      return NULL;
    }
  }
  if (keys != len)
    return NULL;
  const char **v = len <= SMALL_SLOTS ? small : lua_newuserdatauv(L, len * sizeof *v, 0);
  for (size_t i = 0; i < len; i++) {
    lua_rawgeti(L, idx, (lua_Integer)i + 1);
    v[i] = lua_tostring(L, -1); /* the table keeps it */
    lua_pop(L, 1);
  }
  *n = len;
  return v;
}

const gc_call_t ocap__gc_calls[] = {ocap_kernel_drop_imports, ocap_kernel_retire_imports,
                                    ocap_kernel_retire_exports, ocap_kernel_abandon_exports};
const char *const ocap__gc_call_names[] = {"dropImports", "retireImports", "retireExports",
                                           "abandonExports"};

/* dropImports(vrefs), retireImports, retireExports, abandonExports
 * [-0, +0, e] Upvalue 2 says which. Any misuse (a shape or a vref the
 * kernel refuses) is the vat's illegal syscall: its crank rolls back. */
static int sys_gc(lua_State *V) {
  lvat_t *rec = sysvat(V);
  int which = (int)lua_tointeger(V, lua_upvalueindex(2));
  const char *small[SMALL_SLOTS];
  size_t n = 0;
  const char **v = ocap__read_vrefs(V, 1, &n, small);
  if (!v) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s takes a sequence of vref strings", ocap__gc_call_names[which]);
    return illegal(V, rec, msg);
  }
  if (ocap__gc_calls[which](rec->lk->k, rec->id, v, n))
    return syscall_failed(V, rec);
  return 0;
}

/* The syscalls that need their vat: each gets rec as upvalue 1. */
static const luaL_Reg syscalls[] = {
    {"send", sys_send},
    {"sendNumbered", sys_send_numbered},
    {"subscribe", sys_subscribe},
    {"resolve", sys_resolve},
    {"exit", sys_exit},
    {"vatstoreGet", sys_vatstore_get},
    {"vatstoreSet", sys_vatstore_set},
    {"vatstoreDelete", sys_vatstore_delete},
    {"vatstoreNext", sys_vatstore_next},
    {"log", sys_log},
    {"decode", sys_decode},
    {NULL, NULL},
};

/* The syscall table's fields (without timers): the eleven above, the four
 * GC calls and traceback. */
#define SYSCALL_FIELDS 16

/* [-2, +1] __index of a syscall table: collectGarbage, which liveslots
 * reads only when it first reaps (ocap.liveslots.rare), is found here so
 * that the table's other fields fit a hash part of SYSCALL_FIELDS slots
 * (a 17th field doubled it, 384 bytes more in every vat, more than this
 * metatable costs). Neither it nor traceback needs the vat, so both are
 * light C functions: no closure. */
static int syscall_index(lua_State *V) {
  const char *k = lua_tostring(V, 2);
  lua_CFunction f = NULL;
  if (lua_type(V, 2) != LUA_TSTRING) {
    lua_pushnil(V);
  } else if (strcmp(k, "collectGarbage") == 0) {
    lua_pushcfunction(V, sys_collect_garbage);
  } else if ((f = strcmp(k, "sendCall") == 0       ? sys_send_call
                  : strcmp(k, "resolveValue") == 0 ? sys_resolve_value
                                                   : NULL) != NULL) {
    /* Read once, when liveslots starts: a closure over the vat's record,
     * which the table's send holds. */
    lua_getfield(V, 1, "send");
    lua_getupvalue(V, -1, 1);
    lua_pushcclosure(V, f, 1);
  } else {
    lua_pushnil(V);
  }
  return 1;
}

/* [-0, +1, m] Pushes the syscall table of the vat rec: every syscall that
 * needs its vat has rec as upvalue 1 (sysvat), and the timer syscalls are
 * there only when timers is true (the vat was endowed with setTimeout or
 * setInterval). */
void ocap__push_syscalls(lua_State *V, lvat_t *rec, int timers) {
  lua_createtable(V, 0, SYSCALL_FIELDS);
  lua_pushlightuserdata(V, rec);
  luaL_setfuncs(V, syscalls, 1);
  lua_pushcfunction(V, sys_traceback);
  lua_setfield(V, -2, "traceback");
  for (int i = 0; i < 4; i++) {
    lua_pushlightuserdata(V, rec);
    lua_pushinteger(V, i);
    lua_pushcclosure(V, sys_gc, 2);
    lua_setfield(V, -2, ocap__gc_call_names[i]);
  }
  lua_createtable(V, 0, 1);
  lua_pushcfunction(V, syscall_index);
  lua_setfield(V, -2, "__index");
  lua_setmetatable(V, -2);
  if (timers) {
    lua_pushlightuserdata(V, rec);
    luaL_setfuncs(V, ocap__timer_syscalls, 1);
  }
}
