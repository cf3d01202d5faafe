/*
 * driver.c -- a small mutational fuzzing driver for the harnesses in
 * spec/fuzz, so that they run under gcc and the sanitizers without libFuzzer.
 *
 * A harness defines LLVMFuzzerTestOneInput (and optionally
 * LLVMFuzzerInitialize), exactly as libFuzzer wants them, so the same
 * harness links against either engine. This driver takes a subset of
 * libFuzzer's command line, with the same meaning:
 *
 *   fuzz_<target> [-seed=N] [-runs=N] [-max_total_time=S] [-timeout=S]
 *                 [-max_len=N] [-dict=FILE] [-artifact_prefix=P] PATH...
 *
 * Each PATH is a corpus directory (every file in it is a seed) or a single
 * input file. With only files given and no -runs, the files are run once
 * each and nothing is mutated: that is how a crash is reproduced.
 *
 * Conventions:
 *  1. Everything is deterministic for a given seed and corpus: the PRNG is
 *     seeded from -seed, seeds are run in name order, and the mutation
 *     sequence does not depend on time. -max_total_time only cuts the
 *     sequence short, so a slower machine runs a prefix of the same inputs.
 *  2. A crash (a signal, or a sanitizer report through its death callback)
 *     or an input that runs longer than -timeout seconds writes the input to
 *     <artifact_prefix>crash-<hash> or timeout-<hash> and exits nonzero, as
 *     libFuzzer does.
 *  3. There is no coverage feedback. A mutated input that the harness
 *     accepted (it returned 0; it returns -1 for input the decoder refused)
 *     joins a small pool of recent inputs, so mutations stack over several
 *     generations of well-formed inputs instead of piling onto garbage;
 *     dictionary tokens supply the structure that coverage would find.
 */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);
/* The sanitizers' runtime has it when linked in; it is NULL otherwise. */
__attribute__((weak)) void __sanitizer_set_death_callback(void (*cb)(void));

#define POOL_MAX 64
#define DICT_MAX 512

typedef struct input {
  uint8_t *p;
  size_t n;
} input_t;

typedef struct inputs {
  input_t *v;
  size_t n, cap;
} inputs_t;

/* The input being run, for the crash and timeout handlers. */
static const uint8_t *current;
static size_t current_len;
static const char *artifact_prefix = "";

static uint64_t rng_state;

static uint64_t rng(void) {
  /* xorshift64*: small, fast and good enough to pick mutations. */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 2685821657736338717ULL;
}

static size_t below(size_t n) {
  return n ? (size_t)(rng() % n) : 0;
}

static uint64_t fnv1a(const uint8_t *p, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 1099511628211ULL;
  return h;
}

/* Writes the current input as an artifact; only async-signal-safe calls,
 * since it runs in signal handlers. */
static void write_artifact(const char *kind) {
  static const char hex[] = "0123456789abcdef";
  char path[4096];
  size_t pl = strlen(artifact_prefix), kl = strlen(kind);
  if (pl + kl + 18 >= sizeof path)
    return;
  memcpy(path, artifact_prefix, pl);
  memcpy(path + pl, kind, kl);
  size_t at = pl + kl;
  path[at++] = '-';
  uint64_t h = fnv1a(current, current_len);
  for (int i = 15; i >= 0; i--)
    path[at++] = hex[(h >> (i * 4)) & 15];
  path[at] = '\0';
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) {
    size_t off = 0;
    while (off < current_len) {
      ssize_t w = write(fd, current + off, current_len - off);
      if (w <= 0)
        break;
      off += (size_t)w;
    }
    close(fd);
  }
  const char *msg = "\n==fuzz== input written to ";
  (void)!write(2, msg, strlen(msg));
  (void)!write(2, path, strlen(path));
  (void)!write(2, "\n", 1);
}

static void on_death(void) {
  if (current)
    write_artifact("crash");
}

static void on_signal(int sig) {
  if (current)
    write_artifact("crash");
  signal(sig, SIG_DFL);
  raise(sig);
}

static void on_alarm(int sig) {
  (void)sig;
  const char *msg = "\n==fuzz== ALARM: an input ran longer than -timeout\n";
  (void)!write(2, msg, strlen(msg));
  if (current)
    write_artifact("timeout");
  _exit(70);
}

static void arm_timeout(double seconds) {
  struct itimerval it = {{0, 0}, {0, 0}};
  if (seconds > 0) {
    it.it_value.tv_sec = (time_t)seconds;
    it.it_value.tv_usec = (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6);
  }
  setitimer(ITIMER_REAL, &it, NULL);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *arg) {
  fprintf(stderr, "fuzz: %s%s\n", what, arg ? arg : "");
  exit(2);
}

