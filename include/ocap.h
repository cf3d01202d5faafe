/*
 * ocap.h -- embedding the ocap kernel in a C program.
 *
 * Conventions (read these first):
 *
 *  1. Handles. ocap_host_t (a kernel with the Lua host state that runs it)
 *     and ocap_reply_t (the answer owed by a C service call) are opaque.
 *     Passing NULL where a handle is expected returns OCAP_EINVAL; it never
 *     crashes.
 *
 *  2. Return codes. Every call that can fail returns 0 or a negative
 *     OCAP_E* code; ocap_strerror(code) names it in English, and
 *     ocap_host_errmsg(host) gives the detail of the host's last failure
 *     (valid until the next call on that host).
 *
 *  3. Strings. Every const char * the host passes in is copied before the
 *     call returns; the host keeps ownership. Every const char * handed to
 *     a callback (JSON text, method names, log lines) is owned by ocap and
 *     is valid only until the callback returns: copy it to keep it.
 *
 *  4. JSON. Arguments and results cross the boundary as JSON text: the
 *     arguments of a message are a JSON array, a result is any JSON value.
 *     A reference to an object (a presence or a remotable) appears as
 *     {"@kref":"ko12"}, both ways: in arguments and in a service's answer
 *     it is turned into that object, so a C host can pass references on.
 *     JSON that does not parse is OCAP_EINVAL; an unknown kref is
 *     OCAP_ENOTFOUND in arguments and OCAP_EINVAL in an answer.
 *
 *  5. Callbacks. Callbacks run on the thread that drives the kernel, from
 *     inside ocap_host_run, from the attached loop, or from a call such as
 *     ocap_host_queue_message. Inside a callback the host may call any
 *     function of this header, including ocap_host_free on its own host:
 *     the free then happens once the callback returns, and no callback of
 *     that host runs after ocap_host_free has been called (calls on it
 *     until then return OCAP_ESTOPPED). Result callbacks, service methods
 *     and the logger run inside a crank, where ocap_host_run is refused
 *     (OCAP_ESCRIPT): queue more work there and let the driver run it.
 *
 *  6. Replies. A C service method receives an ocap_reply_t and must
 *     complete it exactly once, with ocap_reply_resolve or
 *     ocap_reply_reject, either before returning or later. Completing it
 *     frees it. A reply completed after its host was freed is just freed.
 *
 *  7. Threads. A host and everything reached from it belong to one thread
 *     at a time; different hosts may run on different threads. Nothing here
 *     takes a lock.
 *
 *  8. Loop. ocap_host_attach_loop runs the kernel from handles on the
 *     host's own uv_loop_t, in bounded batches of cranks, so the host's
 *     timers and IO keep running between batches. The host must call
 *     ocap_host_free before closing that loop, and run the loop once more
 *     afterwards so the handles' close callbacks run.
 */
#ifndef OCAP_H
#define OCAP_H

#include <stddef.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

#define OCAP_OK 0
#define OCAP_ENOMEM (-1)    /* out of memory */
#define OCAP_EIO (-2)       /* input/output error from the database */
#define OCAP_ELOCKED (-3)   /* the database is in use by another process */
#define OCAP_ECORRUPT (-4)  /* the database is corrupt */
#define OCAP_ENOTDB (-5)    /* the directory is not an ocap database */
#define OCAP_EVERSION (-6)  /* the database has another schema version */
#define OCAP_EINVAL (-7)    /* invalid argument */
#define OCAP_ENOTFOUND (-8) /* no such key, vat or reference */
#define OCAP_EFATAL (-9)    /* a vat failed fatally */
#define OCAP_EREFUSED (-10) /* a delivery was refused; the vat is kept */
#define OCAP_ESCRIPT (-11)  /* Lua code (a host script, a config) failed */
#define OCAP_ESTOPPED (-12) /* the host is being freed */

const char *ocap_strerror(int code);

typedef struct ocap_host ocap_host_t;
typedef struct ocap_reply ocap_reply_t;

/* Receives one kernel log entry as a JSON object. */
typedef void (*ocap_log_fn)(void *ud, const char *entry_json);

/* Receives the outcome of a message or a launch: ok is 1 with a JSON
 * result, or 0 with an error message. */
