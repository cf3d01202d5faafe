/*
 * lkernel.c -- the Lua binding of the kernel (`require 'ocap.core'`): the
 * Kernel userdata and the driving of cranks.
 *
 * K:send and its siblings hand the host's messages to the kernel; K:step
 * and K:drive run cranks, each of which enters a vat or the host's own
 * endpoint through the kernel's deliver hook (ldeliver.c). The vats' Lua
 * states live in lvat.c, their syscalls in lsyscall.c and their timers in
 * lvattimer.c; lkernel_int.h follows one message through all of them. The
 * management plane (subclusters, configs, launch) is Lua, in
 * lua/ocap/kernel.lua; these files are the hot path between the crank
 * loop and the vats.
 */
#include <errno.h>
#include <sys/stat.h>

#include "lio.h"
#include "lpromise.h"
#include "lsmallcaps.h"
#include "lkernel_int.h"
#include "lnet.h"
#include "lrpc.h"

/* ---- the Kernel userdata ---- */

static void kernel_close(lkernel_t *lk) {
  for (size_t i = 0; i < lk->nvats; i++) {
    if (lk->vats[i]) {
      ocap__stop_vat(lk->vats[i]);
      ocap__drop_held(lk->vats[i]);
      free(lk->vats[i]);
    }
  }
  free(lk->vats);
  ocap__release_runtime(lk->runtime);
  ocap__srccache_free(&lk->srccache);
  uv_run(&lk->loop, UV_RUN_NOWAIT); /* runs the timers' close callbacks */
  uv_loop_close(&lk->loop);
  free(lk->fired);
  ocap_kernel_free(lk->k);
  ocap_store_close(lk->s);
  free(lk);
}

/* [-0, +0] Releases the host's callbacks, which the registry of L holds. */
static void unref_all(lua_State *L, lkernel_t *lk) {
  luaL_unref(L, LUA_REGISTRYINDEX, lk->host_dispatch_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, lk->vat_needed_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, lk->logger_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, lk->terminated_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, lk->exit_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, lk->host_pipelines_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, lk->peer_dispatch_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, lk->after_crank_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, lk->drain_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, lk->has_turns_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, lk->track_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, lk->pending_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, lk->settle_ref);
}

/* K:__gc()  [-0, +0, e]
 * It also serves K:close(), so it must be safe to call twice. */
static int k_gc(lua_State *L) {
  lkernel_t **p = luaL_checkudata(L, 1, KERNEL_MT);
  if (*p) {
    unref_all(L, *p);
    kernel_close(*p);
    *p = NULL;
  }
  return 0;
}

/* Creates the parents of path (like mkdir -p on its dirname), so a
 * database can live at a new nested path such as ./.ocap/weather. */
static void make_parents(const char *path) {
  char buf[4096];
  size_t n = strlen(path);
  if (n >= sizeof buf)
    return;
  memcpy(buf, path, n + 1);
  for (char *p = buf + 1; *p; p++) {
    if (*p == '/') {
      *p = '\0';
      if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return;
      *p = '/';
    }
  }
}

/*
 * core.open{ database = dir?, durability = 'none'|'fsync' }
 *   -> K | nil, msg, code  [-0, +(1|3), e]
 * The userdata exists before the kernel, so that its __gc frees whatever
 * part was built if a later step raises.
 */
static void hook_undone(void *ud);

static int core_open(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "database");
  const char *db = lua_tostring(L, -1);
  lua_getfield(L, 1, "durability");
  const char *dur = luaL_optstring(L, -1, "none");
  int durability = strcmp(dur, "fsync") == 0 ? OCAP_DURABILITY_FSYNC : OCAP_DURABILITY_NONE;
  if (strcmp(dur, "none") != 0 && strcmp(dur, "fsync") != 0)
    return luaL_error(L, "durability must be 'none' or 'fsync', got '%s'", dur);
  lkernel_t **p = lua_newuserdatauv(L, sizeof *p, 0);
  *p = NULL;
  luaL_setmetatable(L, KERNEL_MT);
  lkernel_t *lk = calloc(1, sizeof *lk);
  if (!lk)
    return luaL_error(L, "out of memory");
  lk->host_dispatch_ref = lk->vat_needed_ref = lk->logger_ref = lk->terminated_ref = LUA_NOREF;
  lk->exit_ref = lk->host_pipelines_ref = lk->peer_dispatch_ref = lk->after_crank_ref = LUA_NOREF;
  lk->drain_ref = lk->has_turns_ref = lk->track_ref = LUA_NOREF;
  lk->pending_ref = lk->settle_ref = LUA_NOREF;
  if (uv_loop_init(&lk->loop) != 0) {
    free(lk);
    return luaL_error(L, "cannot create the event loop");
  }
  char *err = NULL;
  if (db)
    make_parents(db);
  int rc =
      db ? ocap_store_open_leveldb(db, durability, &lk->s, &err) : ocap_store_open_memory(&lk->s);
  if (rc) {
    uv_loop_close(&lk->loop);
    free(lk);
    lua_pushnil(L);
    lua_pushstring(L, err ? err : ocap_strerror(rc));
    lua_pushinteger(L, rc);
    free(err);
    return 3;
  }
  ocap_kernel_hooks_t hooks = {.ud = lk,
                               .deliver = ocap__hook_deliver,
                               .terminated = ocap__hook_terminated,
                               .prepare = ocap__hook_prepare,
                               .pipelines = ocap__hook_pipelines,
                               .undone = hook_undone};
  if (ocap_kernel_new(lk->s, &hooks, &lk->k)) {
    ocap_store_close(lk->s);
    uv_loop_close(&lk->loop);
    free(lk);
    return luaL_error(L, "out of memory");
  }
  *p = lk;
  return 1;
}

/* K:close(): refused during a crank, whose vat or kernel it would free
 * while they run.  [-0, +0, e] */
static int k_close(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  if (lk->in_step)
    return luaL_error(L, "cannot stop the kernel while a crank is running");
  return k_gc(L);
}

/*
 * [-0, +0, e] Brings the store up to date with the tables the kernel writes
 * later than at each commit (ocap_kernel_sync), before the host reads or
 * writes the store itself or flushes it. A failure raises. Returns 0.
 */
static int sync_tables(lua_State *L, lkernel_t *lk) {
  int rc = ocap_kernel_sync(lk->k);
  if (rc)
    return luaL_error(L, "store write failed: %s", ocap_kernel_errmsg(lk->k));
  return 0;
}

