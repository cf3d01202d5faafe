/*
 * lsyrup.h -- Syrup over Lua values (`ocap.syrup`); docs/remote.md gives
 * the mapping between Syrup, the OCapN data model and ocap's passables.
 */
#ifndef OCAP_LSYRUP_H
#define OCAP_LSYRUP_H

#include <lua.h>

/* [-0, +1, e] Pushes the module table (encode, decode, the box makers). */
int luaopen_ocap_syrup(lua_State *L);

#endif