typedef void (*ocap_result_fn)(void *ud, int ok, const char *json_or_message);

/* A method of a C service: args_json is a JSON array; complete reply. */
typedef void (*ocap_service_fn)(void *ud, const char *method, const char *args_json,
                                ocap_reply_t *reply);

typedef struct ocap_host_options {
  const char *database; /* LevelDB directory, or NULL for memory */
  int reset_storage;    /* nonzero: wipe the database first */
  const char *base_dir; /* where relative sourceSpec resolve; NULL: "." */
  const char *lua_dir;  /* where the ocap Lua modules are; NULL: found */
  ocap_log_fn logger;   /* NULL: the kernel's default (stderr) */
  void *logger_ud;
} ocap_host_options_t;

/* Makes a kernel; *out is NULL on failure. opts may be NULL. On failure,
 * when errmsg is not NULL it receives a malloc'd message to free(). */
int ocap_host_new(const ocap_host_options_t *opts, ocap_host_t **out, char **errmsg);

/* Stops the kernel (the crank in progress commits), drops every pending
 * callback without calling it, and frees the host. NULL is a no-op. */
void ocap_host_free(ocap_host_t *host);

const char *ocap_host_errmsg(const ocap_host_t *host);

/* Runs the kernel until nothing is left to run now (no cranks, no turns,
 * no vat timer that has fired); it does not wait for timers to come. */
int ocap_host_run(ocap_host_t *host);

/* Runs the kernel from handles on loop (see convention 8). */
int ocap_host_attach_loop(ocap_host_t *host, uv_loop_t *loop);

/* Registers a kernel service named name with the given methods (a NULL-
 * terminated array); each call of one of them calls fn. Returns the
 * service's kref through kref_out (a buffer of kref_size bytes) if not
 * NULL. Services must be registered before subclusters that use them. */
int ocap_host_register_service(ocap_host_t *host, const char *name, const char *const *methods,
                               ocap_service_fn fn, void *ud, char *kref_out, size_t kref_size);

int ocap_reply_resolve(ocap_reply_t *reply, const char *result_json);
int ocap_reply_reject(ocap_reply_t *reply, const char *message);

/* Capdata: the kernel's own encoding of a value, as the JSON text
 * {"body":"#...","slots":["ko12",...]}, whose body is smallcaps and whose
 * slots are krefs. It keeps what JSON cannot (errors as values, tagged
 * values, the interface of a reference). These calls are the JSON ones
 * with capdata for arguments and results; capdata that does not decode is
 * OCAP_EINVAL, an unknown kref in slots OCAP_ENOTFOUND (in arguments). */
int ocap_host_register_service_capdata(ocap_host_t *host, const char *name,
                                       const char *const *methods, ocap_service_fn fn, void *ud,
                                       char *kref_out, size_t kref_size);
int ocap_reply_resolve_capdata(ocap_reply_t *reply, const char *result_capdata);
int ocap_host_queue_message_capdata(ocap_host_t *host, const char *target, const char *method,
                                    const char *args_capdata, ocap_result_fn cb, void *ud);

/* Loads a Lua config file (a chunk that returns a cluster config table)
 * and launches it; cb gets {"subclusterId":..,"rootKref":..,
 * "bootstrapResult":..}. cb may be NULL. */
int ocap_host_launch_file(ocap_host_t *host, const char *config_path, ocap_result_fn cb, void *ud);

/* Runs a Lua host script; the script receives the kernel as its first
 * argument (...). It runs to its end before this returns. */
int ocap_host_run_script(ocap_host_t *host, const char *path);

/* Queues target.method(...args) where target is a kref ("ko3") and
 * args_json a JSON array; cb gets the result. cb may be NULL. */
int ocap_host_queue_message(ocap_host_t *host, const char *target, const char *method,
                            const char *args_json, ocap_result_fn cb, void *ud);

/* Runs the ocap command line (`ocap run`, `ocap test`, ...: docs/api.md §10)
 * with argv[1..argc-1] as its arguments, in a Lua state of its own, and
 * returns its exit status; errors go to stderr. The `ocap` executable is
 * this call. It finds the Lua modules as ocap_host_new does. */
int ocap_main(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