/* K:kvGet(key) -> value | nil  [-0, +1, e] */
static int k_kv_get(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  size_t kl, vl;
  const char *key = luaL_checklstring(L, 2, &kl), *val;
  int rc = sync_tables(L, lk);
  rc = ocap_store_get(lk->s, key, kl, &val, &vl);
  if (rc < 0)
    return luaL_error(L, "store read failed: %s: %s", ocap_strerror(rc), ocap_store_errmsg(lk->s));
  if (rc == 1)
    lua_pushlstring(L, val, vl);
  else
    lua_pushnil(L);
  return 1;
}

/*
 * [-0, +0, e] Refuses a write of host code to a key the kernel may not
 * forget now (ocap_kernel_may_forget): host code runs inside cranks (the
 * host's and the peers' dispatch, vatNeeded, the pipelines hook), and the
 * kernel, told to forget the key's record, would free one the crank is
 * still using. Checked before the write, which the store would keep.
 */
static void check_table_write(lua_State *L, lkernel_t *lk, const char *key, size_t kl) {
  if (!ocap_kernel_may_forget(lk->k, key, kl))
    luaL_error(L, "cannot write the kernel's key %s while a crank is running", key);
}

/* K:kvSet(key, value)  [-0, +0, e] */
static int k_kv_set(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  size_t kl, vl;
  const char *key = luaL_checklstring(L, 2, &kl);
  const char *val = luaL_checklstring(L, 3, &vl);
  check_table_write(L, lk, key, kl);
  int rc = sync_tables(L, lk);
  rc = ocap_store_set(lk->s, key, kl, val, vl);
  if (rc)
    return luaL_error(L, "store write failed: %s: %s", ocap_strerror(rc), ocap_store_errmsg(lk->s));
  ocap_kernel_forget(lk->k, key, kl);
  return 0;
}

/* K:kvDelete(key)  [-0, +0, e] */
static int k_kv_delete(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  size_t kl;
  const char *key = luaL_checklstring(L, 2, &kl);
  check_table_write(L, lk, key, kl);
  int rc = sync_tables(L, lk);
  rc = ocap_store_delete(lk->s, key, kl);
  if (rc)
    return luaL_error(L, "store delete failed: %s: %s", ocap_strerror(rc),
                      ocap_store_errmsg(lk->s));
  ocap_kernel_forget(lk->k, key, kl);
  return 0;
}

/* K:kvNext(prefix, after?) -> key | nil  [-0, +1, e]
 * The key is the first under prefix after `after`, or the first under
 * prefix when `after` is absent. */
static int k_kv_next(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  size_t pl, al = 0, kl;
  const char *prefix = luaL_checklstring(L, 2, &pl);
  const char *after = luaL_optlstring(L, 3, NULL, &al);
  const char *key;
  int inclusive = after == NULL;
  if (!after) {
    after = prefix;
    al = pl;
  }
  int rc = sync_tables(L, lk);
  rc = ocap_store_next_key(lk->s, prefix, pl, after, al, inclusive, &key, &kl);
  if (rc < 0)
    return luaL_error(L, "store scan failed: %s: %s", ocap_strerror(rc), ocap_store_errmsg(lk->s));
  if (rc == 1)
    lua_pushlstring(L, key, kl);
  else
    lua_pushnil(L);
  return 1;
}

/* K:kvCount() -> integer  [-0, +1, e] */
static int k_kv_count(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  sync_tables(L, lk);
  size_t n = ocap_store_count(lk->s);
  if (n == (size_t)-1)
    return luaL_error(L, "store count failed: %s", ocap_store_errmsg(lk->s));
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

/* K:commit()  [-0, +0, e]
 * A kernel failure recorded since the last commit means the writes since
 * then may be half done: they are dropped, and the commit raises.
 *
 * Host code that a crank runs (a kernel service, a result handler, a
 * hook) writes into the crank's buffer, whose first change took the
 * crank's item off the run queue: a commit there would split the crank,
 * and a failure later in it would roll back only the rest, losing the
 * item. So inside a crank the writes are left to the crank, which commits
 * or rolls back them all; a failure already recorded raises and drops
 * nothing, since the crank rolls back as a whole when it ends. */
static int k_commit(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  if (lk->cranking) {
    if (ocap_kernel_failed(lk->k))
      return luaL_error(L, "commit failed: %s", ocap_kernel_errmsg(lk->k));
    return 0;
  }
  if (ocap_kernel_failed(lk->k)) {
    ocap_store_abort(lk->s);
    lua_pushfstring(L, "commit failed: %s", ocap_kernel_errmsg(lk->k));
    ocap_kernel_clear_failure(lk->k);
    return lua_error(L);
  }
  int rc = ocap_store_commit(lk->s);
  if (rc)
    return luaL_error(L, "commit failed: %s", ocap_strerror(rc));
  return 0;
}

/* K:abort()  [-0, +0, e]
 * Refused inside a crank: the buffer holds the crank's own writes too (its
 * item taken off the run queue, the counts it changed), and the C code of
 * the crank, which goes on after the host code returns, holds records and
 * counts that only a rollback of the whole crank undoes. Host code there
 * that must undo its work raises instead, or does the work after the
 * crank (K:afterCrank). */
static int k_abort(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  if (lk->cranking)
    return luaL_error(L, "cannot abort the store while a crank is running: "
                         "its writes are the crank's, which commits or rolls back as a whole");
  ocap_store_abort(lk->s);
  return 0;
}

/* K:flush()  [-0, +0, e] */
static int k_flush(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  sync_tables(L, lk);
  int rc = ocap_store_flush(lk->s);
  if (rc)
    return luaL_error(L, "flush failed: %s", ocap_strerror(rc));
  return 0;
}

/*
 * The committed cranks an in-memory kernel lets its tables hold before
 * K:pending writes them to the store, as K:drive's group limit does.
 */
#define MEMORY_SYNC_COMMITS 512

/* K:pending() -> integer  [-0, +1, e], and pending_cranks(L, lk), which
 * answers the count without pushing it  [-0, +0, e]:
 * The committed cranks a flush would write to disk. The drivers ask before
 * any result reaches host code. What waits in the kernel's tables is
 * pending too, so a durable store gets them first. An in-memory store has
 * no disk to reach, and its tables are written only every
 * MEMORY_SYNC_COMMITS commits: doing it at every host round trip cost
 * about 4,500 instructions of each (bench/results.md). */
static size_t pending_cranks(lua_State *L, lkernel_t *lk) {
  if (ocap_store_durable(lk->s) || ocap_kernel_unsynced(lk->k) >= MEMORY_SYNC_COMMITS)
    sync_tables(L, lk);
  return ocap_store_pending(lk->s);
}

static int k_pending(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)pending_cranks(L, checkkernel(L, 1)));
  return 1;
}

