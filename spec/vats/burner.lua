-- A vat that does one expensive thing n times in a delivery, for the meter
-- specs: each kind below is a library function or VM instruction whose work
-- grows with its input. Inputs are built once per (kind, size) and kept, so
-- a delivery's cost is the work itself.
local ocap = require 'ocap'

local M = {}

-- Each kind: setup(size) returns the input; run(input) does the work once.
local kinds = {}

local function plain(size) return ('a'):rep(size) end

kinds.upper = { setup = plain, run = function(s) return s:upper() end }
kinds.lower = { setup = plain, run = function(s) return s:lower() end }
kinds.reverse = { setup = plain, run = function(s) return s:reverse() end }
kinds.sub = { setup = plain, run = function(s) return s:sub(2) end }
-- Indices given as a float and a numeric string, which string.sub accepts too.
kinds.subCoerced = { setup = plain, run = function(s) return s:sub(2.0, '-1') end }
kinds.byteCoerced = { setup = plain, run = function(s) return (s:byte(1.0, '-1')) end }
kinds.byte = { setup = plain, run = function(s) return (s:byte(1, -1)) end }
kinds.format = { setup = plain, run = function(s) return ('%s'):format(s) end }
kinds.formatQ = { setup = plain, run = function(s) return ('%q'):format(s) end }
kinds.concatVM = { setup = plain, run = function(s) return s .. 'x' end }
kinds.concat = {
  setup = function(size)
    local t = {}
    for i = 1, 4 do t[i] = ('c'):rep(size // 4) end
    return t
  end,
  run = function(t) return table.concat(t) end,
}
kinds.utf8len = { setup = plain, run = function(s) return utf8.len(s) end }
kinds.utf8codepoint = { setup = plain, run = function(s) return (utf8.codepoint(s, 1, -1)) end }
kinds.utf8offset = { setup = plain, run = function(s) return utf8.offset(s, #s) end }
kinds.utf8codes = {
  -- Continuation bytes only: one step of the iterator skips them all.
  setup = function(size) return ('\x80'):rep(size) end,
  run = function(s)
    local step = utf8.codes(s)
    return step(s, 0)
  end,
}
kinds.tonumber = { setup = function(size) return (' '):rep(size) end, run = function(s) return tonumber(s) end }
kinds.tonumberBase = {
  setup = function(size) return ('1'):rep(size) end,
  run = function(s) return tonumber(s, 2) end,
}
kinds.rawequal = {
  setup = function(size) return { plain(size), plain(size - 1) .. 'a' } end,
  run = function(t) return rawequal(t[1], t[2]) end,
}
kinds.eqVM = {
  setup = function(size) return { plain(size), plain(size - 1) .. 'a' } end,
  run = function(t) return t[1] == t[2] end,
}
kinds.ltVM = {
  setup = function(size) return { plain(size), plain(size - 1) .. 'b' } end,
  run = function(t) return t[1] < t[2] end,
}
kinds.sort = {
  -- 64 strings of size bytes that differ only in their last byte.
  setup = function(size)
    local prefix, t = plain(size - 1), {}
    for i = 1, 64 do t[i] = prefix .. string.char(64 + (i * 37) % 64) end
    return t
  end,
  run = function(t)
    local copy = table.move(t, 1, #t, 1, {})
    table.sort(copy)
    return copy[1]
  end,
}
kinds.pack = { setup = function(size) return (' '):rep(size) end, run = function(f) return string.pack(f) end }
kinds.unpack = {
  setup = function(size) return (' '):rep(size) end,
  run = function(f) return string.unpack(f, '') end,
}
kinds.packsize = {
  setup = function(size) return (' '):rep(size) end,
  run = function(f) return string.packsize(f) end,
}
-- Patterns. Sizes are subject lengths.
kinds.findPlain = { setup = plain, run = function(s) return s:find('b', 1, true) end }
kinds.findLiteral = {
  -- A literal with a long near-match: quadratic for a naive search.
  setup = function(size) return { plain(size), plain(64) .. 'b' } end,
  run = function(t) return t[1]:find(t[2], 1, true) end,
}
kinds.starB = { setup = plain, run = function(s) return s:find('a*b') end }
kinds.lazyB = { setup = plain, run = function(s) return s:match('.-b') end }
kinds.gmatchStar = {
  setup = plain,
  run = function(s)
    local n = 0
    for _ in s:gmatch('a*b') do n = n + 1 end
    return n
  end,
}
kinds.gsubStar = { setup = plain, run = function(s) return (s:gsub('a*b', '')) end }
kinds.optional = {
  -- a? repeated size times, then a repeated size times: 2^size paths.
  setup = function(size) return { plain(size), ('a?'):rep(size) .. plain(size) } end,
  run = function(t) return t[1]:match(t[2]) end,
}
kinds.dots = { setup = plain, run = function(s) return s:find('.-.-.-.-b') end }
kinds.lazyAs = { setup = plain, run = function(s) return s:gsub('a-a-a-a-a-b', 1, 1) end }
-- error with a large level walks the whole call stack to find no frame:
-- from size frames deep, n times.
kinds.errorLevel = {
  setup = function(size) return size end,
  runN = function(depth, n)
    local function dive(k)
      if k > 0 then return dive(k - 1) + 0 end
      for _ = 1, n do pcall(error, 'x', 1000000) end
      return 0
    end
    return dive(depth)
  end,
}
kinds.gsubCopy = { setup = plain, run = function(s) return (s:gsub('a', 'xy')) end }

function M.buildRootObject()
  local inputs = {}
  return ocap.makeDefaultExo('burner', {
    ping = function(_, i) return i end,
    -- Does kind's work n times on an input of size; returns n.
    work = function(_, kind, n, size)
      local k = assert(kinds[kind], 'no kind named ' .. tostring(kind))
      local key = kind .. ':' .. size
      if inputs.key ~= key then
        inputs.key, inputs.value = nil, nil
        inputs.value = k.setup(size)
        inputs.key = key
      end
      local input = inputs.value
      if k.runN then
        k.runN(input, n)
      else
        for _ = 1, n do k.run(input) end
      end
      return n
    end,
    -- Adds about kib KiB of small live tables, then allocates rounds
    -- small garbage tables: near the memory limit, each of those meets it.
    grow = function(_, kib, rounds)
      local kept = inputs.kept or {}
      inputs.kept = kept
      for _ = 1, kib * 1024 // 88 do kept[#kept + 1] = { 0 } end
      local n = 0
      for i = 1, rounds do
        local t = { i }
        n = n + #t
      end
      return #kept
    end,
  })
end

return M
