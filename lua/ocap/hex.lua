--- Bytes as lower-case hex digits, and back: the one place the Lua side
--- writes them (designators, the database keys of swiss numbers and
--- bundle hashes, smallcaps byte arrays `"*<hex>"`). It runs in vats too,
--- with the codec that writes byte arrays.

local char, format, gsub, tonumber = string.char, string.format, string.gsub, tonumber

local M = {}

-- Each byte's two digits: gsub with a table costs one lookup a byte,
-- with no Lua call.
local DIGITS = {}
for b = 0, 255 do DIGITS[char(b)] = format('%02x', b) end

local function byteOf(pair) return char(tonumber(pair, 16)) end

--- The hex digits of the bytes of s, two a byte.
---@param s string
---@return string
function M.encode(s)
  return (gsub(s, '.', DIGITS))
end

--- The bytes whose hex digits (either case) are h; pairs that are not
--- hex digits are left as they are, so callers check h first.
---@param h string
---@return string
function M.decode(h)
  return (gsub(h, '%x%x', byteOf))
end

return M
