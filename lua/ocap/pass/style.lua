--- Classifying tables for ocap.pass (classify, passStyleOf, isArray),
--- loaded on first use. ocap.pass hands it the private tables and marks
--- that tell pass styles apart.
local M = {}

local type, next, rawget, getmetatable, tostring, error = type, next, rawget, getmetatable, tostring, error
local math_type = math.type
local format = string.format

-- |n| <= 2^53 is a JavaScript safe-enough number; beyond it an integer is a
-- bigint.
local MAX_SAFE = 9007199254740992

--- The classifying functions over ocap.pass's private state.
---@param priv table { remotables, shadows, boxes, loadBoxes, isPromise, arrayMT, errorTag, null }
---@return table
function M.make(priv)
  local remotables, shadows, boxes, loadBoxes = priv.remotables, priv.shadows, priv.boxes, priv.loadBoxes
  local isPromise, ARRAY_MT, ERROR_TAG, NULL = priv.isPromise, priv.arrayMT, priv.errorTag, priv.null
  local kit = {}

  local function describeKey(k)
    local tk = math_type(k) or type(k)
    if tk == 'float' then return format('float key (%s)', tostring(k)) end
    if tk == 'string' then return format('string key %q', k) end
    return tk .. ' key'
  end

  local function firstHole(t, len)
    for i = 1, len do
      if t[i] == nil then return i end
    end
    return len + 1
  end

  --- Classifies a table or userdata. Returns one of:
  --- `'copyArray', length, contents` (length counts nils when `n` is set);
  --- `'copyRecord', keys, contents` (keys unsorted, nil when there are none);
  --- `'remotable'`, `'promise'`, `'error'`, `'null'`;
  --- `'symbol'`, `'byteArray'`, `'bigint'` or `'tagged'` with the box's
  --- contents (see `box`);
  --- or `nil, message` for a non-passable. `contents` is the table to read
  --- (the shadow of a hardened table).
  ---@param t table|userdata
  ---@return string|nil style
  ---@return any
  ---@return table|nil contents
  function kit.classify(t)
    if remotables[t] then return 'remotable' end
    if isPromise(t) then return 'promise' end
    if type(t) ~= 'table' then return nil, 'cannot pass ' .. type(t) end
    local mt = getmetatable(t)
    local marked = false
    if mt ~= nil then
      if mt == ARRAY_MT then
        marked = true
      elseif mt == ERROR_TAG then
        return 'error'
      elseif t == NULL then
        return 'null'
      else
        local shadow = shadows[t]
        if shadow == nil then
          local box = boxes[t]
          if box then return box.style, box end
          return loadBoxes().foreign(t)
        end
        t = shadow
        marked = getmetatable(t) == ARRAY_MT
      end
    end
    -- Fast path: keys met in the order 1, 2, ... (a table built as a
    -- sequence keeps them in its array part, which `next` visits first).
    local seq = 0
    for k in next, t do
      if k == seq + 1 then
        seq = k
      else
        seq = -1
        break
      end
    end
    if seq > 0 then return 'copyArray', seq, t end
    if seq == 0 then
      if marked then return 'copyArray', 0, t end
      return 'copyRecord', nil, t
    end
    local count, maxk, keys, nk = 0, 0, nil, 0
    for k in next, t do
      if math_type(k) == 'integer' then
        if k < 1 then
          return nil, format('cannot pass table with integer key %d (array indexes start at 1)', k)
        end
        count = count + 1
        if k > maxk then maxk = k end
      elseif type(k) == 'string' then
        nk = nk + 1
        if nk == 1 then keys = { k } else keys[nk] = k end
      else
        return nil, 'cannot pass table with a ' .. describeKey(k)
      end
    end
    if nk == 0 then
      if count == maxk then
        if count == 0 and not marked then return 'copyRecord', nil, t end
        return 'copyArray', maxk, t
      end
      return nil, format('cannot pass sparse array (index %d is nil; set n as table.pack does)',
        firstHole(t, maxk))
    end
    if count == 0 and not marked then return 'copyRecord', keys, t end
    if nk == 1 and keys[1] == 'n' then
      local n = rawget(t, 'n')
      if math_type(n) ~= 'integer' then
        return nil, 'cannot pass array whose n is not an integer (' .. tostring(n) .. ')'
      end
      if n < maxk then
        return nil, format('cannot pass array with index %d beyond its n (%d)', maxk, n)
      end
      return 'copyArray', n, t
    end
    if marked then
      for i = 1, nk do
        if keys[i] ~= 'n' then return nil, 'cannot pass array with ' .. describeKey(keys[i]) end
      end
    end
    return nil, 'cannot pass table with mixed integer and string keys'
  end
  local classify = kit.classify

  local SIMPLE_STYLES = {
    ['nil'] = 'undefined',
    boolean = 'boolean',
    string = 'string',
  }

  --- The pass style of `v`: `'undefined'`, `'null'`, `'boolean'`, `'number'`,
  --- `'bigint'` (an integer beyond ±2^53, or a `bigint` box), `'string'`,
  --- `'symbol'`, `'byteArray'`, `'copyArray'`, `'copyRecord'`, `'tagged'`,
  --- `'remotable'`, `'promise'` or `'error'`. Raises
  --- `cannot pass ...` for anything else. Does not look inside containers
  --- beyond their keys and does not detect cycles (marshal does).
  ---@param v any
  ---@return string
  function kit.passStyleOf(v)
    local tv = type(v)
    local s = SIMPLE_STYLES[tv]
    if s then return s end
    if tv == 'number' then
      if math_type(v) == 'integer' and (v > MAX_SAFE or v < -MAX_SAFE) then return 'bigint' end
      return 'number'
    end
    if tv == 'table' or tv == 'userdata' then
      local style, msg = classify(v)
      if style then return style end
      error(msg, 0)
    end
    if tv == 'thread' then error('cannot pass thread (coroutine)', 0) end
    error('cannot pass ' .. tv, 0)
  end

  --- True when `v` passes as an array (marked or by its shape).
  ---@param v any
  ---@return boolean
  function kit.isArray(v)
    return type(v) == 'table' and classify(v) == 'copyArray'
  end

  return kit
end

return M
