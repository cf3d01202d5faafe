/*
 * lmatch.c -- Lua patterns with a step meter (see lmatch.h).
 *
 * The matcher is a recursive-descent backtracker over the pattern text, the
 * way the manual describes patterns: a pattern is a sequence of items, an
 * item is a single-character class optionally followed by `*`, `+`, `-` or
 * `?`, or one of `%n`, `%bxy`, `%f[set]`, or a capture. Plain items are
 * matched in a loop; only the items that can backtrack (quantifiers and
 * captures) recurse, so the nesting limit means what it means in Lua.
 *
 * Every attempt to match an item at a subject position is a step, paid to
 * the meter in batches. Backtracking is what makes patterns expensive, and
 * every backtracking path goes through do_match, which pays a step on each
 * item it visits: no path does unpaid work.
 */
#define _GNU_SOURCE /* memmem */

#include "lmatch.h"
#include "vat.h"

#include <ctype.h>
#include <stddef.h>
#include <string.h>

/* Capture lengths that are not lengths. */
#define CAP_OPEN (-1)
#define CAP_POSITION (-2)

/* The characters that make a pattern more than a plain string. */
static const char SPECIALS[] = "^$*+?.([%-";

typedef struct matcher {
  lua_State *L;
  const ocap_match_meter_t *meter;
  const char *src;     /* the subject */
  const char *src_end; /* one past its last byte */
  const char *pat_end; /* one past the pattern's last byte */
  long long unpaid;    /* steps done but not yet charged */
  int depth;           /* nested do_match calls still allowed */
  int ncap;            /* captures opened so far */
  struct {
    const char *start;
    ptrdiff_t len; /* a length, CAP_OPEN or CAP_POSITION */
  } cap[OCAP_MATCH_MAXCAPTURES];
} matcher_t;

/* [-0, +0, e] Charges the steps done so far: to the meter, or without
 * one to the vat the state belongs to (none outside a vat). */
static void settle(matcher_t *m) {
  long long n = m->unpaid;
  m->unpaid = 0;
  if (n <= 0)
    return;
  if (m->meter == NULL)
    ocap_vat_charge(m->L, n);
  else if (m->meter->charge != NULL)
    m->meter->charge(m->L, n);
}

/* [-0, +0, e] Counts n steps, charging them once a batch is full. */
static void pay(matcher_t *m, long long n) {
  m->unpaid += n;
  if (m->unpaid >= OCAP_MATCH_BATCH)
    settle(m);
}

/* The bulk steps for len bytes searched or copied. */
static long long bulk_steps(size_t len) {
  return (long long)(len / OCAP_MATCH_BYTES_PER_STEP);
}

/* [-0, +0] Prepares m for a match of a subject and pattern. */
static void matcher_init(matcher_t *m, lua_State *L, const char *s, size_t ls, const char *p,
                         size_t lp) {
  void *meter = lua_touserdata(L, lua_upvalueindex(1));
  m->L = L;
  m->meter = meter;
  m->src = s;
  m->src_end = s + ls;
  m->pat_end = p + lp;
  m->unpaid = 0;
  m->depth = OCAP_MATCH_MAXDEPTH;
  m->ncap = 0;
}

/* Forgets the captures of a failed attempt before the next one. */
static void matcher_reset(matcher_t *m) {
  m->depth = OCAP_MATCH_MAXDEPTH;
  m->ncap = 0;
}

/* Whether c belongs to the class named by letter cl (`a` in `%a`, ...). */
static int class_has(int cl, int c) {
  int r;
  switch (tolower(cl)) {
  case 'a':
    r = isalpha(c);
    break;
  case 'c':
    r = iscntrl(c);
    break;
  case 'd':
    r = isdigit(c);
    break;
  case 'g':
    r = isgraph(c);
    break;
  case 'l':
    r = islower(c);
    break;
  case 'p':
    r = ispunct(c);
    break;
  case 's':
    r = isspace(c);
    break;
  case 'u':
    r = isupper(c);
    break;
  case 'w':
    r = isalnum(c);
    break;
  case 'x':
    r = isxdigit(c);
    break;
  case 'z':
    /* Deprecated in the manual, still understood by Lua 5.4. */
    r = c == '\0';
    break;
  default:
    /* `%` before any other character stands for that character. */
    return cl == c;
  }
  /* An upper-case class letter is the complement. */
  return isupper(cl) ? !r : r != 0;
}