/* K:clear()  [-0, +0, e]
 * Refused during a crank: it would free every record the crank holds. */
static int k_clear(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  if (lk->in_step)
    return luaL_error(L, "cannot reset the kernel while a crank is running");
  int rc = ocap_store_clear(lk->s);
  if (rc)
    return luaL_error(L, "clearing the store failed: %s", ocap_strerror(rc));
  return 0;
}

/* [-0, +0, e] Raises the kernel's last error; it never returns. */
static int raise_kernel(lua_State *L, lkernel_t *lk) {
  if (!lk->cranking && ocap_kernel_failed(lk->k)) {
    /* A host call between cranks that met a kernel failure may have left
     * its writes half done: they are dropped now, with the host's other
     * writes since the last commit, and this call raises. Left recorded,
     * the failure failed the next crank once, dropping with it what host
     * code sent after this call. */
    luaL_where(L, 1);
    lua_pushstring(L, ocap_kernel_errmsg(lk->k));
    lua_concat(L, 2);
    ocap_kernel_abort_crank(lk->k, 0);
    return lua_error(L);
  }
  return luaL_error(L, "%s", ocap_kernel_errmsg(lk->k));
}

/* K:inCrank() -> boolean  [-0, +1, -]
 * Whether a crank is running: host code called from inside one (a result
 * handler, a kernel service) must not stop, reset or step the kernel. */
static int k_in_crank(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  lua_pushboolean(L, lk->in_step);
  return 1;
}

/* K:afterCrank()  [-0, +0, e]
 * Host code inside a crank asks for the after-crank handler to run once
 * the crank is over (with whether it committed), before any later crank;
 * the host keeps the work itself. Outside a crank there is nothing to
 * wait for, and the call is refused. */
static int k_after_crank(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  if (!lk->in_step)
    return luaL_error(L, "K:afterCrank: no crank is running");
  lk->after_crank = 1;
  return 0;
}

/* K:check() -> true  [-0, +1, e]
 * Testing hook: checks that the tables the kernel keeps in memory hold
 * what the store holds (ocap_kernel_check), and raises naming the first
 * key that differs. Between cranks only, where the two must agree. */
