/*
 * store.h -- the kernel's key-value store: one interface, two backends.
 *
 * Conventions:
 *  1. Keys and values are byte strings with explicit lengths; keys never
 *     contain NUL in practice but the API does not rely on it.
 *  2. Every function that can fail returns 0 on success or a negative
 *     OCAP_E* code; ocap_strerror() names it, and ocap_store_errmsg() gives
 *     the last detailed message (for example LevelDB's own text).
 *  3. All reads and writes go through the crank buffer: writes made since
 *     the last commit are visible to reads (read-your-writes), and are
 *     either all applied by ocap_store_commit() or all dropped by
 *     ocap_store_abort().
 *  4. Pointers returned by get are owned by the store and stay valid until
 *     the next write, commit, abort or close on the same store. Copy them if
 *     you need them longer.
 *  5. The LevelDB backend keeps a write-through cache of everything it has
 *     read or written, so a warm kernel never reads LevelDB on its hot path.
 *     The in-memory backend is the same code with no database below.
 *  6. Durability: committed cranks collect in a pending batch that
 *     ocap_store_flush() writes to LevelDB in one write (group commit); the
 *     kernel flushes before a crank's results reach the host. With
 *     OCAP_DURABILITY_NONE the write has no fsync (it survives a process
 *     crash); with OCAP_DURABILITY_FSYNC it is fsynced (it survives power
 *     loss).
 */
#ifndef OCAP_STORE_H
#define OCAP_STORE_H

#include <stddef.h>

#include "errors.h"

typedef struct ocap_store ocap_store_t;

enum ocap_durability { OCAP_DURABILITY_NONE = 0, OCAP_DURABILITY_FSYNC = 1 };

/* Opens an in-memory store. Never fails except for OCAP_ENOMEM. */
int ocap_store_open_memory(ocap_store_t **out);

/*
 * Opens (creating if missing) the LevelDB database in directory `dir`.
 * Fails with OCAP_ELOCKED when another process holds it (or this process
 * already has it open), OCAP_ECORRUPT when LevelDB reports corruption,
 * OCAP_ENOTDB when `dir` is not a directory or is a non-empty directory
 * without a CURRENT file (it is then left untouched; a directory holding
 * only LevelDB's LOCK and LOG files counts as empty), OCAP_EIO otherwise;
 * the detailed message, naming `dir`, is in *errmsg (malloc'd, caller
 * frees) when errmsg is not NULL.
 */
int ocap_store_open_leveldb(const char *dir, int durability, ocap_store_t **out, char **errmsg);

/* Removes every key, committed or not (used by resetStorage). */
int ocap_store_clear(ocap_store_t *s);

/*
 * Looks up `key`. Returns 1 and sets *val and *vlen when found, 0 when missing,
 * a negative code on error.
 */
int ocap_store_get(ocap_store_t *s, const char *key, size_t klen, const char **val, size_t *vlen);

int ocap_store_set(ocap_store_t *s, const char *key, size_t klen, const char *val, size_t vlen);
int ocap_store_delete(ocap_store_t *s, const char *key, size_t klen);

/*
 * The first key strictly greater than `after` (or >= `after` when
 * inclusive is set) that starts with `prefix`, in byte order, seen through
 * the crank buffer. Returns 1 and sets *key and *klen when there is one, 0 when
 * there is none. The returned key is owned by the store (convention 4) and
 * is also replaced by the next call of next_key; passing it back as `after`
 * is fine. Empty strings may be passed as NULL with length 0.
 */
int ocap_store_next_key(ocap_store_t *s, const char *prefix, size_t plen, const char *after,
                        size_t alen, int inclusive, const char **key, size_t *klen);

/*
 * Hooks for tables a layer above keeps in memory (the kernel's run queue and
 * counters), so that every commit and abort, whoever calls it, covers them
 * too. `prepare` runs first in ocap_store_commit and writes the tables'
 * changes since the last commit into the crank buffer as final states; if
 * it or the commit fails, the commit returns the code and the caller's
 * abort (or a later commit, prepare being repeatable) follows. `done` runs
 * once the commit has succeeded, and `abort` in ocap_store_abort and, with
 * `cleared` set, in ocap_store_clear. A NULL hooks pointer removes them.
 */