/*
 * Whether c belongs to the set that opens at p (its `[`) and closes at
 * last (its `]`). A `-` between two characters makes a range; the first
 * character after `[` or `[^` is always literal, so `[]]` holds `]`.
 */
static int set_has(const char *p, const char *last, int c) {
  int negated = 0;
  p++;
  if (*p == '^') {
    negated = 1;
    p++;
  }
  while (p < last) {
    if (*p == '%' && p + 1 < last) {
      if (class_has((unsigned char)p[1], c))
        return !negated;
      p += 2;
    } else if (p[1] == '-' && p + 2 < last) {
      if ((unsigned char)p[0] <= c && c <= (unsigned char)p[2])
        return !negated;
      p += 3;
    } else {
      if ((unsigned char)*p == c)
        return !negated;
      p++;
    }
  }
  return negated;
}

/*
 * [-0, +0, e] The end of the single-character class that starts at p (not
 * at the pattern's end): after `%x`, after a whole `[set]`, or after one
 * character.
 */
static const char *class_end(matcher_t *m, const char *p) {
  if (*p == '%') {
    if (p + 1 >= m->pat_end)
      luaL_error(m->L, "malformed pattern (ends with '%%')");
    return p + 2;
  }
  if (*p != '[')
    return p + 1;
  p++;
  if (p < m->pat_end && *p == '^')
    p++;
  /* The first character of the set is taken even when it is `]`. */
  for (;;) {
    if (p >= m->pat_end)
      luaL_error(m->L, "malformed pattern (missing ']')");
    p += (*p == '%' && p + 1 < m->pat_end) ? 2 : 1;
    if (p < m->pat_end && *p == ']')
      return p + 1;
  }
}

/* Whether the class from p to end (as class_end found it) holds c. */
static int class_matches(const char *p, const char *end, int c) {
  switch (*p) {
  case '.':
    return 1;
  case '%':
    return class_has((unsigned char)p[1], c);
  case '[':
    return set_has(p, end - 1, c);
  default:
    return (unsigned char)*p == c;
  }
}

/* Whether the class at p..end matches the subject byte at s. */
static int single(const matcher_t *m, const char *s, const char *p, const char *end) {
  return s < m->src_end && class_matches(p, end, (unsigned char)*s);
}

static const char *do_match(matcher_t *m, const char *s, const char *p);

/*
 * [-0, +0, e] Matches as many repetitions of the class p..end as possible
 * from s, then the rest of the pattern, giving back one repetition at a
 * time until the rest matches.
 */
static const char *match_greedy(matcher_t *m, const char *s, const char *p, const char *end) {
  ptrdiff_t n = 0;
  while (single(m, s + n, p, end)) {
    n++;
    pay(m, 1);
  }
  for (; n >= 0; n--) {
    const char *r = do_match(m, s + n, end + 1);
    if (r != NULL)
      return r;
  }
  return NULL;
}

/*
 * [-0, +0, e] Matches the rest of the pattern after as few repetitions of
 * the class p..end as possible, adding one at a time.
 */
static const char *match_lazy(matcher_t *m, const char *s, const char *p, const char *end) {
  for (;;) {
    const char *r = do_match(m, s, end + 1);
    if (r != NULL)
      return r;
    if (!single(m, s, p, end))
      return NULL;
    s++;
  }
}

