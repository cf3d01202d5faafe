/*
 * test_match.c -- unit tests for core/lmatch.c: a differential test that
 * runs the metered matcher and the host's string library side by side over
 * a corpus of hand-written and generated patterns and subjects, comparing
 * every result and error message; and tests that the meter sees the work
 * of patterns that backtrack.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "lmatch.h"

#include "check.h"

/*
 * The steps charged so far, and the limit past which the test meter raises
 * (none when 0); each test state points to its tally from its extra space.
 */
struct tally {
  long long steps;
  long long limit;
};

/* [-0, +0] The test state's tally, kept in its extra space. */
static struct tally *tally_of(lua_State *L) {
  return *(struct tally **)lua_getextraspace(L);
}

/* [-0, +0, e] The test meter: adds up the steps and raises past the limit. */
static void test_charge(lua_State *L, long long steps) {
  struct tally *t = tally_of(L);
  t->steps += steps;
  if (t->limit > 0 && t->steps > t->limit)
    luaL_error(L, "meter: out of steps");
}

static const ocap_match_meter_t test_meter = {test_charge};

/* [-0, +1] Pushes a table of the metered pattern functions. */
static void push_matcher(lua_State *L) {
  lua_newtable(L);
  lua_pushlightuserdata(L, (void *)&test_meter);
  luaL_setfuncs(L, ocap_match_funcs, 1);
}

/* [-0, +0] A new state with the standard libraries and the matcher as global `M`. */
static lua_State *new_state(struct tally *t) {
  lua_State *L = luaL_newstate();
  if (L == NULL)
    return NULL;
  *(struct tally **)lua_getextraspace(L) = t;
  luaL_openlibs(L);
  push_matcher(L);
  lua_setglobal(L, "M");
  return L;
}