static int k_check(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  if (lk->in_step)
    return luaL_error(L, "cannot check the kernel while a crank is running");
  if (ocap_kernel_check(lk->k)) {
    lua_pushstring(L, ocap_kernel_errmsg(lk->k));
    ocap_kernel_clear_failure(lk->k);
    return lua_error(L);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* K:allocVatId() -> vatId  [-0, +1, e] */
static int k_alloc_vat_id(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  char out[OCAP_REF_MAX];
  if (ocap_kernel_alloc_vat_id(lk->k, out))
    return raise_kernel(L, lk);
  lua_pushstring(L, out);
  return 1;
}

/* K:allocPeerId() -> "r<N>"  [-0, +1, e]
 * The endpoint of a new CapTP session (docs/remote.md). */
static int k_alloc_peer_id(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  char out[OCAP_REF_MAX];
  if (ocap_kernel_alloc_peer_id(lk->k, out))
    return raise_kernel(L, lk);
  lua_pushstring(L, out);
  return 1;
}

/* K:clistSize(ep, kind?) -> integer  [-0, +1, e]
 * The entries of ep's c-list whose kref starts with kind ("k", all, by
 * default; "ko" objects, "kp" promises). */
static int k_clist_size(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  long n = ocap_kernel_clist_size(lk->k, luaL_checkstring(L, 2), luaL_optstring(L, 3, "k"));
  if (n < 0)
    return raise_kernel(L, lk);
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

/* K:allocObject(owner?) -> kref  [-0, +1, e] */
static int k_alloc_object(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  char out[OCAP_REF_MAX];
  if (ocap_kernel_alloc_object(lk->k, luaL_optstring(L, 2, "kernel"), out))
    return raise_kernel(L, lk);
  lua_pushstring(L, out);
  return 1;
}

/* K:allocPromise(decider?) -> kpid  [-0, +1, e] */
static int k_alloc_promise(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  char out[OCAP_REF_MAX];
  if (ocap_kernel_alloc_promise(lk->k, luaL_optstring(L, 2, "kernel"), out))
    return raise_kernel(L, lk);
  lua_pushstring(L, out);
  return 1;
}

/* K:export(ep, eref) -> kref  [-0, +1, e]
 * The eref is exported on first sight. */
static int k_export(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  char out[OCAP_REF_MAX];
  if (ocap_kernel_eref_to_kref(lk->k, luaL_checkstring(L, 2), luaL_checkstring(L, 3), out))
    return raise_kernel(L, lk);
  lua_pushstring(L, out);
  return 1;
}

/* K:import(ep, kref) -> eref  [-0, +1, e]
 * The endpoint's eref for an object kref, added to its c-list on first
 * sight: how a reference reaches a vat outside a delivery (its
 * parameters), and what the remote layer gives a peer. A peer may take a
 * promise too (what it resolves one of its answers with). */
static int k_import(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  const char *ep = luaL_checkstring(L, 2);
  const char *kref = luaL_checkstring(L, 3);
  char out[OCAP_REF_MAX];
  if (kref[0] != 'k' || (kref[1] != 'o' && !(kref[1] == 'p' && ep[0] == 'r')))
    return luaL_error(L, "K:import: '%s' is not an object kref", kref);
  if (ocap_kernel_kref_to_eref(lk->k, ep, kref, out))
    return raise_kernel(L, lk);
  lua_pushstring(L, out);
  return 1;
}

/* K:krefOf(vatId, vref) -> kref | nil  [-0, +1, e]
 * Unlike K:export, it never exports. */
static int k_kref_of(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  const char *ep = luaL_checkstring(L, 2);
  const char *eref = luaL_checkstring(L, 3);
  char out[OCAP_REF_MAX];
  int rc = ocap_kernel_kref_of(lk->k, ep, eref, out);
  if (rc < 0) {
    /* Only a read failed: report it here, not at the next crank. */
    lua_pushstring(L, ocap_kernel_errmsg(lk->k));
    ocap_kernel_clear_failure(lk->k);
    return lua_error(L);
  }
  if (rc == 1)
    lua_pushstring(L, out);
  else
    lua_pushnil(L);
  return 1;
}

/* The endpoint a host call acts for: the kernel's own unless the optional
 * argument at idx names a remote peer's (`r<N>`), for which the host's
 * remote layer makes the syscalls. [-0, +0, e] */
static const char *host_or_peer(lua_State *L, int idx) {
  const char *ep = luaL_optstring(L, idx, "kernel");
  if (ep[0] != 'r' && strcmp(ep, "kernel") != 0)
    luaL_argerror(L, idx, "the kernel endpoint or a peer's");
  return ep;
}

/* K:dropImports(refs, ep?), K:retireImports, K:retireExports,
 * K:abandonExports  [-0, +0, e]
 * The GC syscalls of the kernel's own endpoint (the host's liveslots; krefs)
 * or of a remote peer's (its erefs), upvalue 1 saying which. A misuse
 * raises: neither is terminated for it. */
static int k_gc_call(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  int which = (int)lua_tointeger(L, lua_upvalueindex(1));
  const char *ep = host_or_peer(L, 3);
  const char *small[SMALL_SLOTS];
  size_t n = 0;
  const char **v = ocap__read_vrefs(L, 2, &n, small);
  if (!v)
    return luaL_error(L, "%s takes a sequence of kref strings", ocap__gc_call_names[which]);
  if (ocap__gc_calls[which](lk->k, ep, v, n))
    return raise_kernel(L, lk);
  return 0;
}

/* K:pin(kref)  [-0, +0, e] Keeps an object whatever its counts. */
static int k_pin(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  if (ocap_kernel_pin(lk->k, luaL_checkstring(L, 2)))
    return raise_kernel(L, lk);
  return 0;
}

/* K:setReapInterval(n | false)  [-0, +0, e]
 * Deliveries to a vat between two reaps; false turns reaping off. */
static int k_set_reap_interval(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  lk->reap_interval = lua_toboolean(L, 2) ? luaL_checkinteger(L, 2) : 0;
  return 0;
}

/* K:reapAll(hostOnly?)  [-0, +0, e] Schedules a reap of every live vat,
 * then of the kernel's endpoint (only of that one with hostOnly: the
 * remote layer's, after a collection that may have freed peers' objects
 * the host held), to run before the run queue's next item. */
static int k_reap_all(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  for (size_t i = 0; i < lk->nvats && !lua_toboolean(L, 2); i++) {
    lvat_t *rec = lk->vats[i];
    if (rec && rec->vat && ocap_kernel_schedule_reap(lk->k, rec->id))
      return raise_kernel(L, lk);
  }
  if (ocap_kernel_schedule_reap(lk->k, "kernel"))
    return raise_kernel(L, lk);
  return 0;
}

/* [-0, +0, m] Appends vref to the table on top of the stack (ud: L). */
static int push_vref(void *ud, const char *vref) {
  lua_State *L = ud;
  lua_pushstring(L, vref);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  return 0;
}

/* K:reachableImports(vatId) -> { vref... }  [-0, +1, e]
 * The imports the kernel counts reachable from the vat, in byte order of
 * their krefs. */
static int k_reachable_imports(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  const char *ep = luaL_checkstring(L, 2);
  lua_newtable(L);
  if (ocap_kernel_reachable_imports(lk->k, ep, push_vref, L))
    return raise_kernel(L, lk);
  return 1;
}

/* K:gcWork() -> integer  [-0, +1, e] GC actions and reaps waiting. */
static int k_gc_work(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  long long n = ocap_kernel_gc_work(lk->k);
  if (n < 0)
    return raise_kernel(L, lk);
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

/* K:send(target, body, slots, result?)  [-0, +0, e]
 * It sends from the kernel's own endpoint. */
static int k_send(lua_State *L) {
  const char *small[SMALL_SLOTS];
  lkernel_t *lk = checkkernel(L, 1);
  const char *target = luaL_checkstring(L, 2);
  ocap_capdata_t cd = ocap__check_capdata(L, 3, 4, small);
  const char *result = luaL_optstring(L, 5, NULL);
  if (ocap_kernel_send(lk->k, "kernel", target, &cd, result))
    return raise_kernel(L, lk);
  return 0;
}

/* The arguments K:queueFlat takes; more go the general way. */
#define FLAT_ARGS 16

/*
 * K:queueFlat(kref, method, args) -> promise | nil  [-0, +1, e]
 * The host's queueMessage of a call whose body the C codec writes flat
 * (plain strings, safe integers and booleans: no slot, no table), in one
 * C call: the body written from the arguments, the result's kpid
 * allocated, the message sent from the kernel's endpoint, and the result
 * promise the host liveslots' trackPromise makes for the kpid, as its
 * sendArgs would do (allocPromise, send, pending and vpidOf). args is a
 * sequence without `n` and without a metatable, whose elements are
 * args[1..#args] as table.unpack takes them. Anything else answers nil,
 * having done nothing, for the general way.
 */
static int k_queue_flat(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  const char *target = luaL_checkstring(L, 2);
  if (lk->track_ref == LUA_NOREF || lua_type(L, 3) != LUA_TSTRING || lua_type(L, 4) != LUA_TTABLE ||
      lua_getmetatable(L, 4))
    goto general;
  lua_pushliteral(L, "n");
  if (lua_rawget(L, 4) != LUA_TNIL)
    goto general;
  lua_Unsigned n = lua_rawlen(L, 4);
  if (n > FLAT_ARGS)
    goto general;
  lua_settop(L, 4);
  luaL_checkstack(L, (int)n + 4, NULL);
  lua_pushvalue(L, 3);
  for (lua_Unsigned i = 1; i <= n; i++)
    lua_rawgeti(L, 4, (lua_Integer)i);
  char body[OCAP_SC_FLAT_MAX];
  ocap_capdata_t cd = {0};
  cd.body = body;
  cd.blen = ocap_sc_encode_flat_call(NULL, L, 5, body); /* the host has no meter */
  if (!cd.blen)
    goto general;
  lua_settop(L, 4);
  char kpid[OCAP_REF_MAX];
  if (ocap_kernel_alloc_promise(lk->k, "kernel", kpid) ||
      ocap_kernel_send(lk->k, "kernel", target, &cd, kpid))
    return raise_kernel(L, lk);
  lk->c_sends++;
  lua_rawgeti(L, LUA_REGISTRYINDEX, lk->track_ref);
  lua_pushstring(L, kpid);
  lua_call(L, 1, 1);
  return 1;
general:
  lua_pushnil(L);
  return 1;
}

/*
 * [-2, +1, e] Takes the resolution at 2 (a light userdata) of the kernel
 * at 1 as the host liveslots' dispatch('notify', ...) would, when its
 * promise is one the host waits on and its body has no slot and decodes
 * in C (a promise is whatever ocap.promise makes one of; settleAndResume
 * checks it): the promise leaves pending and settles (settleAndResume), and the
 * turns that queued run (drain), as dispatch ends with. Answers false,
 * having changed nothing, for any other resolution, which then goes to
 * dispatch; true when it took it.
 */
static int host_notify_call(lua_State *L) {
  lkernel_t *lk = lua_touserdata(L, 1);
  const ocap_resolution_t *r = lua_touserdata(L, 2);
  lua_settop(L, 0);
  lua_rawgeti(L, LUA_REGISTRYINDEX, lk->pending_ref); /* 1 */
  lua_pushstring(L, r->kpid);                         /* 2 */
  lua_pushvalue(L, 2);
  if (lua_rawget(L, 1) == LUA_TNIL || !ocap_sc_push_model(L) || /* 3, 4 */
      ocap_sc_push_decoded(L, 4, r->data.body, r->data.blen, 0) != 1) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_pushvalue(L, 2); /* the value is at 5 */
  lua_pushnil(L);
  lua_rawset(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, lk->settle_ref);
  lua_pushvalue(L, 3);
  lua_pushboolean(L, !r->rejected);
  lua_pushvalue(L, 5);
  lua_call(L, 3, 0);
  if (!lk->drain_q || !ocap_promise_idle(lk->drain_q)) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, lk->drain_ref);
    lua_call(L, 0, 0);
  }
  lk->c_notifies++;
  lua_pushboolean(L, 1);
  return 1;
}

/*
 * [-0, +0, m] The host's endpoint's delivery d, taken in C when it is the
 * common resolution of a result the host waits on (host_notify_call), in
 * a protected call as the host's dispatch is made. Returns 1 when it took
 * d (a failure, after which it may have done part of the work, is
 * reported and dropped, as one of dispatch is), 0 for the host's dispatch
 * to take it.
 */
int ocap__host_notify(lkernel_t *lk, lua_State *L, const ocap_delivery_t *d) {
  if (d->type != OCAP_DELIVER_NOTIFY || d->nresolutions != 1 || d->resolutions[0].data.nslots ||
      lk->pending_ref == LUA_NOREF || lk->drain_ref == LUA_NOREF)
    return 0;
  STACK_CHECK_BEGIN(L);
  lua_pushcfunction(L, host_notify_call);
  lua_pushlightuserdata(L, lk);
  lua_pushlightuserdata(L, (void *)&d->resolutions[0]);
  int took = 1;
  if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "ocap: kernel endpoint dispatch failed: %s\n", msg ? msg : "(error object)");
  } else {
    took = lua_toboolean(L, -1);
  }
  lua_pop(L, 1);
  STACK_CHECK_END(L, 0);
  return took;
}