static void push(inputs_t *s, uint8_t *p, size_t n) {
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 16;
    s->v = realloc(s->v, s->cap * sizeof *s->v);
    if (!s->v)
      die("out of memory", NULL);
  }
  s->v[s->n].p = p;
  s->v[s->n++].n = n;
}

static uint8_t *read_file(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f)
    die("cannot read ", path);
  size_t cap = 4096, len = 0;
  uint8_t *p = malloc(cap);
  for (;;) {
    if (!p)
      die("out of memory", NULL);
    len += fread(p + len, 1, cap - len, f);
    if (len < cap)
      break;
    cap *= 2;
    p = realloc(p, cap);
  }
  fclose(f);
  *n = len;
  return p;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Adds every regular file of dir to s, in name order. */
static void read_dir(inputs_t *s, const char *dir) {
  DIR *d = opendir(dir);
  if (!d)
    die("cannot open directory ", dir);
  char **names = NULL;
  size_t n = 0, cap = 0;
  for (struct dirent *e; (e = readdir(d));) {
    if (e->d_name[0] == '.')
      continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 32;
      names = realloc(names, cap * sizeof *names);
      if (!names)
        die("out of memory", NULL);
    }
    size_t l = strlen(dir) + strlen(e->d_name) + 2;
    names[n] = malloc(l);
    if (!names[n])
      die("out of memory", NULL);
    snprintf(names[n++], l, "%s/%s", dir, e->d_name);
  }
  closedir(d);
  qsort(names, n, sizeof *names, cmp_str);
  for (size_t i = 0; i < n; i++) {
    struct stat st;
    if (stat(names[i], &st) == 0 && S_ISREG(st.st_mode)) {
      size_t len;
      uint8_t *p = read_file(names[i], &len);
      push(s, p, len);
    }
    free(names[i]);
  }
  free(names);
}

/* Reads a libFuzzer dictionary: one "token" per line, with \\, \" and \xNN
 * escapes; a name= before the quote and # comments are ignored. */
static void read_dict(inputs_t *s, const char *path) {
  size_t len;
  uint8_t *text = read_file(path, &len);
  size_t i = 0;
  while (i < len && s->n < DICT_MAX) {
    size_t eol = i;
    while (eol < len && text[eol] != '\n')
      eol++;
    size_t q = i;
    while (q < eol && text[q] != '"' && text[q] != '#')
      q++;
    if (q < eol && text[q] == '"') {
      uint8_t *tok = malloc(eol - q);
      size_t tn = 0;
      if (!tok)
        die("out of memory", NULL);
      for (size_t j = q + 1; j < eol && text[j] != '"'; j++) {
        uint8_t c = text[j];
        if (c == '\\' && j + 1 < eol) {
          c = text[++j];
          if (c == 'x' && j + 2 < eol) {
            char hx[3] = {(char)text[j + 1], (char)text[j + 2], 0};
            c = (uint8_t)strtoul(hx, NULL, 16);
            j += 2;
          }
        }
        tok[tn++] = c;
      }
      push(s, tok, tn);
    }
    i = eol + 1;
  }
  free(text);
}

static const uint8_t INTERESTING[] = {0,    1,    '"',  '\\', '{',  '}',  '[',  ']',  ',', ':', ' ',
                                      '\n', '0',  '9',  '-',  '+',  '.',  'e',  '#',  '$', '&', '!',
                                      'u',  0x7f, 0x80, 0xc0, 0xef, 0xf4, 0xff, '\'', 'n', 't'};

/*
 * One mutation of buf (length *n, capacity cap) in place. Returns 0 when
 * the mutation could not apply (for example a deletion on an empty input).
 */
