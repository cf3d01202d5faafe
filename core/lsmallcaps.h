/*
 * lsmallcaps.h -- the smallcaps codec over Lua values (`ocap.smallcaps`).
 *
 * The module has one function, new(model), which lua/ocap/pass.lua calls
 * with its private tables (which values are remotables, promises, hardened
 * tables, the array mark, the error tag, null) and which returns a codec:
 *
 *   encode(v, valToSlot?) -> { body, slots } | nil
 *   encodeCall(method, args, valToSlot?) -> { body, slots } | nil
 *   encodeParts(v, valToSlot?) -> body, slots | nil
 *   encodeCallParts(method, args, valToSlot?) -> body, slots | nil
 *   encodeCallArgs(method, valToSlot, ...) -> body, slots | nil
 *   decode(body, slots?, slotToVal?) -> true, value | false
 *   decodeCall(body, slots?, slotToVal?) -> true, method, args... | false
 *   setPromiseMetatable(mt)
 *
 * The Parts forms answer the body and slots as two values, the slots nil
 * when there are none, for a caller that hands them on at once (liveslots'
 * syscalls) and so needs no table; encodeCallArgs takes the arguments as
 * they come, as table.pack(...) would gather them, and makes no table of
 * them either when they are simple.
 *
 * decodeCall takes a message body, [method, [args...]], and answers the
 * method and the arguments as values (at most 64 of them), making no
 * table for either array; false for any other shape.
 *
 * A codec answers nil or false for anything it leaves to the reference
 * codec in lua/ocap/marshal.lua: every error (which the reference then
 * raises with its message and path) and the rare bodies it does not take
 * (smallcaps.h, convention 2). What a codec returns is byte for byte, and
 * value for value, what the reference returns.
 *
 * The functions are pure: slots reach values only through the caller's
 * slotToVal, so a codec gives no power to code that holds one. Inside a
 * vat they charge the vat's meter and allocate through its allocator.
 */
#ifndef OCAP_LSMALLCAPS_H
#define OCAP_LSMALLCAPS_H

#include <lua.h>

#include "vat.h"

/*
 * The model: the table of private values a codec reads (its functions'
 * upvalue 1), indexed by these. new() fills the codec's part, up to
 * M_MAKE_ERROR; ocap.pass (lpass.c) makes the whole of it and keeps its
 * own state in the rest.
 */
enum ocap_sc_model {
  M_REMOTABLES = 1, /* obj -> iface */
  M_PROMISES,       /* promise -> true */
  M_SHADOWS,        /* hardened proxy -> its contents */
  M_ARRAY_MT,       /* the array mark */
  M_ERROR_TAG,      /* what getmetatable returns for an error value */
  M_NULL,           /* the passable null */
  M_PROMISE_MT,     /* the metatable of ocap.promise's promises, once set */
  M_MAKE_ERROR,     /* pass.makeError */
  M_BOXES,          /* OCapN box -> its contents (ocap.pass.boxes) */
  M_REQUIRE,        /* the require ocap.pass was made with */
  M_NEXT,           /* next, which a hardened table's __pairs answers */
  M_MODULE,         /* the ocap.pass module table */
  M_ERROR_MT,       /* the metatable of error values */
  M_HARDENED_LEN,   /* every hardened table's __len */
  M_HARDENED_PAIRS, /* and __pairs */
  M_STYLE,          /* ocap.pass.style's kit, once loaded */
  M_BOX_KIT,        /* ocap.pass.boxes' kit, once loaded */
  M_MODEL_SIZE = M_BOX_KIT
};

/* [-0, +1, m] Pushes the module table { new, pass, marshal, exo, lazy,
 * ocapFields, contextMarshal }: the codec's maker, and the C parts of the
 * runtime modules every vat loads at boot (so that a vat keeps no Lua
 * prototype of theirs). */
int luaopen_ocap_smallcaps(lua_State *L);

/* [-0, +1, e] Pushes a codec over the model at index model (whose codec
 * part is filled); the first codec made in L gives L its model for
 * ocap_sc_push_model. */