/* [-0, +0, e] Opens a capture at s (a position capture when what says so). */
static const char *open_capture(matcher_t *m, const char *s, const char *p, ptrdiff_t what) {
  const char *r;
  if (m->ncap >= OCAP_MATCH_MAXCAPTURES)
    luaL_error(m->L, "too many captures");
  m->cap[m->ncap].start = s;
  m->cap[m->ncap].len = what;
  m->ncap++;
  r = do_match(m, s, p);
  if (r == NULL)
    m->ncap--;
  return r;
}

/* [-0, +0, e] Closes the innermost open capture at s. */
static const char *close_capture(matcher_t *m, const char *s, const char *p) {
  int k = m->ncap - 1;
  const char *r;
  while (k >= 0 && m->cap[k].len != CAP_OPEN)
    k--;
  if (k < 0)
    luaL_error(m->L, "invalid pattern capture");
  m->cap[k].len = s - m->cap[k].start;
  r = do_match(m, s, p);
  if (r == NULL)
    m->cap[k].len = CAP_OPEN;
  return r;
}

/*
 * [-0, +0, e] %bxy at s, with p at x: the end of a balanced run from x to
 * the matching y, or NULL. A y is checked before an x, so %bxx pairs
 * neighbouring x's.
 */
static const char *match_balance(matcher_t *m, const char *s, const char *p) {
  int open, close, level = 1;
  if (p + 1 >= m->pat_end)
    luaL_error(m->L, "malformed pattern (missing arguments to '%%b')");
  if (s >= m->src_end || *s != *p)
    return NULL;
  open = (unsigned char)p[0];
  close = (unsigned char)p[1];
  while (++s < m->src_end) {
    int c = (unsigned char)*s;
    pay(m, 1);
    if (c == close) {
      if (--level == 0)
        return s + 1;
    } else if (c == open) {
      level++;
    }
  }
  return NULL;
}

/* [-0, +0, e] %n at s: the text of capture n again, or NULL. */
static const char *match_backref(matcher_t *m, const char *s, int digit) {
  int k = digit - '1';
  size_t len;
  if (k < 0 || k >= m->ncap || m->cap[k].len == CAP_OPEN)
    luaL_error(m->L, "invalid capture index %%%d", k + 1);
  /* A position capture has no text, and so never matches again. */
  if (m->cap[k].len < 0)
    return NULL;
  len = (size_t)m->cap[k].len;
  pay(m, bulk_steps(len));
  if ((size_t)(m->src_end - s) >= len && memcmp(m->cap[k].start, s, len) == 0)
    return s + len;
  return NULL;
}

/*
 * [-0, +0, e] Matches the pattern from p against the subject from s and
 * returns the end of the match, or NULL. Items that cannot backtrack are
 * matched in the loop; the others recurse, within OCAP_MATCH_MAXDEPTH.
 */