/* K:hostPaths() -> sends, notifies  [-0, +2, e]
 * Testing hook: how many host sends K:queueFlat took and how many
 * resolutions the host's endpoint took in C (ocap__host_notify), so that
 * a spec sees that the C paths ran. */
static int k_host_paths(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  lua_pushinteger(L, lk->c_sends);
  lua_pushinteger(L, lk->c_notifies);
  return 2;
}

/* K:subscribe(kpid, ep?)  [-0, +0, e] */
static int k_subscribe(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  if (ocap_kernel_subscribe(lk->k, host_or_peer(L, 3), luaL_checkstring(L, 2)))
    return raise_kernel(L, lk);
  return 0;
}

/* K:resolve(kpid, rejected, body, slots, ep?)  [-0, +0, e]
 * From the kernel's endpoint (krefs), or from a remote peer's (its erefs),
 * for the remote layer. */
static int k_resolve(lua_State *L) {
  const char *small[SMALL_SLOTS];
  lkernel_t *lk = checkkernel(L, 1);
  const char *ep = host_or_peer(L, 6);
  ocap_resolution_t r;
  r.kpid = luaL_checkstring(L, 2);
  r.rejected = lua_toboolean(L, 3);
  r.data = ocap__check_capdata(L, 4, 5, small);
  if (ocap_kernel_resolve(lk->k, ep, &r, 1))
    return raise_kernel(L, lk);
  return 0;
}

/*
 * [-0, +0, m] Runs after a crank and hands the vats that called exitVat to
 * the host's exit handler, which terminates them. It waits for the crank's
 * end because a vat cannot be freed while it runs.
 */
static void finish_exits(lua_State *L, lkernel_t *lk) {
  /* Only a crank in which a vat called exitVat walks the vats (every
   * crank ends here, and a kernel may hold thousands). */
  if (!lk->exits)
    return;
  lk->exits = 0;
  STACK_CHECK_BEGIN(L);
  for (size_t i = 0; i < lk->nvats; i++) {
    lvat_t *rec = lk->vats[i];
    if (!rec || !rec->exiting)
      continue;
    char *body = rec->exit_body;
    rec->exit_body = NULL;
    int failure = rec->exiting == 2;
    rec->exiting = 0;
    char id[OCAP_REF_MAX];
    snprintf(id, sizeof id, "%s", rec->id);
    /* The host records the completion and terminates the vat. */
    lk->host_ran = 1;
    lua_rawgeti(L, LUA_REGISTRYINDEX, lk->exit_ref);
    if (lua_isfunction(L, -1)) {
      lua_pushstring(L, id);
      lua_pushboolean(L, failure);
      lua_pushstring(L, body ? body : "#\"#undefined\"");
      if (lua_pcall(L, 3, 0, 0) != LUA_OK)
        lua_pop(L, 1);
    } else {
      lua_pop(L, 1);
    }
    free(body);
  }
  STACK_CHECK_END(L, 0);
}

/*
 * [-0, +0, m] Calls the host's after-crank handler (K:setAfterCrank) with
 * whether the crank committed: what host code inside the crank asked to
 * do once it is over (K:afterCrank) runs then, before any later crank, or
 * is dropped with a crank that rolled back, whose delivery runs again and
 * asks again. A failure in the handler is reported and dropped, as one in
 * the host's dispatch is.
 */
static void after_crank(lua_State *L, lkernel_t *lk, int committed) {
  lk->after_crank = 0;
  if (lk->after_crank_ref == LUA_NOREF)
    return;
  STACK_CHECK_BEGIN(L);
  lk->host_ran = 1;
  lua_rawgeti(L, LUA_REGISTRYINDEX, lk->after_crank_ref);
  lua_pushboolean(L, committed);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "ocap: after-crank handler failed: %s\n", msg ? msg : "(error object)");
    lua_pop(L, 1);
  }
  STACK_CHECK_END(L, 0);
}

/* [-0, +0, m] The kernel rolled back the crank's delivery and goes on
 * (an endpoint that failed fatally or refused it), to commit: what host
 * code asked for in that delivery is dropped with it now, so that the
 * crank's commit runs only what its remaining part asked for. */