void ocap_sc_push_codec(lua_State *L, int model);

/*
 * pass(require, next) -> module  [-2, +1, e]
 * Makes the ocap.pass module (lpass.c) with the require it loads its
 * lazy parts with and the next its hardened tables' __pairs answers.
 */
int ocap_pass_new(lua_State *L);

/*
 * marshal(require, codec) -> module  [-2, +1, e]
 * Makes the ocap.marshal module (lmarshal.c) over ocap.pass's codec, with
 * the require it loads the reference codec with.
 */
int ocap_marshal_new(lua_State *L);

/*
 * exo(registerRemotable, pairs, format) -> module  [-3, +1, e]
 * Makes the ocap.exo module (lexo.c) with the functions it registers
 * exos, reads method tables and quotes names with.
 */
int ocap_exo_new(lua_State *L);

/*
 * [-0, +0, e] Adds to the table on top the C parts of ocap.api and
 * ocap.vatboot (lruntime.c):
 *   lazy(require, module, name, context) -> f, where f(...) is
 *     require(module)[name](context, ...);
 *   ocapFields(pass, require, pcall) -> the metatable of an ocap table,
 *     whose guard and box fields load on first touch;
 *   contextMarshal(marshal, current?) -> marshal plus serialize and
 *     unserialize through current()'s marshaller when it has one.
 */
void ocap_runtime_funcs(lua_State *L);

/* [-0, +1] Pushes the model of the first codec made in L (in a vat, its
 * runtime's) and returns 1, or pushes nil and returns 0 when L has none. */
int ocap_sc_push_model(lua_State *L);

/*
 * [-0, +v, e] Decodes a body of capdata that has no slots, the blen bytes
 * at body, with the codec model at index model (ocap_sc_push_model), and
 * pushes what decode, or with call set decodeCall, would answer after its
 * true: the value (v = 1), or the method and the arguments (v = 1 + n).
 * Returns v, or -1 (pushing nothing) for a body those functions leave.
 * The kernel decodes the common deliveries with it without making the
 * body a Lua string (core/ldeliver.c). Decoding a body without slots
 * calls no function but the model's makeError: it raises only when it
 * exhausts the state's memory or meter.
 */
int ocap_sc_push_decoded(lua_State *L, int model, const char *body, size_t blen, int call);

/* [-0, +v, e] ocap_sc_push_decoded for the bodies it reads without the
 * model (a call of plain strings, small integers and booleans, or a value
 * that is a small integer): pushes the same values, charges the same (to
 * v, the vat that owns L) and returns v; -1, pushing nothing, for any
 * other body. */
int ocap_sc_push_decoded_flat(ocap_vat_t *vat, lua_State *L, const char *body, size_t blen,
                              int call);

/*
 * Flat bodies: what the codec writes without a Lua value of its own (a
 * table or a slot), at most OCAP_SC_FLAT_MAX bytes, which the syscalls
 * send straight from the stack (lsyscall.c), making no body string.
 */
#define OCAP_SC_FLAT_MAX 512

/* [-0, +0, e] Writes into buf (OCAP_SC_FLAT_MAX bytes) the body
 * encodeParts answers for the value at idx when it is a number, a
 * boolean, nil or a string of at most 80 bytes, charging v (the vat that
 * owns L) what encodeParts would, and returns its length; else returns 0, doing nothing. */
size_t ocap_sc_encode_flat_value(ocap_vat_t *v, lua_State *L, int idx, char *buf);

/* [-0, +0, e] Writes into buf (OCAP_SC_FLAT_MAX bytes) the body
 * encodeCallArgs answers for the method at index m and the arguments
 * above it to the top, when the method is a plain string, every argument
 * a safe integer, a boolean or a plain string, and the body fits,
 * charging v (the vat that owns L) what encodeCallArgs would, and returns its length; else
 * returns 0, doing nothing. */
size_t ocap_sc_encode_flat_call(ocap_vat_t *v, lua_State *L, int m, char *buf);

#endif