static const char *do_match(matcher_t *m, const char *s, const char *p) {
  const char *r = NULL;
  if (m->depth-- == 0)
    luaL_error(m->L, "pattern too complex");
  for (;;) {
    const char *end;
    pay(m, 1);
    if (p == m->pat_end) {
      r = s;
      break;
    }
    if (*p == '(') {
      if (p + 1 < m->pat_end && p[1] == ')')
        r = open_capture(m, s, p + 2, CAP_POSITION);
      else
        r = open_capture(m, s, p + 1, CAP_OPEN);
      break;
    }
    if (*p == ')') {
      r = close_capture(m, s, p + 1);
      break;
    }
    if (*p == '$' && p + 1 == m->pat_end) {
      r = s == m->src_end ? s : NULL;
      break;
    }
    if (*p == '%' && p + 1 < m->pat_end) {
      if (p[1] == 'b') {
        s = match_balance(m, s, p + 2);
        if (s == NULL)
          break;
        p += 4;
        continue;
      }
      if (p[1] == 'f') {
        int before, after;
        p += 2;
        if (p >= m->pat_end || *p != '[')
          luaL_error(m->L, "missing '[' after '%%f' in pattern");
        end = class_end(m, p);
        before = s == m->src ? '\0' : (unsigned char)s[-1];
        after = s < m->src_end ? (unsigned char)*s : '\0';
        if (set_has(p, end - 1, before) || !set_has(p, end - 1, after))
          break;
        p = end;
        continue;
      }
      if (isdigit((unsigned char)p[1])) {
        s = match_backref(m, s, p[1]);
        if (s == NULL)
          break;
        p += 2;
        continue;
      }
    }
    /* A single-character class, perhaps quantified. */
    end = class_end(m, p);
    {
      int q = end < m->pat_end ? *end : '\0';
      if (!single(m, s, p, end)) {
        if (q == '*' || q == '?' || q == '-') {
          p = end + 1; /* zero repetitions are allowed */
          continue;
        }
        break;
      }
      if (q == '?') {
        r = do_match(m, s + 1, end + 1);
        if (r != NULL)
          break;
        p = end + 1;
        continue;
      }
      if (q == '+') {
        r = match_greedy(m, s + 1, p, end);
        break;
      }
      if (q == '*') {
        r = match_greedy(m, s, p, end);
        break;
      }
      if (q == '-') {
        r = match_lazy(m, s, p, end);
        break;
      }
      s++;
      p = end;
    }
  }
  m->depth++;
  return r;
}

/*
 * [-0, +1, e] Pushes capture k of the match s..e: its text, or its position
 * for a position capture; with no captures, capture 0 is the whole match.
 */
static void push_capture(matcher_t *m, int k, const char *s, const char *e) {
  if (k >= m->ncap) {
    if (k != 0)
      luaL_error(m->L, "invalid capture index %%%d", k + 1);
    lua_pushlstring(m->L, s, (size_t)(e - s));
    return;
  }
  if (m->cap[k].len == CAP_OPEN)
    luaL_error(m->L, "unfinished capture");
  if (m->cap[k].len == CAP_POSITION)
    lua_pushinteger(m->L, (lua_Integer)(m->cap[k].start - m->src) + 1);
  else
    lua_pushlstring(m->L, m->cap[k].start, (size_t)m->cap[k].len);
}

/*
 * [-0, +n, e] Pushes the captures of the match s..e and returns how many;
 * with no captures, the whole match when whole is set, else nothing.
 */
static int push_captures(matcher_t *m, const char *s, const char *e, int whole) {
  int n = m->ncap == 0 && whole ? 1 : m->ncap;
  luaL_checkstack(m->L, n, "too many captures");
  for (int k = 0; k < n; k++)
    push_capture(m, k, s, e);
  return n;
}

/*
 * The 1-based start position for a subject of len bytes from a possibly
 * negative init, clamped to 1 as string.find does.
 */
static size_t start_position(lua_Integer init, size_t len) {
  if (init > 0)
    return (size_t)init;
  if (init == 0 || init < -(lua_Integer)len)
    return 1;
  return len + (size_t)init + 1;
}

/* Whether the pattern has no magic characters (embedded zeros included). */
static int is_plain(const char *p, size_t lp) {
  for (size_t i = 0; i < lp; i++)
    if (p[i] != '\0' && strchr(SPECIALS, p[i]) != NULL)
      return 0;
  return 1;
}

