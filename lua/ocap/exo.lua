--- Exos: hardened remotable objects whose methods take the receiver first.
--
-- The module is made in C (core/lexo.c), since every vat loads it at boot
-- and C functions cost a vat next to nothing where Lua ones cost it their
-- prototypes. Its fields:
--
-- * `makeDefaultExo(name, methods)`: a remotable object whose interface is
--   `"Alleged: <name>"` (its `tostring`), with a copy of `methods` (read
--   with `pairs`; string keys, function values, each called as
--   `method(self, ...)`). Assigning any field raises
--   `cannot modify exo "<name>" (field <key>)`; `getmetatable` gives
--   `'exo'`. A name that is not a string raises
--   `makeDefaultExo: name must be a string`, methods that are not a table
--   `makeDefaultExo: methods must be a table`, and an entry that is not a
--   string-keyed function `makeDefaultExo "<name>": method <key> is not a
--   function`.
-- * `methods(v)`: the method table of an exo, so liveslots can find a
--   method without going through the object's metatable; nil when v is
--   not one.
-- * `method(v, name)`: the function of method `name` of an exo, nil when
--   v is not one or has no such function (`methods` and the type test in
--   one call, for liveslots' deliveries).
-- * `register(obj, impl)`: records an object made elsewhere (exo
--   classes) as an exo with that method table.

local pass = require 'ocap.pass'

return require('ocap.smallcaps').exo(pass.registerRemotable, pairs, string.format)
