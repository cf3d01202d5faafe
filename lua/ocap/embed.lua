--- The Lua half of the C embedding API (ocap.h): one kernel per Lua
--- state, driven by core/ocap.c. Everything that crosses to C is JSON
--- text, so the C side never touches Lua values.
local ocap = require 'ocap'
local promise = require 'ocap.promise'
local pass = require 'ocap.pass'
local loop = require 'ocap.loop'

local M = {}

local ESCAPES = { ['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }

--- Encodes a plain Lua value as JSON; a reference becomes {"@kref": kref}.
local function encode(kernel, v, out)
  local t = type(v)
  if v == nil then
    out[#out + 1] = 'null'
  elseif t == 'boolean' then
    out[#out + 1] = tostring(v)
  elseif t == 'number' then
    if v ~= v or v == math.huge or v == -math.huge then
      out[#out + 1] = 'null'
    elseif math.type(v) == 'integer' then
      out[#out + 1] = ('%d'):format(v)
    else
      out[#out + 1] = ('%.17g'):format(v)
    end
  elseif t == 'string' then
    out[#out + 1] = '"' .. v:gsub('[%c"\\]', function(c)
      return ESCAPES[c] or ('\\u%04x'):format(c:byte())
    end) .. '"'
  elseif t == 'table' then
    local ok, kref = pcall(kernel.krefOf, kernel, v)
    if ok then
      out[#out + 1] = '{"@kref":"' .. kref .. '"}'
      return
    end
    local n = v.n or #v
    local isArray = n > 0 or next(v) == nil
    if isArray then
      out[#out + 1] = '['
      for i = 1, n do
        if i > 1 then out[#out + 1] = ',' end
        encode(kernel, v[i], out)
      end
      out[#out + 1] = ']'
    else
      local keys = {}
      for k in pairs(v) do
        if type(k) == 'string' then keys[#keys + 1] = k end
      end
      table.sort(keys)
      out[#out + 1] = '{'
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = ',' end
        encode(kernel, k, out)
        out[#out + 1] = ':'
        encode(kernel, v[k], out)
      end
      out[#out + 1] = '}'
    end
  else
    out[#out + 1] = 'null'
  end
end

local function toJSON(kernel, v)
  local out = {}
  encode(kernel, v, out)
  return table.concat(out)
end

--- The message of an error value (an Error record, a string, anything).
local function messageOf(e)
  if type(e) == 'table' and e.message ~= nil then return tostring(e.message) end
  return tostring(e)
end

--- Makes the kernel for one C host. C is the table of C callbacks
--- (log, call, result), json the decoder.
function M.make(C, json, database, resetStorage, baseDir, withLogger)
  local self = {}
  local options = { database = database, resetStorage = resetStorage or nil, baseDir = baseDir }
  local kernel
  if withLogger then
    options.logger = function(entry) C.log(toJSON(kernel, entry)) end
  end
  kernel = ocap.Kernel.make(options)
  self.kernel = kernel

  --- Turns each {"@kref": kref} of a decoded value, in place, into the
  --- presence (or promise) of that kref; raises for an unknown kref.
  local function revive(v)
    if type(v) ~= 'table' then return v end
    local kref = v['@kref']
    if kref ~= nil and next(v, next(v)) == nil then
      if type(kref) ~= 'string' then error('"@kref" must be a string', 0) end
      local ok, p = pcall(kernel.getPresence, kernel, kref)
      if not ok then error(messageOf(p):gsub('^[^%s]-:%d+: ', ''), 0) end
      return p
    end
    for k, x in pairs(v) do
      if type(x) == 'table' then v[k] = revive(x) end
    end
    return v
  end

  --- Decodes JSON text, which must be an array when wantArray, and
  --- revives its references; returns the value, or nil and a message.
  local function decodeJSON(text, wantArray)
    local ok, v = pcall(json.decode, text)
    if not ok then return nil, 'invalid JSON: ' .. messageOf(v) end
    if wantArray and (type(v) ~= 'table' or (next(v) ~= nil and #v == 0)) then
      return nil, 'arguments must be a JSON array'
    end
    local rok, r = pcall(revive, v)
    if not rok then return nil, messageOf(r) end
    return r
  end

  --- Capdata text, {"body":"#..","slots":["ko1",..]}: the kernel's own
  --- encoding of a passable (a smallcaps body, krefs for slots), which
  --- keeps what JSON cannot (errors as values, tagged values).
  local function toCapdata(v)
    local cd = kernel.ls.marshal.serialize(v)
    return toJSON(kernel, { body = cd.body, slots = cd.slots })
  end

  --- Decodes capdata text, whose value must be an array when wantArray;
  --- returns the value, or nil and a message.
  local function decodeCapdata(text, wantArray)
    local ok, cd = pcall(json.decode, text)
    if not ok then return nil, 'invalid JSON: ' .. messageOf(cd) end
    if type(cd) ~= 'table' or type(cd.body) ~= 'string' or type(cd.slots) ~= 'table' then
      return nil, 'capdata must be {"body": string, "slots": [kref, ...]}'
    end
    for _, slot in ipairs(cd.slots) do
      if type(slot) ~= 'string' then return nil, 'capdata slots must be krefs' end
      local kok, err = pcall(kernel.getPresence, kernel, slot)
      if not kok then return nil, (messageOf(err):gsub('^[^%s]-:%d+: ', '')) end
    end
    local uok, v = pcall(kernel.ls.marshal.unserialize, { body = cd.body, slots = cd.slots })
    if not uok then return nil, 'invalid capdata: ' .. messageOf(v) end
    if wantArray and pass.passStyleOf(v) ~= 'copyArray' then return nil, 'arguments must be an array' end
    return v
  end

  local function decode(text, asCapdata, wantArray)
    if asCapdata then return decodeCapdata(text, wantArray) end
    return decodeJSON(text, wantArray)
  end

  --- Runs cranks and turns in one bounded batch (ocap.loop); returns
  --- whether there is more to do at once, and whether the kernel's own
  --- loop (vat timers, IO) is alive, with that loop's descriptor and the
  --- milliseconds until its next timer, so the host loop can wake the
  --- kernel when they are due.
  function self.pump()
    if kernel.stopped then return false, false end
    if loop.pump(kernel, loop.BATCH) then return true, true end
    local ms, fd = loop.nextWakeup(kernel)
    if ms == nil then return false, false end
    if ms == 0 then return true, true end
    return false, true, fd, ms
  end

  function self.run() kernel:run() end

  function self.stop() if not kernel.stopped then kernel:stop() end end

  --- Registers a C service; its methods get their arguments as JSON, or
  --- as capdata when asCapdata.
  function self.register(name, methods, id, asCapdata)
    local impl = {}
    for _, m in ipairs(methods) do
      impl[m] = function(_, ...)
        local kit = promise.makePromiseKit()
        local args = asCapdata and toCapdata(pass.array(...)) or toJSON(kernel, table.pack(...))
        C.call(id, m, args, kit)
        return kit.promise
      end
    end
    local object = ocap.makeDefaultExo(name, impl)
    return kernel:registerKernelServiceObject(name, object).kref
  end

  --- Settles a service call's promise kit with a result (JSON, or
  --- capdata when asCapdata) or a message.
  function self.settle(kit, ok, text, asCapdata)
    if not ok then
      kit.reject(pass.makeError(text))
      return true
    end
    local v, err = decode(text, asCapdata)
    if err then
      kit.reject(pass.makeError('service result: ' .. err))
      return false, err
    end
    kit.resolve(v)
    return true
  end

  local function report(p, rec, asCapdata)
    promise.onSettle(p, function(ok, v)
      if ok then
        local done, text
        if asCapdata then
          done, text = pcall(toCapdata, v)
        else
          done, text = pcall(toJSON, kernel, v)
        end
        if done then C.result(rec, true, text) else C.result(rec, false, messageOf(text)) end
      else
        C.result(rec, false, messageOf(v))
      end
    end)
  end

  function self.queue(target, method, argsText, rec, asCapdata)
    local args, err = decode(argsText, asCapdata, true)
    if err then return false, err end
    if not target:match('^k[op]%d+$') then return false, ('no such kref %q'):format(target) end
    local ok, p = pcall(kernel.queueMessage, kernel, target, method, args)
    if not ok then return false, messageOf(p) end
    report(p, rec, asCapdata)
    return true
  end

  function self.launch(path, rec)
    local chunk, err = loadfile(path, 't')
    if not chunk then return false, err end
    local ok, config = pcall(chunk)
    if not ok then return false, messageOf(config) end
    if type(config) ~= 'table' then return false, path .. ': the config file must return a table' end
    local p
    ok, p = pcall(kernel.launchSubcluster, kernel, config)
    if not ok then return false, messageOf(p) end
    report(p, rec)
    return true
  end

  function self.script(path)
    local chunk, err = loadfile(path, 't')
    if not chunk then return false, err end
    local ok, e = pcall(chunk, kernel)
    if not ok then return false, messageOf(e) end
    return true
  end

  return self
end

return M
