/*
 * lsys.h -- ocap.sys, the command line's file-system calls (core/lsys.c).
 */
#ifndef OCAP_LSYS_H
#define OCAP_LSYS_H

#include <lua.h>

/* [-0, +1] require 'ocap.sys' */
int luaopen_ocap_sys(lua_State *L);

#endif
