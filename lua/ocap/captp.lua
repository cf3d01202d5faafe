--- The pieces of OCapN's CapTP that are plain data: the shapes of its
--- operations and descriptors in Syrup, keys and signatures in their
--- gcrypt-style lists, peer locators and ocapn:// URLs, session ids.
--- Sessions themselves (state, tables, the kernel) are ocap.remote's.
local syrup = require 'ocap.syrup'
local pass = require 'ocap.pass'
local crypto = require('ocap.core').crypto

local M = {}

M.VERSION = '1.0'

local sym, rec, bytes = syrup.symbol, syrup.record, syrup.bytes
local kind = syrup.kind
M.sym = sym

--- A list of values, as Syrup sends it (`[...]`).
local function list(...) return pass.array(...) end
M.list = list

--- A record `<label args...>` whose label is the symbol `label`.
function M.op(label, ...) return rec(sym(label), list(...)) end

--- The label of a record, if it is a record with a symbol label.
function M.label(v)
  if kind(v) ~= 'record' or kind(v.label) ~= 'symbol' then return nil end
  return v.label.name
end

--- A descriptor `<desc:... pos>`.
function M.desc(label, pos) return rec(sym(label), list(pos)) end

--- The position of a descriptor with the given label, or nil.
function M.descPos(v, label)
  if M.label(v) ~= label then return nil end
  local pos = v.args[1]
  if math.type(pos) ~= 'integer' or pos < 0 or #v.args ~= 1 then return nil end
  return pos
end

--- The gcrypt-style list of an Ed25519 public key.
function M.pubkeyValue(pk)
  return list(sym('public-key'), list(sym('ecc'), list(sym('curve'), sym('Ed25519')),
    list(sym('flags'), sym('eddsa')), list(sym('q'), bytes(pk))))
end

local function isSym(v, name) return kind(v) == 'symbol' and v.name == name end

--- The 32 bytes of a public key value, or nil and why.
function M.parsePubkey(v)
  local ok = pass.isArray(v) and #v == 2 and isSym(v[1], 'public-key')
  local ecc = ok and v[2]
  ok = ok and pass.isArray(ecc) and #ecc == 4 and isSym(ecc[1], 'ecc')
    and pass.isArray(ecc[2]) and isSym(ecc[2][1], 'curve') and isSym(ecc[2][2], 'Ed25519')
    and pass.isArray(ecc[3]) and isSym(ecc[3][1], 'flags') and isSym(ecc[3][2], 'eddsa')
    and pass.isArray(ecc[4]) and isSym(ecc[4][1], 'q') and kind(ecc[4][2]) == 'bytes'
    and #ecc[4][2].bytes == 32
  if not ok then return nil, 'not an Ed25519 public key' end
  return ecc[4][2].bytes
end

--- The gcrypt-style list of a 64-byte Ed25519 signature.
function M.sigValue(sig)
  return list(sym('sig-val'), list(sym('eddsa'), list(sym('r'), bytes(sig:sub(1, 32))),
    list(sym('s'), bytes(sig:sub(33, 64)))))
end

--- The 64 bytes of a signature value, or nil and why.
function M.parseSig(v)
  local ok = pass.isArray(v) and #v == 2 and isSym(v[1], 'sig-val')
  local e = ok and v[2]
  ok = ok and pass.isArray(e) and #e == 3 and isSym(e[1], 'eddsa')
    and pass.isArray(e[2]) and isSym(e[2][1], 'r') and kind(e[2][2]) == 'bytes'
    and pass.isArray(e[3]) and isSym(e[3][1], 's') and kind(e[3][2]) == 'bytes'
  if not ok then return nil, 'not an Ed25519 signature' end
  local sig = e[2][2].bytes .. e[3][2].bytes
  if #sig ~= 64 then return nil, 'not an Ed25519 signature' end
  return sig
end

--- The record `<ocapn-peer transport designator hints>` of a location
--- { transport, designator, hints }.
function M.peerValue(loc)
  local hints = false
  if loc.hints and next(loc.hints) then hints = loc.hints end
  return rec(sym('ocapn-peer'), list(sym(loc.transport), loc.designator, hints))
