/*
 * harness.h -- what the fuzz harnesses share: a host Lua state set up as the
 * `ocap` command sets up its own, and vats built as the kernel builds them.
 *
 * Conventions:
 *  1. Every harness defines LLVMFuzzerTestOneInput (and may define
 *     LLVMFuzzerInitialize), so it links against libFuzzer (`make fuzz`) or
 *     against spec/fuzz/driver.c (`make test`) unchanged.
 *  2. A harness treats a clean error for malformed input as success. It
 *     calls fuzz_fail(), which aborts so that either engine keeps the input,
 *     only when an invariant breaks: a crash, a wrong answer, two decoders
 *     that disagree, or a state left corrupt.
 *  3. Files are found under the source tree: OCAP_SOURCE_DIR from the
 *     environment, else the directory the build was configured from.
 */
#ifndef OCAP_FUZZ_HARNESS_H
#define OCAP_FUZZ_HARNESS_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>

#include "vat.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/*
 * What a harness returns for an input the decoder refused: -1 tells our
 * driver not to mutate it further; libFuzzer, which follows coverage, keeps
 * it as it keeps any input, so its error paths are explored too.
 */
#ifdef OCAP_FUZZ_LIBFUZZER
#define FUZZ_REFUSED 0
#else
#define FUZZ_REFUSED (-1)
#endif

/* Prints the message (printf-style) and the input's size, then aborts. */
void fuzz_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* The source tree's root, without a trailing slash. */
const char *fuzz_source_dir(void);

/* Reads a file of the source tree (path relative to its root); the result
 * is malloc'd and NUL-terminated. Fails the run when it cannot be read. */
char *fuzz_read_source(const char *relpath, size_t *len);

/*
 * A new host state with the standard libraries, `ocap.core` and
 * `ocap.smallcaps` built in, and
 * package.path covering lua/ and spec/ of the source tree, as `ocap run`
 * has it. Fails the run when it cannot be made.
 */
lua_State *fuzz_host_state(void);

/*
 * [-0, +1] Loads the chunk in file relpath into L and calls it, leaving its
 * one result. Fails the run on any error.
 */
void fuzz_host_dofile(lua_State *L, const char *relpath);

/*
 * A vat as the kernel builds one: the limits given, the runtime modules
 * ocap.pass and ocap.marshal preloaded as trusted code, the vat JSON
 * decoder as its `cjson` and the C smallcaps codec as `ocap.smallcaps`. Returns NULL only when the
 * vat cannot be built.
 */
ocap_vat_t *fuzz_new_vat(size_t memory, long long instructions);

#endif