/* [-0, +(1|n), e] string.find (find set) and string.match. */
static int find_or_match(lua_State *L, int find) {
  size_t ls, lp;
  const char *s = luaL_checklstring(L, 1, &ls);
  const char *p = luaL_checklstring(L, 2, &lp);
  size_t init = start_position(luaL_optinteger(L, 3, 1), ls);
  matcher_t m;
  matcher_init(&m, L, s, ls, p, lp);
  if (init - 1 > ls) {
    luaL_pushfail(L);
    return 1;
  }
  if (find && (lua_toboolean(L, 4) || is_plain(p, lp))) {
    const char *hit = memmem(s + init - 1, ls - (init - 1), p, lp);
    /* Searching costs about the bytes it passes over, found or not. */
    pay(&m, 1 + bulk_steps((hit != NULL ? (size_t)(hit - s) + lp : ls) - (init - 1)));
    settle(&m);
    if (hit == NULL) {
      luaL_pushfail(L);
      return 1;
    }
    lua_pushinteger(L, (lua_Integer)(hit - s) + 1);
    lua_pushinteger(L, (lua_Integer)(hit - s) + (lua_Integer)lp);
    return 2;
  }
  {
    const char *at = s + init - 1;
    int anchored = lp > 0 && *p == '^';
    const char *pat = anchored ? p + 1 : p;
    for (;;) {
      const char *e;
      matcher_reset(&m);
      e = do_match(&m, at, pat);
      if (e != NULL) {
        settle(&m);
        if (find) {
          lua_pushinteger(L, (lua_Integer)(at - s) + 1);
          lua_pushinteger(L, (lua_Integer)(e - s));
          return push_captures(&m, NULL, NULL, 0) + 2;
        }
        return push_captures(&m, at, e, 1);
      }
      if (anchored || at == m.src_end)
        break;
      at++;
    }
  }
  settle(&m);
  luaL_pushfail(L);
  return 1;
}

/* [-0, +(1|n), e] string.find(s, pattern [, init [, plain]]). */
static int match_find(lua_State *L) {
  return find_or_match(L, 1);
}

/* [-0, +(1|n), e] string.match(s, pattern [, init]). */
static int match_match(lua_State *L) {
  return find_or_match(L, 0);
}

/*
 * The iteration state of a gmatch, kept in a userdata between calls: where
 * the next search starts and where the last match ended, as offsets, so
 * that an empty match right after a match is skipped.
 */
typedef struct gmatch_state {
  size_t next;
  size_t last; /* SIZE_MAX before the first match */
} gmatch_state_t;

/*
 * [-0, +n, e] The iterator gmatch returns; upvalues: the meter, the subject,
 * the pattern, the state.
 */
static int gmatch_next(lua_State *L) {
  size_t ls, lp;
  const char *s = lua_tolstring(L, lua_upvalueindex(2), &ls);
  const char *p = lua_tolstring(L, lua_upvalueindex(3), &lp);
  gmatch_state_t *st = lua_touserdata(L, lua_upvalueindex(4));
  matcher_t m;
  matcher_init(&m, L, s, ls, p, lp);
  for (size_t k = st->next; k <= ls; k++) {
    const char *at = s + k, *e;
    matcher_reset(&m);
    e = do_match(&m, at, p);
    if (e != NULL && (size_t)(e - s) != st->last) {
      st->next = st->last = (size_t)(e - s);
      settle(&m);
      return push_captures(&m, at, e, 1);
    }
  }
  st->next = ls + 1;
  settle(&m);
  return 0;
}

/*
 * [-0, +1, e] string.gmatch(s, pattern [, init]). A leading `^` is an
 * ordinary character here, as in Lua: an anchor would stop the iteration.
 */
static int match_gmatch(lua_State *L) {
  size_t ls;
  gmatch_state_t *st;
  luaL_checklstring(L, 1, &ls);
  luaL_checkstring(L, 2);
  size_t init = start_position(luaL_optinteger(L, 3, 1), ls);
  lua_settop(L, 2);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  st = lua_newuserdatauv(L, sizeof *st, 0);
  st->next = init - 1 > ls ? ls + 1 : init - 1;
  st->last = (size_t)-1;
  lua_pushcclosure(L, gmatch_next, 4);
  return 1;
}