end

--- A location from an `<ocapn-peer ...>` record, or nil and why.
function M.parsePeer(v)
  if M.label(v) ~= 'ocapn-peer' or #v.args ~= 3 then return nil, 'not an ocapn-peer record' end
  local transport, designator, hints = v.args[1], v.args[2], v.args[3]
  if kind(transport) ~= 'symbol' or type(designator) ~= 'string' then
    return nil, 'not an ocapn-peer record'
  end
  if hints == false then hints = {} end
  if type(hints) ~= 'table' or getmetatable(hints) ~= nil then return nil, 'bad hints in ocapn-peer' end
  for k, h in pairs(hints) do
    if type(k) ~= 'string' or type(h) ~= 'string' then return nil, 'bad hints in ocapn-peer' end
  end
  return { transport = transport.name, designator = designator, hints = hints }
end

--- A location and swiss number from an `<ocapn-sturdyref peer swiss>`
--- record, or nil and why.
function M.parseSturdyref(v)
  if M.label(v) ~= 'ocapn-sturdyref' or #v.args ~= 2 then return nil, 'not an ocapn-sturdyref record' end
  local loc, err = M.parsePeer(v.args[1])
  if not loc then return nil, err end
  local swiss = v.args[2]
  if kind(swiss) == 'bytes' then swiss = swiss.bytes end
  if type(swiss) ~= 'string' then return nil, 'bad swiss number in ocapn-sturdyref' end
  return loc, swiss
end

--- The bytes a session's location signature covers.
function M.locationBytes(loc)
  return syrup.encode(rec(sym('my-location'), list(M.peerValue(loc))))
end

--- The id of one side of a session: SHA-256 twice over its key's Syrup.
function M.sideId(pk)
  return crypto.sha256(crypto.sha256(syrup.encode(M.pubkeyValue(pk))))
end

local function unescape(s)
  return (s:gsub('%%(%x%x)', function(h) return string.char(tonumber(h, 16)) end))
end

local function escape(s)
  return (s:gsub('[^%w%-%._~]', function(c) return ('%%%02X'):format(c:byte()) end))
end

--- Parses `ocapn://<designator>.<transport>[/s/<swiss>][?k=v&...]`.
--- Returns { transport, designator, hints }, swiss (or nil), or nil and why.
function M.parseURL(url)
  if type(url) ~= 'string' then return nil, 'an ocapn URL must be a string' end
  local netloc, path, query = url:match('^ocapn://([^/?#]+)([^?#]*)%??([^#]*)$')
  if not netloc then return nil, ('not an ocapn URL: %s'):format(url) end
  local designator, transport = netloc:match('^(.+)%.([^.]+)$')
  if not designator then return nil, ('no transport in ocapn URL: %s'):format(url) end
  local swiss
  if path ~= '' then
    swiss = path:match('^/s/([^/]+)$')
    if not swiss then return nil, ('not a sturdyref path in ocapn URL: %s'):format(url) end
    swiss = unescape(swiss)
  end
  local hints = {}
  for pair in query:gmatch('[^&]+') do
    local k, v = pair:match('^([^=]+)=(.*)$')
    if not k then return nil, ('bad query in ocapn URL: %s'):format(url) end
    hints[unescape(k)] = unescape(v)
  end
  return { transport = unescape(transport), designator = unescape(designator), hints = hints }, swiss
end

--- The ocapn:// URL of a location, and of a sturdyref when swiss is given.
function M.formatURL(loc, swiss)
  local keys = {}
  for k in pairs(loc.hints or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  local q = {}
  for _, k in ipairs(keys) do q[#q + 1] = escape(k) .. '=' .. escape(loc.hints[k]) end
  return ('ocapn://%s.%s%s%s'):format(escape(loc.designator), escape(loc.transport),
    swiss and ('/s/' .. escape(swiss)) or '', #q > 0 and ('?' .. table.concat(q, '&')) or '')
end

return M
