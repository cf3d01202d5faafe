/*
 * lmatch.h -- Lua patterns (the Lua 5.4 manual, section 6.4.1) with a step
 * meter: string.find, string.match, string.gmatch and string.gsub for vats.
 *
 * Lua's own matcher runs inside one C call where no count hook fires, and it
 * backtracks: `a?` repeated 25 times takes 2^25 steps, `a*b` takes n^2. This
 * matcher keeps Lua's semantics (the same results and, where practical, the
 * same error messages) but counts the work it does and hands the count to a
 * meter as it goes, so an expensive match ends when the budget does.
 *
 * Conventions:
 *  1. The functions are Lua C functions that take the meter as a light
 *     userdata upvalue (upvalue 1) pointing to an ocap_match_meter_t.
 *     When that upvalue is absent or NULL (a vat's light C functions),
 *     they charge the vat the state belongs to, one instruction a step
 *     (ocap_vat_charge, which charges nothing outside a vat).
 *  2. A step is one attempt to match a pattern item at one subject position,
 *     or OCAP_MATCH_BYTES_PER_STEP bytes searched or copied in bulk; its cost
 *     is bounded by a constant, so steps measure time.
 *  3. The meter's charge may raise (longjmp) at any call; the matcher holds
 *     no C resource across it: its state lives on the C stack or in Lua
 *     values.
 *  4. Each function states its stack effect as [-pop, +push] in Lua's
 *     manual notation.
 */
#ifndef OCAP_LMATCH_H
#define OCAP_LMATCH_H

#include <lua.h>
#include <lauxlib.h>

/* The most captures a pattern may have, as in Lua. */
#define OCAP_MATCH_MAXCAPTURES 32

/* How deeply matching may nest (captures and backtracking items), as in Lua. */
#define OCAP_MATCH_MAXDEPTH 200

/* Bytes searched (plain find) or copied (gsub) that count as one step. */
#define OCAP_MATCH_BYTES_PER_STEP 16

/* Steps the matcher accumulates before it charges them. */
#define OCAP_MATCH_BATCH 256

typedef struct ocap_match_meter {
  /* [-0, +0, e] Charges steps of matching work; raises to stop the match. */
  void (*charge)(lua_State *L, long long steps);
} ocap_match_meter_t;

/*
 * The pattern functions, named as in the string library; each takes the
 * meter as upvalue 1, or charges the vat (see convention 1).
 * NULL-terminated.
 */
extern const luaL_Reg ocap_match_funcs[];

#endif
