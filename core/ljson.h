/*
 * ljson.h -- the JSON decoder given to vats as their `cjson` module.
 */
#ifndef OCAP_LJSON_H
#define OCAP_LJSON_H

#include <lua.h>

/* [-0, +1] Pushes a table { decode = f, null = lightuserdata, new = f }. */
int ocap_open_json(lua_State *L);

#endif