/* [-0, +0, e] Adds the string replacement at index 3 for the match s..e. */
static void add_template(matcher_t *m, luaL_Buffer *b, const char *s, const char *e) {
  lua_State *L = m->L;
  size_t lr;
  const char *r = lua_tolstring(L, 3, &lr);
  const char *r_end = r + lr;
  while (r < r_end) {
    const char *esc = memchr(r, '%', (size_t)(r_end - r));
    if (esc == NULL) {
      luaL_addlstring(b, r, (size_t)(r_end - r));
      pay(m, bulk_steps((size_t)(r_end - r)));
      break;
    }
    luaL_addlstring(b, r, (size_t)(esc - r));
    pay(m, 1 + bulk_steps((size_t)(esc - r)));
    r = esc + 1;
    if (r < r_end && *r == '%') {
      luaL_addchar(b, '%');
    } else if (r < r_end && isdigit((unsigned char)*r)) {
      if (*r == '0') {
        luaL_addlstring(b, s, (size_t)(e - s));
        pay(m, bulk_steps((size_t)(e - s)));
      } else {
        push_capture(m, *r - '1', s, e);
        luaL_tolstring(L, -1, NULL);
        lua_remove(L, -2);
        pay(m, bulk_steps(lua_rawlen(L, -1)));
        luaL_addvalue(b);
      }
    } else {
      luaL_error(L, "invalid use of '%c' in replacement string", '%');
    }
    r++;
  }
}

/*
 * [-0, +0, e] Adds the replacement for the match s..e: the template, the
 * table's value or the function's result; false or nil keeps the match.
 */
static void add_replacement(matcher_t *m, luaL_Buffer *b, const char *s, const char *e, int tr) {
  lua_State *L = m->L;
  if (tr == LUA_TFUNCTION) {
    int n;
    lua_pushvalue(L, 3);
    n = push_captures(m, s, e, 1);
    lua_call(L, n, 1);
  } else if (tr == LUA_TTABLE) {
    push_capture(m, 0, s, e);
    lua_gettable(L, 3);
  } else {
    add_template(m, b, s, e);
    return;
  }
  if (!lua_toboolean(L, -1)) {
    lua_pop(L, 1);
    luaL_addlstring(b, s, (size_t)(e - s));
    pay(m, bulk_steps((size_t)(e - s)));
    return;
  }
  if (!lua_isstring(L, -1))
    luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
  pay(m, bulk_steps(lua_rawlen(L, -1)));
  luaL_addvalue(b);
}

/* [-0, +2, e] string.gsub(s, pattern, repl [, n]). */
static int match_gsub(lua_State *L) {
  size_t ls, lp;
  const char *s = luaL_checklstring(L, 1, &ls);
  const char *p = luaL_checklstring(L, 2, &lp);
  int tr = lua_type(L, 3);
  lua_Integer max = luaL_optinteger(L, 4, (lua_Integer)ls + 1);
  int anchored = lp > 0 && *p == '^';
  const char *at = s, *last = NULL;
  lua_Integer n = 0;
  matcher_t m;
  luaL_Buffer b;
  luaL_argexpected(
      L, tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION || tr == LUA_TTABLE, 3,
      "string/function/table");
  if (anchored) {
    p++;
    lp--;
  }
  matcher_init(&m, L, s, ls, p, lp);
  luaL_buffinit(L, &b);
  while (n < max) {
    const char *e;
    matcher_reset(&m);
    e = do_match(&m, at, p);
    if (e != NULL && e != last) {
      n++;
      add_replacement(&m, &b, at, e, tr);
      at = last = e;
    } else if (at < m.src_end) {
      luaL_addchar(&b, *at++);
    } else {
      break;
    }
    if (anchored)
      break;
  }
  pay(&m, bulk_steps((size_t)(m.src_end - at)));
  settle(&m);
  if (n == 0) {
    /* Nothing replaced: the subject itself is the result. */
    lua_settop(L, 1);
  } else {
    luaL_addlstring(&b, at, (size_t)(m.src_end - at));
    luaL_pushresult(&b);
  }
  lua_pushinteger(L, n);
  return 2;
}

const luaL_Reg ocap_match_funcs[] = {
    {"find", match_find}, {"gmatch", match_gmatch}, {"gsub", match_gsub}, {"match", match_match},
    {NULL, NULL},
};
