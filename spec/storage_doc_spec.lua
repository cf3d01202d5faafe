-- docs/storage.md, section 1, shows a command and the keys and values the
-- kernel it makes holds. docs_spec runs the pages' complete programs; this
-- runs that command as written (its `build/lib` being this build's) and
-- checks the listing against what it prints, line by line. The page
-- shortens long values with `...`: there, the text on each side must match.
local support = require 'support'

local DOC = support.SRC .. '/docs/storage.md'

-- The page's shell command (its ```sh block holding `lua5.4 -e`) and the
-- listing that follows it (the next fenced block).
local function commandAndListing()
  local text = support.slurp(DOC)
  local command, rest = text:match('```sh\n(LUA_PATH=[^\n]*lua5%.4 %-e ".-"\n)```\n(.*)$')
  assert(command, DOC .. ': no ```sh block running lua5.4 -e')
  local listing = rest:match('```\n(.-)```')
  assert(listing, DOC .. ': no listing after the command')
  return command, listing
end

-- Whether got matches shown, where each `...` in shown stands for any text.
local function matchesShown(shown, got)
  local pattern = '^' .. shown:gsub('[%^%$%(%)%%%.%[%]%*%+%-%?]', '%%%0'):gsub('%%%.%%%.%%%.', '.-') .. '$'
  return got:find(pattern) ~= nil
end

describe('docs/storage.md: looking at a database', function()
  it('lists what its command prints, key by key', function()
    local command, listing = commandAndListing()
    local lib = support.BIN:match('^(.*)/[^/]*$') .. '/lib'
    command = command:gsub("LUA_CPATH='build/lib/", "LUA_CPATH='" .. lib .. '/', 1)
    local p = assert(io.popen(('cd %s && %s'):format(support.q(support.SRC_ABS), command)))
    local out = p:read('a')
    assert.is_true(p:close(), 'the command failed')

    local got = {}
    for line in out:gmatch('([^\n]*)\n') do got[#got + 1] = line end
    local shown = {}
    for line in listing:gmatch('([^\n]*)\n') do shown[#shown + 1] = line end
    assert.is_true(#shown > 30, 'the listing is too short to be the one meant')

    for i = 1, math.max(#got, #shown) do
      local key, value = (got[i] or ''):match('^(.-)\t(.*)$')
      local skey, svalue = (shown[i] or ''):match('^(%S+)%s+(.*)$')
      assert.is_truthy(key, ('line %d: the command printed %q'):format(i, tostring(got[i])))
      assert.is_truthy(skey, ('line %d: the page shows nothing for %s'):format(i, tostring(key)))
      assert.is_true(matchesShown(skey, key),
        ('line %d: the page shows key %s, the kernel has %s'):format(i, skey, key))
      assert.is_true(matchesShown(svalue, value),
        ('line %d (%s): the page shows %s, the kernel has %s'):format(i, key, svalue, value))
    end
  end)
end)