typedef struct ocap_store_hooks {
  void *ud;
  int (*prepare)(void *ud);
  void (*done)(void *ud);
  void (*abort)(void *ud, int cleared);
} ocap_store_hooks_t;
void ocap_store_set_hooks(ocap_store_t *s, const ocap_store_hooks_t *hooks);

/* Applies the crank buffer (see convention 6 for when it reaches disk). */
int ocap_store_commit(ocap_store_t *s);
/*
 * Applies the writes fill(ud) makes (with ocap_store_set and
 * ocap_store_delete, in a buffer of their own) straight to the committed
 * layer, as a commit of their own that leaves the crank buffer and its
 * pending writes as they are, and runs no hooks. For tables a layer above
 * keeps in memory and writes later than at each commit: what they write
 * here must be state that was already committed. Returns 0, fill's code,
 * or the commit's; on failure nothing of it is applied.
 */
int ocap_store_commit_direct(ocap_store_t *s, int (*fill)(void *ud), void *ud);
/* The number of writes in the crank buffer (0: a commit would write
 * nothing of its own; the hooks' tables may still have changes). */
size_t ocap_store_buffered(const ocap_store_t *s);
/* Drops the crank buffer. */
void ocap_store_abort(ocap_store_t *s);
/* Writes the committed-but-pending cranks in one write (fsync with FSYNC). */
int ocap_store_flush(ocap_store_t *s);
/*
 * Number of committed cranks not yet flushed ; a commit
 * with nothing to write does not count.
 */
size_t ocap_store_pending(const ocap_store_t *s);
/* Whether the store writes to disk (LevelDB), so that a flush matters. */
int ocap_store_durable(const ocap_store_t *s);

/*
 * Number of keys, seen through the crank buffer. A LevelDB store counts its
 * keys at the first call (with the committed cranks not yet flushed), not at open;
 * (size_t)-1 if that fails, with the error in ocap_store_errmsg.
 */
size_t ocap_store_count(ocap_store_t *s);

/* Flushes, then frees everything. Safe on NULL. */
void ocap_store_close(ocap_store_t *s);

const char *ocap_store_errmsg(const ocap_store_t *s);

/*
 * Testing hooks. ocap_store_inject_fault makes the n-th call from now among
 * the kinds in `ops` (OCAP_FAULT_* bits) fail with `code`, once, leaving the
 * store unchanged by that call; n = 0 disarms it. It returns how many calls
 * the previous arming still had to go (0 once its fault fired). Tests use it
 * to check that a failed write fails the crank rather than being lost.
 * ocap_store_scan_steps counts the keys next_key has examined (live ones,
 * and the deleted or absent ones it stepped over), so tests can check that
 * a scan is linear by counting instead of timing. ocap_store_order_steps
 * counts the committed keys next_key had to sort or merge before it could
 * scan, so tests can check that the ordering work a scan (perhaps a vat's)
 * finds waiting stays bounded. ocap_store_bytes_written
 * counts the bytes of the keys and values passed to set and delete, so tests
 * can check what a change costs to write in the same way.
 * ocap_store_trace_writes calls fn(ud, key, klen, deleted) at each set and
 * delete from then on (fn NULL: no more), so tests can check which keys a
 * piece of work writes at all.
 */
enum {
  OCAP_FAULT_GET = 1,
  OCAP_FAULT_SET = 2,
  OCAP_FAULT_DELETE = 4,
  OCAP_FAULT_NEXT = 8,
  OCAP_FAULT_COMMIT = 16,
  OCAP_FAULT_ALL = 31
};
long ocap_store_inject_fault(ocap_store_t *s, unsigned ops, long n, int code);
unsigned long long ocap_store_scan_steps(const ocap_store_t *s);
unsigned long long ocap_store_order_steps(const ocap_store_t *s);
unsigned long long ocap_store_bytes_written(const ocap_store_t *s);
void ocap_store_trace_writes(ocap_store_t *s,
                             void (*fn)(void *ud, const char *key, size_t klen, int deleted),
                             void *ud);

#endif