static void hook_undone(void *ud) {
  lkernel_t *lk = ud;
  if (lk->after_crank && lk->L)
    after_crank(lk->L, lk, 0);
}

/*
 * [-0, +0, m] Runs one crank (the oldest timer firing first, else the head
 * of the run queue) with L as the stepping thread, then hands exits to the
 * host, then runs what host code in the crank left for after it. Returns
 * 1 when a crank ran, 0 when there was nothing to do, or a negative
 * OCAP_E* code when the crank failed and was rolled back.
 */
static int one_crank(lua_State *L, lkernel_t *lk) {
  lk->in_step = 1;
  lua_State *saved = lk->L;
  lk->L = L;
  lk->ran = lk->started = NULL;
  lk->cranking = 1;
  int rc = lk->nfired ? ocap__timer_crank(lk) : ocap_kernel_step(lk->k);
  lk->cranking = 0;
  /* What the crank asked for goes with it when it rolled back; what the
   * exits below ask for (closing a subcluster's channels) comes after it
   * either way, as the exits do. */
  if (rc < 0 && lk->after_crank)
    after_crank(L, lk, 0);
  finish_exits(L, lk);
  lk->L = saved;
  lk->in_step = 0;
  /* A failed crank is rolled back, but the heap of the vat that ran in it
   * is not: that vat is stopped, to restart from the store (as the crank
   * left it) at its next delivery; so is a vat the crank started, whose
   * start wrote what the rollback undid. */
  if (rc < 0 && lk->ran && lk->ran->vat)
    ocap__stop_vat(lk->ran);
  if (rc < 0 && lk->started && lk->started != lk->ran && lk->started->vat)
    ocap__stop_vat(lk->started);
  lk->ran = lk->started = NULL;
  if (lk->after_crank)
    after_crank(L, lk, 1);
  return rc;
}

/* Host code inside a crank that runs the kernel, or awaits on the main
 * thread a promise only a later crank (or the work after this one,
 * K:afterCrank) can settle, would wait for ever: it is refused. */
#define STEP_IN_CRANK                                                                              \
  "kernel:step() called while a crank is running: host code inside a crank cannot run the "        \
  "kernel, nor await on the main thread a promise that only a later crank settles (await in a "    \
  "coroutine, or return the promise)"

/* K:step() -> ran  [-0, +1, e]
 * ran is false when there was nothing to do. */
static int k_step(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  if (lk->in_step)
    return luaL_error(L, "%s", STEP_IN_CRANK);
  int rc = one_crank(L, lk);
  if (rc < 0)
    return luaL_error(L, "crank failed: %s", ocap_kernel_errmsg(lk->k));
  lua_pushboolean(L, rc > 0);
  return 1;
}

/*
 * [-0, +0, e] Polls the event loop once without waiting, then runs up to
 * max cranks and stops after the first one in which host Lua code ran (a
 * delivery to the kernel's endpoint, a log entry, an exit, a termination,
 * a vat restart), because only host code can queue a host turn or settle
 * a promise the host awaits; the caller flushes before any of that
 * reaches host code. Cranks the host has not seen are grouped in one
 * store write, forced once group committed cranks are pending. Returns
 * the cranks run and sets *visible when host code ran. The batch is
 * bounded so that timers and IO get their turn between batches.
 */
static lua_Integer run_batch(lua_State *L, lkernel_t *lk, lua_Integer max, lua_Integer group,
                             int *visible) {
  if (lk->in_step)
    luaL_error(L, "%s", STEP_IN_CRANK);
  if (lk->nfired == 0 && uv_loop_alive(&lk->loop))
    uv_run(&lk->loop, UV_RUN_NOWAIT);
  lua_Integer ran = 0;
  *visible = 0;
  while (ran < max) {
    lk->host_ran = 0;
    int rc = one_crank(L, lk);
    if (rc < 0)
      luaL_error(L, "crank failed: %s", ocap_kernel_errmsg(lk->k));
    if (rc == 0)
      break;
    ran++;
    /* Cranks whose changes wait in the tables written at sync count too:
     * a flush writes them. */
    if ((lua_Integer)(ocap_store_pending(lk->s) + (size_t)ocap_kernel_unsynced(lk->k)) >= group &&
        (sync_tables(L, lk) || (rc = ocap_store_flush(lk->s)) != 0))
      luaL_error(L, "flush failed: %s", ocap_strerror(rc));
    if (lk->host_ran) {
      *visible = 1;
      break;
    }
  }
  return ran;
}

/* K:drive(max, group) -> ran, visible  [-0, +2, e]
 * The host's driver: one batch of cranks (run_batch). ran counts the
 * cranks run; visible is true when host code ran. */
static int k_drive(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  lua_Integer max = luaL_optinteger(L, 2, 64);
  lua_Integer group = luaL_optinteger(L, 3, 512);
  int visible;
  lua_Integer ran = run_batch(L, lk, max, group, &visible);
  lua_pushinteger(L, ran);
  lua_pushboolean(L, visible);
  return 2;
}

/* [-0, +0, e] Writes the committed cranks the host has not seen to disk
 * (K:pending, then K:flush): a result reaches host code only after the
 * cranks that made it. */
static void flush_for_host(lua_State *L, lkernel_t *lk) {
  if (pending_cranks(L, lk) > 0) {
    sync_tables(L, lk);
    int rc = ocap_store_flush(lk->s);
    if (rc)
      luaL_error(L, "flush failed: %s", ocap_strerror(rc));
  }
}

/* [-0, +0, e] Whether the host's promise core has turns to run, or an
 * unhandled rejection to report (which drain does too). */
static int has_turns(lua_State *L, lkernel_t *lk) {
  if (lk->drain_q)
    return !ocap_promise_idle(lk->drain_q);
  lua_rawgeti(L, LUA_REGISTRYINDEX, lk->has_turns_ref);
  lua_call(L, 0, 1);
  int yes = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return yes;
}

/* The cranks K:await runs between two looks at the awaited promise, and
 * the committed cranks it lets pile up before a store write: those of
 * the host driver in lua/ocap/kernel.lua. */
#define AWAIT_BATCH 64
#define AWAIT_GROUP 512

/*
 * K:await(isSettled, failing, reapWaiters) -> true | 'host' | false
 * [-0, +1, e]
 * The main thread's driver for a host that runs one kernel with no remote
 * layer, in C: what the general driver in lua/ocap/kernel.lua does, turn
 * for turn, without a Lua call per step. It loops: promise turns first
 * (the cranks they may see written first), then isSettled(), then a batch
 * of cranks. It answers true once the awaited promise has settled and the
 * cranks it may see are written (group commit); 'host' after a batch that
 * leaves the host work to do (a vat that failed to restart in failing,
 * reapVats() promises waiting in reapWaiters), after which it is called
 * again; false when nothing ran and no turn is queued, or the kernel was
 * stopped, for the general driver, which waits on the loop or reports
 * the stop.
 */