static int mutate_once(uint8_t *buf, size_t *n, size_t cap, const inputs_t *corpus,
                       const inputs_t *dict) {
  size_t len = *n;
  switch (below(dict->n ? 10 : 9)) {
  case 0: /* flip a bit */
    if (!len)
      return 0;
    buf[below(len)] ^= (uint8_t)(1u << below(8));
    break;
  case 1: /* set a byte to an interesting value */
    if (!len)
      return 0;
    buf[below(len)] = INTERESTING[below(sizeof INTERESTING)];
    break;
  case 2: /* set a random byte */
    if (!len)
      return 0;
    buf[below(len)] = (uint8_t)rng();
    break;
  case 3: { /* insert an interesting byte, repeated a few times */
    size_t k = 1 + (below(4) == 0 ? below(64) : 0);
    if (len + k > cap)
      return 0;
    size_t at = below(len + 1);
    memmove(buf + at + k, buf + at, len - at);
    memset(buf + at, INTERESTING[below(sizeof INTERESTING)], k);
    *n = len + k;
    break;
  }
  case 4: { /* delete a range */
    if (!len)
      return 0;
    size_t at = below(len), k = 1 + below(below(2) ? 4 : len - at);
    if (at + k > len)
      k = len - at;
    memmove(buf + at, buf + at + k, len - at - k);
    *n = len - k;
    break;
  }
  case 5: { /* duplicate a range in place */
    if (!len)
      return 0;
    size_t from = below(len), k = 1 + below(len - from);
    if (len + k > cap)
      return 0;
    size_t at = below(len + 1);
    uint8_t *tmp = malloc(k);
    if (!tmp)
      return 0;
    memcpy(tmp, buf + from, k);
    memmove(buf + at + k, buf + at, len - at);
    memcpy(buf + at, tmp, k);
    free(tmp);
    *n = len + k;
    break;
  }
  case 6: { /* overwrite with a range of the input itself */
    if (len < 2)
      return 0;
    size_t from = below(len), to = below(len), k = 1 + below(len - (from > to ? from : to));
    memmove(buf + to, buf + from, k);
    break;
  }
  case 7: { /* splice: a piece of another corpus entry replaces the tail */
    const input_t *o = &corpus->v[below(corpus->n)];
    if (!o->n)
      return 0;
    size_t at = below(len + 1), from = below(o->n), k = o->n - from;
    if (at + k > cap)
      k = cap - at;
    memcpy(buf + at, o->p + from, k);
    *n = at + k;
    break;
  }
  case 8: { /* change a decimal number found in the input */
    if (!len)
      return 0;
    size_t at = below(len);
    while (at < len && (buf[at] < '0' || buf[at] > '9'))
      at++;
    if (at == len)
      return 0;
    static const char *nums[] = {"0",
                                 "1",
                                 "-1",
                                 "255",
                                 "65536",
                                 "2147483648",
                                 "9007199254740993",
                                 "9223372036854775807",
                                 "18446744073709551616",
                                 "1e308",
                                 "99999"};
    const char *s = nums[below(sizeof nums / sizeof *nums)];
    size_t end = at;
    while (end < len && buf[end] >= '0' && buf[end] <= '9')
      end++;
    size_t sl = strlen(s);
    if (len - (end - at) + sl > cap)
      return 0;
    memmove(buf + at + sl, buf + end, len - end);
    memcpy(buf + at, s, sl);
    *n = len - (end - at) + sl;
    break;
  }
  default: { /* insert or overwrite with a dictionary token */
    const input_t *t = &dict->v[below(dict->n)];
    size_t at = below(len + 1);
    if (below(2) && at + t->n <= len) {
      memcpy(buf + at, t->p, t->n);
    } else {
      if (len + t->n > cap)
        return 0;
      memmove(buf + at + t->n, buf + at, len - at);
      memcpy(buf + at, t->p, t->n);
      *n = len + t->n;
    }
    break;
  }
  }
  return 1;
}

static int run_one(const uint8_t *p, size_t n, double timeout) {
  /* The harness gets a private copy, so that reading past its end is an
   * error ASan can see. */
  uint8_t *copy = malloc(n ? n : 1);
  if (!copy)
    die("out of memory", NULL);
  memcpy(copy, p, n);
  current = copy;
  current_len = n;
  arm_timeout(timeout);
  int rc = LLVMFuzzerTestOneInput(copy, n);
  arm_timeout(0);
  current = NULL;
  free(copy);
  return rc;
}

