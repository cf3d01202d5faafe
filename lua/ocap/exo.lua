--- Exos: hardened remotable objects whose methods take the receiver first.
local pass = require 'ocap.pass'

local M = {}

local pairs, type, error, setmetatable = pairs, type, error, setmetatable

--- Method tables of exos, so liveslots can find a method without
--- going through the object's metatable.
local methodsOf = setmetatable({}, { __mode = 'k' })

--- Makes a remotable object.
---@param name string the alleged name (its interface is "Alleged: <name>")
---@param methods table<string, function> methods, each called as method(self, ...)
---@return table exo
function M.makeDefaultExo(name, methods)
  if type(name) ~= 'string' then
    error('makeDefaultExo: name must be a string', 2)
  end
  if type(methods) ~= 'table' then
    error('makeDefaultExo: methods must be a table', 2)
  end
  local impl = {}
  for k, f in pairs(methods) do
    if type(k) ~= 'string' or type(f) ~= 'function' then
      error(('makeDefaultExo %q: method %s is not a function'):format(name, tostring(k)), 2)
    end
    impl[k] = f
  end
  local iface = 'Alleged: ' .. name
  local obj = setmetatable({}, {
    __index = impl,
    __newindex = function(_, k)
      error(('cannot modify exo %q (field %s)'):format(name, tostring(k)), 2)
    end,
    __tostring = function() return iface end,
    __metatable = 'exo',
  })
  methodsOf[obj] = impl
  pass.registerRemotable(obj, iface)
  return obj
end

--- The method table of an exo, or nil when v is not one.
function M.methods(v)
  return methodsOf[v]
end

--- Registers an object made elsewhere (exo classes) as an exo.
function M.register(obj, impl)
  methodsOf[obj] = impl
end

return M