/* [-0, +0] Runs code; returns 1 when it ran without error, printing the error otherwise. */
static int run(lua_State *L, const char *code) {
  if (luaL_dostring(L, code) != LUA_OK) {
    fprintf(stderr, "test_match: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    return 0;
  }
  return 1;
}

/*
 * The differential test, in Lua: `same(name, ...)` calls M[name] and
 * string[name] with the same arguments (gmatch's iterations collected into a
 * list) and compares everything they return or raise.
 */
static const char differential[] =
    "local pack, unpack, fmt = table.pack, table.unpack, string.format\n"
    "local function show(v)\n"
    "  if type(v) == 'string' then return fmt('%q', v) end\n"
    "  return tostring(v)\n"
    "end\n"
    "local function showAll(t)\n"
    "  local out = {}\n"
    "  for i = 1, t.n do out[i] = show(t[i]) end\n"
    "  return '(' .. table.concat(out, ', ') .. ')'\n"
    "end\n"
    "local function call(lib, name, ...)\n"
    "  if name ~= 'gmatch' then return pack(pcall(lib[name], ...)) end\n"
    "  local ok, it = pcall(lib.gmatch, ...)\n"
    "  if not ok then return pack(false, it) end\n"
    "  local all, n = {}, 0\n"
    "  while true do\n"
    "    local r = pack(pcall(it))\n"
    "    if not r[1] then return pack(false, r[2]) end\n"
    "    if r[2] == nil then break end\n"
    "    n = n + 1\n"
    "    all[n] = showAll(pack(unpack(r, 2, r.n)))\n"
    "    if n > 1000 then break end\n"
    "  end\n"
    "  return pack(true, table.concat(all, ' '))\n"
    "end\n"
    "local count, failures = 0, {}\n"
    "local function same(name, ...)\n"
    "  count = count + 1\n"
    "  local a, b = call(M, name, ...), call(string, name, ...)\n"
    "  local sa, sb = showAll(a):gsub(\"to '[%w.?]+'\", 'to ?'), showAll(b):gsub(\"to '[%w.?]+'\", "
    "'to ?')\n"
    "  if sa ~= sb then\n"
    "    failures[#failures + 1] = fmt('%s%s: ours %s, Lua %s', name, showAll(pack(...)), sa, sb)\n"
    "  end\n"
    "end\n"
    "local patterns = {\n"
    "  '', 'a', 'b', 'ab', '.', '..', 'a*', 'a+', 'a-', 'a?', '.*', '.-', '.+', '.?',\n"
    "  '^a', '^', '$', 'a$', '^$', '^a*$', 'a$b', '$a', '^^', 'x^', '%a+', '%A+', '%d+', '%D',\n"
    "  '%s*', '%S+', '%w+', '%W', '%l+', '%u+', '%p', '%P+', '%c', '%x+', '%g+', '%G',\n"
    "  '%%', '%.', '%z', '%q', '%]', '[abc]', '[^abc]', '[a-c]+', '[^a-c]*', '[%a_][%w_]*',\n"
    "  '[]]', '[^]]', '[]a]+', '[a-]', '[-a]', '[a%-z]', '[%]]', '[%d%s]+', '[^%s]+', '[.]',\n"
    "  '[a-c-e]', '[--/]', '(a)', '(a*)', '()a', 'a()', '(a)(b)', '((a)(b))', '(a*(.)%w(%s*))',\n"
    "  '()', '()()', '(()a())', '(a)%1', '(a*)%1', '(%w+)%s*=%s*(%w+)', '(.)%1', '(.-)%1$',\n"
    "  '%b()', '%b{}', '%bab', '%baa', '%b((', '%f[%w]%w+', '%f[%W]', '%f[%a]', '%f[^%z]',\n"
    "  '%f[%z]', '%f[a]a', 'a%f[^a]', '%f[%s]', '[%w_]+%s*%(', 'a.-b', 'a.*b', 'a-b', '.-$',\n"
    "  '^(.-)%s*$', '^%s*(.-)%s*$', 'x*y*z*', '(x?)(y?)', '%d*%.?%d+', '^[+-]?%d+$',\n"
    "  '%[(.-)%]', '%((.-)%)', '\\0', '[\\0]', '%z', 'a\\0b', '(\\0+)',\n"
    "  -- errors\n"
    "  '%', 'a%', '[', '[a', '[^', '[]', '[^]', '[%', '(', 'a(', ')', 'a)', '(()', '%1', '(a)%2',\n"
    "  '(a%1)', '%0', '%b', '%ba', '%f', '%fa', '%f[', '(a', 'a)b', '[a-', '[%a',\n"
    "}\n"
    "local subjects = {\n"
    "  '', 'a', 'b', 'aaa', 'ab', 'ba', 'aab', 'abab', 'hello world', '  trim me  ',\n"
    "  'key = value', 'x=1, y=22', 'f(a(b)c)d', '{a{b}}', 'ab]cd', 'a-b-c', '[x]', '3.14',\n"
    "  '-42', 'A1_b2', 'tab\\tnew\\nline', 'caf\\195\\169', 'a\\0b\\0', '\\0\\0', 'aaaa aaaa',\n"
    "  'xyzxyz', '%s%d', 'a$b', '^a', '..',\n"
    "}\n"
    "for _, p in ipairs(patterns) do\n"
    "  for _, s in ipairs(subjects) do\n"
    "    same('find', s, p)\n"
    "    same('match', s, p)\n"
    "    same('gmatch', s, p)\n"
    "    same('gsub', s, p, '<%0>')\n"
    "  end\n"
    "end\n"
    "-- init, plain, replacement kinds and counts over a smaller set.\n"
    "local inits = { -100, -3, -1, 0, 1, 2, 3, 4, 5, 12, 100 }\n"
    "for _, p in ipairs({ 'a', 'b*', '^a', '.-', '()', '(a)', '', 'a.', '%a+', '$' }) do\n"
    "  for _, s in ipairs({ '', 'a', 'aba', 'banana', 'a.b.' }) do\n"
    "    for _, i in ipairs(inits) do\n"
    "      same('find', s, p, i)\n"
    "      same('find', s, p, i, true)\n"
    "      same('match', s, p, i)\n"
    "      same('gmatch', s, p, i)\n"
    "    end\n"
    "    for _, n in ipairs({ -1, 0, 1, 2, 100 }) do\n"
    "      same('gsub', s, p, '[%0]', n)\n"
    "    end\n"
    "    same('gsub', s, p, '%1%1')\n"
    "    same('gsub', s, p, '%%')\n"
    "    same('gsub', s, p, 'x%')\n"
    "    same('gsub', s, p, '%x')\n"
    "    same('gsub', s, p, '%2')\n"
    "    same('gsub', s, p, 7)\n"
    "    same('gsub', s, p, { a = 'A', b = false, ab = 1, [''] = 'E', [1] = 'one' })\n"
    "    same('gsub', s, p, { a = {} })\n"
    "    same('gsub', s, p, function(x) return x and #x > 0 and x:upper() or nil end)\n"
    "    same('gsub', s, p, function(...) return select('#', ...) end)\n"
    "    same('gsub', s, p, function() return true end)\n"
    "    same('gsub', s, p, false)\n"
    "  end\n"
    "end\n"
    "-- Generated patterns: random items over a small alphabet.\n"
    "local items = { 'a', 'b', '.', '%a', '%s', '[ab]', '[^a]', '%d', ' ', 'x' }\n"
    "local quants = { '', '', '*', '+', '-', '?' }\n"
    "local rnd = 12345\n"
    "local function random(n)\n"
    "  rnd = (rnd * 1103515245 + 12345) % 2147483648\n"
    "  return rnd % n + 1\n"
    "end\n"
    "local gsubjects = { 'ab ab', 'aaab', 'a1 b2', 'bbb a', '  x  ', 'abxab', '' }\n"
    "for _ = 1, 400 do\n"
    "  local parts, open = {}, 0\n"
    "  if random(4) == 1 then parts[1] = '^' end\n"
    "  for _ = 1, random(5) do\n"
    "    local r = random(10)\n"
    "    if r == 1 then parts[#parts + 1] = '('; open = open + 1\n"
    "    elseif r == 2 and open > 0 then parts[#parts + 1] = ')'; open = open - 1\n"
    "    elseif r == 3 then parts[#parts + 1] = '()'\n"
    "    else parts[#parts + 1] = items[random(#items)] .. quants[random(#quants)] end\n"
    "  end\n"
    "  for _ = 1, open do parts[#parts + 1] = ')' end\n"
    "  if random(4) == 1 then parts[#parts + 1] = '$' end\n"
    "  local p = table.concat(parts)\n"
    "  for _, s in ipairs(gsubjects) do\n"
    "    same('find', s, p)\n"
    "    same('match', s, p)\n"
    "    same('gmatch', s, p)\n"
    "    same('gsub', s, p, '<%0>')\n"
    "  end\n"
    "end\n"
    "-- Argument errors and deep nesting.\n"
    "same('find', 'a', nil)\n"
    "same('find', nil, 'a')\n"
    "same('gsub', 'a', 'a')\n"
    "same('gsub', 'a', 'a', nil)\n"
    "same('match', string.rep('a', 300), string.rep('a?', 300))\n"
    "same('match', string.rep('a', 300), string.rep('(', 40) .. 'a' .. string.rep(')', 40))\n"
    "same('find', 'x', string.rep('()', 33))\n"
    "same('find', 'x', string.rep('()', 32))\n"
    "same('match', 12345, 2)\n"
    "same('gsub', 12345, 3, 9)\n"
    "for _, f in ipairs(failures) do io.stderr:write(f, '\\n') end\n"
    "io.stderr:write(('test_match: %d comparisons, %d differences\\n'):format(count, #failures))\n"
    "assert(#failures == 0, 'the matcher differs from string.*')\n"
    "assert(count > 10000)\n";

static int test_differential(void) {
  int fails = 0;
  struct tally t = {0, 0};
  lua_State *L = new_state(&t);
  CHECK(L != NULL);
  if (L == NULL)
    return fails;
  CHECK(run(L, differential));
  /* The corpus did real work, and the meter saw it. */
  CHECK(t.steps > 100000);
  lua_close(L);
  return fails;
}

/*
 * Patterns that backtrack exponentially or quadratically are charged for
 * every step: with a limit, they stop with the meter's error; without one,
 * the steps they are charged grow with the work.
 */
static int test_metered(void) {
  int fails = 0;
  struct tally t = {0, 1000000};
  lua_State *L = new_state(&t);
  CHECK(L != NULL);
  if (L == NULL)
    return fails;
  /* 2^25 paths: stopped after a million steps. */
  CHECK(run(L, "local ok, e = pcall(M.match, string.rep('a', 25) .. 'b',\n"
               "  string.rep('a?', 25) .. string.rep('a', 25) .. '$')\n"
               "assert(not ok and e:find('meter: out of steps', 1, true), e)"));
  CHECK(t.steps > 1000000 && t.steps < 1000000 + 2 * OCAP_MATCH_BATCH);
  /* Quadratic: 'a*b' over n a's costs about n^2/2 steps. */
  t.steps = 0;
  t.limit = 0;
  CHECK(run(L, "assert(M.find(string.rep('a', 2000), 'a*b') == nil)"));
  CHECK(t.steps > 2000 * 2000 / 2);
  /* Plain find is charged by the bytes it passes over. */
  t.steps = 0;
  CHECK(run(L, "assert(M.find(string.rep('a', 160000), 'b', 1, true) == nil)"));
  CHECK(t.steps >= 160000 / OCAP_MATCH_BYTES_PER_STEP);
  t.steps = 0;
  CHECK(run(L, "assert(M.find(string.rep('a', 160000), 'aab') == nil)"));
  CHECK(t.steps >= 160000 / OCAP_MATCH_BYTES_PER_STEP);
  /* gsub is charged for what it copies. */
  t.steps = 0;
  CHECK(run(L, "assert(#M.gsub(string.rep('a', 1000), 'a', string.rep('b', 1600)) == 1600000)"));
  CHECK(t.steps >= 1600000 / OCAP_MATCH_BYTES_PER_STEP);
  /* A meter that raises mid-gsub leaves the state usable. */
  t.steps = 0;
  t.limit = 5000;
  CHECK(run(L, "local ok, e = pcall(M.gsub, string.rep('ab', 10000), '(a)(b)', '%2%1')\n"
               "assert(not ok and e:find('out of steps', 1, true))"));
  t.limit = 0;
  CHECK(run(L, "assert(M.gsub('ab', '(a)(b)', '%2%1') == 'ba')"));
  lua_close(L);
  return fails;
}

int main(void) {
  int fails = 0;
  fails += test_differential();
  fails += test_metered();
  if (fails) {
    fprintf(stderr, "test_match: %d failure(s)\n", fails);
    return 1;
  }
  printf("test_match: ok\n");
  return 0;
}
