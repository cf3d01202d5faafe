-- Docs that run (issue #10, item 14): the complete programs of README.md
-- and docs/*.md run as written, with the real `ocap` binary.
--
-- The convention, in the Markdown: an HTML comment on the line right
-- before a fenced code block says what the block is.
--
--   <!-- runs: NAME -->     a complete host script: written to NAME in a
--                           scratch directory and run there with
--                           `ocap run NAME`; it must exit with status 0.
--   <!-- spec: NAME -->     a busted spec file: written to spec/NAME in the
--                           scratch directory and run there with
--                           `ocap test spec/NAME`; every test must pass.
--   <!-- file: PATH -->     a file a later program or shell transcript of
--                           the same page uses (a vat, say): written to
--                           PATH in the scratch directory.
--   <!-- prints -->         the exact standard output of the program just
--                           before it (a `text` block).
--   <!-- same-as: PATH -->  the block is the repository's file PATH, as is.
--   <!-- shell -->          a shell transcript: the lines starting with `$ `
--                           are run in the scratch directory, with this
--                           build's `ocap` first on PATH, and what they
--                           print must be the other lines.
--
-- Each page gets its own scratch directory, holding a copy of the
-- repository's vats/ and host/ so that programs can name the shipped
-- examples (`vats/examples/bob.lua`) as the docs do. Blocks without a
-- marker are fragments; a Lua block that looks like a complete program
-- (it requires 'ocap' and makes a kernel or returns a vat module) must
-- carry a marker, so new ones cannot slip through unchecked.
local testing = require 'ocap.testing'

local SOURCE = os.getenv('OCAP_SOURCE_DIR') or '.'
local BIN = os.getenv('OCAP_BIN') or 'build/ocap'
if BIN:sub(1, 1) ~= '/' then BIN = SOURCE .. '/' .. BIN end

-- Every page that ships: README.md and all of docs/, found by listing the
-- directory so that a new page is checked without anyone adding it here.
local function listPages()
  local pages = { 'README.md' }
  local p = assert(io.popen(('ls %q'):format(SOURCE .. '/docs')))
  for name in p:lines() do
    if name:match('%.md$') then pages[#pages + 1] = 'docs/' .. name end
  end
  p:close()
  assert(#pages > 10, 'docs/ not found under ' .. SOURCE)
  return pages
end
local PAGES = listPages()

local function readFile(path)
  local f = assert(io.open(path, 'rb'))
  local text = f:read('a')
  f:close()
  return text
end

local function writeFile(path, text)
  local dir = path:match('^(.*)/[^/]*$')
  if dir then assert(os.execute(('mkdir -p %q'):format(dir))) end
  local f = assert(io.open(path, 'wb'))
  f:write(text)
  f:close()
end

--- The fenced blocks of a page: { line, lang, text, marker, arg }.
local function blocks(page)
  local out, pending, current = {}, nil, nil
  local n = 0
  for line in (readFile(SOURCE .. '/' .. page) .. '\n'):gmatch('(.-)\n') do
    n = n + 1
    if current then
      if line:match('^```%s*$') then
        current.text = table.concat(current.lines, '\n') .. '\n'
        out[#out + 1] = current
        current = nil
      else
        current.lines[#current.lines + 1] = line
      end
    else
      local lang = line:match('^```(%S*)%s*$')
      if lang then
        current = { line = n, lang = lang, lines = {}, marker = pending and pending[1], arg = pending and pending[2] }
      end
      local marker, arg = line:match('^<!%-%-%s*([%w-]+):?%s*(.-)%s*%-%->%s*$')
      pending = marker and { marker, arg ~= '' and arg or nil } or nil
    end
  end
  return out
end

local function looksComplete(b)
  return b.lang == 'lua' and b.text:find("require%s*%(?%s*['\"]ocap['\"]")
    and (b.text:find('Kernel%.make') or b.text:find('\nreturn M%s*$'))
    or b.lang == 'lua' and b.text:find("require%s*%(?%s*['\"]ocap%.testing['\"]") and b.text:find('describe%(')
end

-- Runs a program in dir; returns its exit status, stdout and stderr.
local function run(dir, name)
  local cmd = ('cd %q && %q run %q > .stdout 2> .stderr < /dev/null'):format(dir, BIN, name)
  local _, _, code = os.execute(cmd)
  return code, readFile(dir .. '/.stdout'), readFile(dir .. '/.stderr')
end

for _, page in ipairs(PAGES) do
  describe(page, function()
    local list = blocks(page)
    local dir

    setup(function()
      dir = testing.tempDir()
      assert(os.execute(('cp -r %q/vats %q/host %q/'):format(SOURCE, SOURCE, dir)))
    end)

    for i, b in ipairs(list) do
      local where = ('%s:%d'):format(page, b.line)
      if b.marker == 'runs' then
        local expected = list[i + 1] and list[i + 1].marker == 'prints' and list[i + 1].text
        it('runs the program at ' .. where, function()
          -- The page's files up to here, so that a filtered run has them too.
          for j = 1, i - 1 do
            if list[j].marker == 'file' and list[j].arg then writeFile(dir .. '/' .. list[j].arg, list[j].text) end
          end
          local name = b.arg or 'program.lua'
          writeFile(dir .. '/' .. name, b.text)
          local code, out, err = run(dir, name)
          assert.equal(0, code, ('%s exited with %s:\n%s'):format(where, tostring(code), err))
          if expected then assert.equal(expected, out, where .. ' printed something else') end
        end)
      elseif b.marker == 'spec' then
        it('passes the spec at ' .. where, function()
          local name = 'spec/' .. (b.arg or 'doc_spec.lua')
          writeFile(dir .. '/' .. name, b.text)
          local ok = os.execute(('cd %q && %q test %q > .stdout 2>&1 < /dev/null'):format(dir, BIN, name))
          assert.is_true(ok, where .. ' failed:\n' .. readFile(dir .. '/.stdout'))
        end)
      elseif b.marker == 'shell' then
        it('runs the commands at ' .. where, function()
          -- The page's files up to here, which the commands may use.
          for j = 1, i - 1 do
            if list[j].marker == 'file' and list[j].arg then writeFile(dir .. '/' .. list[j].arg, list[j].text) end
          end
          local commands, expected = {}, {}
          for line in b.text:gmatch('(.-)\n') do
            local command = line:match('^%$ (.*)$')
            if command then commands[#commands + 1] = command else expected[#expected + 1] = line .. '\n' end
          end
          local bindir = BIN:match('^(.*)/[^/]*$')
          local ok = os.execute(('cd %q && PATH=%q:"$PATH" && export PATH && (%s) > .stdout 2> .stderr < /dev/null')
            :format(dir, bindir, table.concat(commands, ' && ')))
          assert.is_true(ok, where .. ' failed:\n' .. readFile(dir .. '/.stderr'))
          assert.equal(table.concat(expected), readFile(dir .. '/.stdout'))
        end)
      elseif b.marker == 'file' then
        it('names the file at ' .. where, function()
          assert.is_string(b.arg, where .. ': file needs a path')
        end)
      elseif b.marker == 'same-as' then
        it('shows ' .. tostring(b.arg) .. ' as shipped, at ' .. where, function()
          assert.equal(readFile(SOURCE .. '/' .. b.arg), b.text)
        end)
      elseif b.marker == 'prints' then
        it('has a program before the output at ' .. where, function()
          assert.equal('runs', list[i - 1] and list[i - 1].marker, where .. ' follows no runs block')
        end)
      elseif b.marker ~= nil then
        it('knows the marker at ' .. where, function()
          error(('%s: unknown marker %q'):format(where, b.marker))
        end)
      elseif looksComplete(b) then
        it('marks the complete program at ' .. where, function()
          error(where .. ' looks like a complete program: mark it with <!-- runs: NAME -->, '
            .. '<!-- file: PATH --> or <!-- same-as: PATH --> (see spec/docs_spec.lua)')
        end)
      end
    end
  end)
end

describe('the docs', function()
  it('do not point at API.md or DESIGN.md, which do not ship', function()
    for _, page in ipairs(PAGES) do
      local text = readFile(SOURCE .. '/' .. page)
      assert.is_nil(text:find('API%.md'), page .. ' mentions API.md')
      assert.is_nil(text:find('DESIGN%.md'), page .. ' mentions DESIGN.md')
    end
  end)
end)