static int k_await(lua_State *L) {
  lkernel_t **p = luaL_checkudata(L, 1, KERNEL_MT);
  luaL_checktype(L, 3, LUA_TTABLE);
  luaL_checktype(L, 4, LUA_TTABLE);
  lkernel_t *lk = *p;
  if (!lk || lk->drain_ref == LUA_NOREF) {
    lua_pushboolean(L, 0);
    return 1;
  }
  for (;;) {
    if (has_turns(L, lk)) {
      flush_for_host(L, lk);
      lua_rawgeti(L, LUA_REGISTRYINDEX, lk->drain_ref);
      lua_call(L, 0, 0);
      /* A turn may have stopped the kernel. */
      if (!(lk = *p)) {
        lua_pushboolean(L, 0);
        return 1;
      }
    }
    lua_pushvalue(L, 2);
    lua_call(L, 0, 1);
    int settled = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (settled) {
      flush_for_host(L, lk);
      lua_pushboolean(L, 1);
      return 1;
    }
    int visible;
    lua_Integer ran = run_batch(L, lk, AWAIT_BATCH, AWAIT_GROUP, &visible);
    if (!(lk = *p) || (ran == 0 && !has_turns(L, lk))) {
      lua_pushboolean(L, 0);
      return 1;
    }
    int waiting = lua_rawgeti(L, 4, 1) != LUA_TNIL;
    lua_pop(L, 1);
    if (!waiting && visible) {
      lua_pushnil(L);
      waiting = lua_next(L, 3);
      if (waiting)
        lua_pop(L, 2);
    }
    if (waiting) {
      lua_pushliteral(L, "host");
      return 1;
    }
  }
}

/* K:queueLength() -> integer  [-0, +1, e] */
static int k_queue_length(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  long long n = ocap_kernel_queue_length(lk->k);
  if (n < 0)
    return raise_kernel(L, lk);
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

/* K:cranks() -> integer  [-0, +1, e] */
static int k_cranks(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)ocap_kernel_cranks(checkkernel(L, 1)->k));
  return 1;
}

/* K:nextId(kind) -> integer  [-0, +1, e]
 * The next id the kernel will give out for kind 'o' (objects), 'p'
 * (promises) or 'v' (vats), as the kernel sees it now: these counters are
 * written to the store only when it commits. */
static int k_next_id(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  const char *kind = luaL_checkstring(L, 2);
  long long n = ocap_kernel_next_id(lk->k, kind[0]);
  if (n < 0) {
    /* Only a read failed (a damaged counter): nothing is half done, so
     * the failure is reported here and not left to fail the next crank. */
    lua_pushstring(L, ocap_kernel_errmsg(lk->k));
    ocap_kernel_clear_failure(lk->k);
    return lua_error(L);
  }
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

/* K:terminate(vatId, reasonBody)  [-0, +0, e] */
static int k_terminate(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  const char *ep = luaL_checkstring(L, 2);
  if (lk->delivering && lk->delivering == find_vat(lk, ep))
    return luaL_error(L, "cannot terminate vat %s while it is running", ep);
  refuse_in_crank(L, lk, "terminate");
  ocap_capdata_t cd = {0};
  cd.body = luaL_checklstring(L, 3, &cd.blen);
  lua_State *saved = lk->L;
  lk->L = L;
  int rc = ocap_kernel_terminate(lk->k, ep, &cd);
  lk->L = saved;
  if (rc)
    return raise_kernel(L, lk);
  return 0;
}

/* K:revoke(kref)  [-0, +0, e] */
/* K:rejectDecided(vatId, reasonBody): rejects what the vat decided.  [-0, +0, e] */
static int k_reject_decided(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  const char *ep = luaL_checkstring(L, 2);
  ocap_capdata_t cd = {0};
  cd.body = luaL_checklstring(L, 3, &cd.blen);
  if (ocap_kernel_reject_decided(lk->k, ep, &cd))
    return raise_kernel(L, lk);
  return 0;
}

static int k_revoke(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  if (ocap_kernel_revoke(lk->k, luaL_checkstring(L, 2)))
    return raise_kernel(L, lk);
  return 0;
}

/* K:isRevoked(kref) -> boolean  [-0, +1, e] */
static int k_is_revoked(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  int rc = ocap_kernel_is_revoked(lk->k, luaL_checkstring(L, 2));
  if (rc < 0)
    return raise_kernel(L, lk);
  lua_pushboolean(L, rc);
  return 1;
}

/* [-0, +0, e] Replaces *ref by a reference to the function at index 2, or
 * clears it when that argument is nil or absent. */
static int set_ref(lua_State *L, int *ref) {
  luaL_unref(L, LUA_REGISTRYINDEX, *ref);
  *ref = LUA_NOREF;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 2);
    *ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  return 0;
}

/* K:setHostDispatch(dispatch?)  [-0, +0, e] */
static int k_set_host_dispatch(lua_State *L) {
  return set_ref(L, &checkkernel(L, 1)->host_dispatch_ref);
}

/* K:setHostPipelines(pipelines?)  [-0, +0, e] */
static int k_set_host_pipelines(lua_State *L) {
  return set_ref(L, &checkkernel(L, 1)->host_pipelines_ref);
}

/* K:setPeerDispatch(dispatch?)  [-0, +0, e]
 * dispatch(ep, kind, ...) takes the deliveries to remote peers' endpoints
 * in the shape liveslots' dispatch takes them, and dispatch(ep,
 * 'pipelines', eref) answers the kernel's pipelines hook for them. */
static int k_set_peer_dispatch(lua_State *L) {
  return set_ref(L, &checkkernel(L, 1)->peer_dispatch_ref);
}

/* K:setVatNeeded(vatNeeded?)  [-0, +0, e] */
static int k_set_vat_needed(lua_State *L) {
  return set_ref(L, &checkkernel(L, 1)->vat_needed_ref);
}

/* K:setAfterCrank(handler?)  [-0, +0, e]
 * handler(committed) runs after a crank in which host code called
 * K:afterCrank. */
static int k_set_after_crank(lua_State *L) {
  return set_ref(L, &checkkernel(L, 1)->after_crank_ref);
}

/* K:setDrain(drain, hasTurns)  [-0, +0, e]
 * The host's promise drain and hasTurns (ocap.promise's), which K:await
 * runs. Where this module was built with ocap.promise's core (the ocap
 * binary), K:await reads the queue's counts itself instead of calling
 * hasTurns; a Lua that loads the core as a module of its own (busted)
 * has another copy of drain, whose queue it cannot read. */