int main(int argc, char **argv) {
  long long runs = -1;
  unsigned long long seed = 1;
  double max_time = 0, timeout = 20;
  size_t max_len = 4096;
  inputs_t corpus = {0}, dict = {0};
  int only_files = 1, any_path = 0;
  if (LLVMFuzzerInitialize)
    LLVMFuzzerInitialize(&argc, &argv);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strncmp(a, "-runs=", 6) == 0)
      runs = atoll(a + 6);
    else if (strncmp(a, "-seed=", 6) == 0)
      seed = strtoull(a + 6, NULL, 10);
    else if (strncmp(a, "-max_total_time=", 16) == 0)
      max_time = atof(a + 16);
    else if (strncmp(a, "-timeout=", 9) == 0)
      timeout = atof(a + 9);
    else if (strncmp(a, "-max_len=", 9) == 0)
      max_len = (size_t)atoll(a + 9);
    else if (strncmp(a, "-dict=", 6) == 0)
      read_dict(&dict, a + 6);
    else if (strncmp(a, "-artifact_prefix=", 17) == 0)
      artifact_prefix = a + 17;
    else if (a[0] == '-')
      fprintf(stderr, "fuzz: ignoring unknown option %s\n", a);
    else {
      struct stat st;
      if (stat(a, &st) != 0)
        die("no such file or directory: ", a);
      any_path = 1;
      if (S_ISDIR(st.st_mode)) {
        only_files = 0;
        read_dir(&corpus, a);
      } else {
        size_t len;
        uint8_t *p = read_file(a, &len);
        push(&corpus, p, len);
      }
    }
  }
  if (!any_path)
    die("usage: fuzz_<target> [-runs=N] [-seed=N] [-max_total_time=S] [-timeout=S] "
        "[-max_len=N] [-dict=FILE] [-artifact_prefix=P] CORPUS_DIR|FILE...",
        NULL);
  if (__sanitizer_set_death_callback)
    __sanitizer_set_death_callback(on_death);
  signal(SIGSEGV, on_signal);
  signal(SIGBUS, on_signal);
  signal(SIGILL, on_signal);
  signal(SIGFPE, on_signal);
  signal(SIGABRT, on_signal);
  signal(SIGALRM, on_alarm);
  rng_state = seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL;
  if (!rng_state)
    rng_state = 1;

  double start = now();
  for (size_t i = 0; i < corpus.n; i++)
    run_one(corpus.v[i].p, corpus.v[i].n, timeout);
  fprintf(stderr, "fuzz: %zu seed input(s) ran clean\n", corpus.n);
  if (runs < 0)
    runs = only_files ? 0 : (max_time > 0 ? -2 : 0);
  if (!corpus.n) {
    uint8_t *empty = malloc(1);
    push(&corpus, empty, 0);
  }

  /* The pool starts as the corpus; mutated inputs replace its entries round
   * robin, so a lineage can grow over several generations. */
  inputs_t pool = {0};
  for (size_t i = 0; i < corpus.n && pool.n < POOL_MAX; i++) {
    uint8_t *p = malloc(corpus.v[i].n ? corpus.v[i].n : 1);
    memcpy(p, corpus.v[i].p, corpus.v[i].n);
    push(&pool, p, corpus.v[i].n);
  }
  uint8_t *buf = malloc(max_len ? max_len : 1);
  size_t next_slot = 0;
  long long done = 0;
  while (runs == -2 || done < runs) {
    if (max_time > 0 && (done & 15) == 0 && now() - start > max_time)
      break;
    const input_t *base = below(4) == 0 ? &corpus.v[below(corpus.n)] : &pool.v[below(pool.n)];
    size_t n = base->n < max_len ? base->n : max_len;
    memcpy(buf, base->p, n);
    int k = 1 + (int)below(below(4) ? 2 : 8);
    for (int m = 0; m < k; m++)
      mutate_once(buf, &n, max_len, &corpus, &dict);
    int rc = run_one(buf, n, timeout);
    done++;
    /* Keep it for later generations, in the pool's next slot; a refused
     * input only now and then, for variety. */
    if (rc != 0 && below(16) != 0)
      continue;
    if (pool.n < POOL_MAX) {
      uint8_t *p = malloc(n ? n : 1);
      memcpy(p, buf, n);
      push(&pool, p, n);
    } else {
      input_t *slot = &pool.v[next_slot];
      next_slot = (next_slot + 1) % POOL_MAX;
      uint8_t *p = realloc(slot->p, n ? n : 1);
      if (p) {
        memcpy(p, buf, n);
        slot->p = p;
        slot->n = n;
      }
    }
  }
  fprintf(stderr, "fuzz: %lld mutated input(s) ran clean in %.1f s (seed %llu)\n", done,
          now() - start, seed);
  free(buf);
  for (size_t i = 0; i < pool.n; i++)
    free(pool.v[i].p);
  for (size_t i = 0; i < corpus.n; i++)
    free(corpus.v[i].p);
  for (size_t i = 0; i < dict.n; i++)
    free(dict.v[i].p);
  free(pool.v);
  free(corpus.v);
  free(dict.v);
  return 0;
}