static int k_set_drain(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  lk->drain_q = ocap_promise_queue(L, 2);
  luaL_unref(L, LUA_REGISTRYINDEX, lk->has_turns_ref);
  lk->has_turns_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  luaL_unref(L, LUA_REGISTRYINDEX, lk->drain_ref);
  lk->drain_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

/* K:setHostResults(trackPromise, pending, settleAndResume)  [-0, +0, e]
 * The host liveslots' trackPromise, which K:queueFlat makes its result
 * promises with, its table of pending promises by kpid and ocap.promise's
 * settleAndResume, with which the host's endpoint takes the common
 * resolution in C (ocap__host_notify). */
static int k_set_host_results(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  luaL_checktype(L, 3, LUA_TTABLE);
  luaL_checktype(L, 4, LUA_TFUNCTION);
  lua_settop(L, 4);
  int *refs[] = {&lk->track_ref, &lk->pending_ref, &lk->settle_ref};
  for (int i = 2; i >= 0; i--) {
    luaL_unref(L, LUA_REGISTRYINDEX, *refs[i]);
    *refs[i] = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  return 0;
}

/* K:setLogger(logger?)  [-0, +0, e] */
static int k_set_logger(lua_State *L) {
  return set_ref(L, &checkkernel(L, 1)->logger_ref);
}

/* K:setTerminated(terminated?)  [-0, +0, e] */
static int k_set_terminated(lua_State *L) {
  return set_ref(L, &checkkernel(L, 1)->terminated_ref);
}

/* K:setExitHandler(handler?)  [-0, +0, e] */
static int k_set_exit_handler(lua_State *L) {
  return set_ref(L, &checkkernel(L, 1)->exit_ref);
}

/* K:loopAlive() -> boolean  [-0, +1, e]
 * It is true while timers or other handles are pending. */
static int k_loop_alive(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  lua_pushboolean(L, lk->nfired > 0 || uv_loop_alive(&lk->loop));
  return 1;
}

/* K:runLoop(wait) -> fired  [-0, +1, e]
 * It runs ready libuv callbacks and, when wait is true, waits for one. */
static int k_run_loop(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  if (lk->nfired == 0)
    uv_run(&lk->loop, lua_toboolean(L, 2) ? UV_RUN_ONCE : UV_RUN_NOWAIT);
  lua_pushboolean(L, lk->nfired > 0);
  return 1;
}

/* K:loopBackend() -> fd, timeout  [-0, +2]
 * The descriptor that becomes readable when the kernel's loop has IO or
 * timers ready, and the milliseconds until its next timer (-1: none), so
 * that a host loop can wake the kernel instead of polling it (ocap.h's
 * ocap_host_attach_loop). */
static int k_loop_backend(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  lua_pushinteger(L, uv_backend_fd(&lk->loop));
  lua_pushinteger(L, lk->nfired > 0 ? 0 : uv_backend_timeout(&lk->loop));
  return 2;
}

static const luaL_Reg kernel_methods[] = {
    {"close", k_close},
    {"kvGet", k_kv_get},
    {"kvSet", k_kv_set},
    {"kvDelete", k_kv_delete},
    {"kvNext", k_kv_next},
    {"kvCount", k_kv_count},
    {"commit", k_commit},
    {"abort", k_abort},
    {"flush", k_flush},
    {"pending", k_pending},
    {"clear", k_clear},
    {"inCrank", k_in_crank},
    {"afterCrank", k_after_crank},
    {"setAfterCrank", k_set_after_crank},
    {"check", k_check},
    {"allocVatId", k_alloc_vat_id},
    {"allocObject", k_alloc_object},
    {"allocPromise", k_alloc_promise},
    {"krefOf", k_kref_of},
    {"import", k_import},
    {"export", k_export},
    {"send", k_send},
    {"queueFlat", k_queue_flat},
    {"hostPaths", k_host_paths},
    {"setHostResults", k_set_host_results},
    {"subscribe", k_subscribe},
    {"resolve", k_resolve},
    {"step", k_step},
    {"drive", k_drive},
    {"await", k_await},
    {"setDrain", k_set_drain},
    {"queueLength", k_queue_length},
    {"cranks", k_cranks},
    {"nextId", k_next_id},
    {"terminate", k_terminate},
    {"rejectDecided", k_reject_decided},
    {"revoke", k_revoke},
    {"isRevoked", k_is_revoked},
    {"setHostDispatch", k_set_host_dispatch},
    {"setHostPipelines", k_set_host_pipelines},
    {"setPeerDispatch", k_set_peer_dispatch},
    {"allocPeerId", k_alloc_peer_id},
    {"clistSize", k_clist_size},
    {"setVatNeeded", k_set_vat_needed},
    {"setLogger", k_set_logger},
    {"setTerminated", k_set_terminated},
    {"setExitHandler", k_set_exit_handler},
    {"loopAlive", k_loop_alive},
    {"loopBackend", k_loop_backend},
    {"runLoop", k_run_loop},
    {"pin", k_pin},
    {"setReapInterval", k_set_reap_interval},
    {"reapAll", k_reap_all},
    {"gcWork", k_gc_work},
    {"reachableImports", k_reachable_imports},
    {NULL, NULL},
};

/* The libuv loop of the kernel at idx, for the daemon's control channel
 * (lrpc.c), which serves on it. [-0, +0, e] */
uv_loop_t *lkernel_loop(lua_State *L, int idx) {
  return &checkkernel(L, idx)->loop;
}

static const luaL_Reg core_functions[] = {
    {"open", core_open},
    {NULL, NULL},
};

/* require 'ocap.core' -> { open = f }  [-0, +1, e] */
int luaopen_ocap_core(lua_State *L) {
  if (luaL_newmetatable(L, KERNEL_MT)) {
    luaL_newlib(L, kernel_methods);
    luaL_setfuncs(L, ocap__vat_methods, 0);
    for (int i = 0; i < 4; i++) {
      lua_pushinteger(L, i);
      lua_pushcclosure(L, k_gc_call, 1);
      lua_setfield(L, -2, ocap__gc_call_names[i]);
    }
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, k_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_newlib(L, core_functions);
  lrpc_open(L);
  lua_setfield(L, -2, "rpc");
  lnet_open(L);
  lua_setfield(L, -2, "net");
  lcrypto_open(L);
  lua_setfield(L, -2, "crypto");
  ltls_open(L);
  lua_setfield(L, -2, "tls");
  lio_open(L);
  lua_setfield(L, -2, "io");
  return 1;
}
