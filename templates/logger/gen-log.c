/* gen-log: the logger of gen's init. Reads a service's output on stdin and writes it to DIR/current,
 * rotated by size at line boundaries into archives named as s6-log names them (@<tai64n>.s, the
 * oldest deleted beyond KEEP); optionally copies it to stdout and forwards it to a syslog collector,
 * both asynchronously.
 *
 *   gen-log [-t none|tai64n|iso8601] [-s MAX_SIZE] [-n KEEP] [-o] [-p PREFIX] [-d DRAIN_MS] [-e]
 *           [-f udp://HOST:PORT|tcp://HOST:PORT|unix:///PATH [-a APP_NAME] [-l FACILITY]] DIR
 *   gen-log -c [OPTIONS]: check the options (the init's check of its settings) and exit
 *
 * Why not s6-log: s6-log handles its input line by line in 8 KiB reads (about 250 MB/s here, against
 * 3 GB/s for a plain pipe into a file) and copies to stdout synchronously, so a stalled container
 * engine stops the files and then the app. gen-log works in blocks of up to 1 MiB and its files never
 * wait for stdout:
 *
 * - The files are the primary log. The stdout copy (-o) is a second thread that reads the files back
 *   (sendfile, so from the page cache) and may fall behind without slowing the files. Its backlog is
 *   bounded by the kept files: if an archive it has not reached is deleted by rotation, it skips that
 *   archive, and one line saying how many bytes were skipped goes into the files and so to stdout.
 * - Nothing read is lost when the logger is killed: when stdin is a pipe (always, under s6), input is
 *   peeked with tee(2), written, and only then consumed; a state file records the write in progress,
 *   so a restarted logger truncates a half-done write and redoes it from the pipe.
 * - A last line without a newline gets one at EOF, and at the end of each run of a service that
 *   restarts: its finish script writes MARKER (NUL-framed, never in text) into the pipe after all the
 *   run wrote. SIGTERM is ignored: the logger ends at EOF, which the init guarantees at stop; then
 *   the stdout copy goes on while stdout takes bytes, and gives up after DRAIN_MS without progress.
 *   With -e, SIGTERM ends the input once the pipe is empty: under s6-rc a fd holder keeps the pipe
 *   open, so EOF never comes, and the logger gets SIGTERM only after its producer is down.
 * - -t stamps each line (tai64n or iso8601, s6-log's t and T formats) in the files; the stdout copy
 *   leaves the stamps out (the engine stamps its own records) and puts PREFIX and a space before
 *   each line when given (several services sharing stdout).
 * - -f forwards each line as an RFC 5424 message (APP_NAME, FACILITY, severity info, the line's
 *   stamp as its time) by a third thread that reads the files as the stdout copy does, at its own
 *   pace and with its own place in the state file: a collector that is slow or down never slows
 *   the files or the app; it is retried with backoff while the files keep everything, and one that
 *   stays down longer than the kept files last is skipped over, said as for the stdout copy. Over
 *   TCP (octet-counted framing, RFC 6587) a batch cut by a broken connection is sent again whole,
 *   so a line may arrive twice but none is lost; a connection the collector closed is noticed
 *   before the next batch. Over UDP a collector that is down loses what was sent meanwhile; over a
 *   unix datagram socket (/dev/log) nothing is lost.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1u << 20)                 /* largest block read or written at once */
#define TAI64_BASE 4611686018427387904ULL /* 2^62: TAI64 label of 1970-01-01 00:00:00 TAI */
#define TAI_UTC_OFFSET 37ULL             /* TAI - UTC since 2017 (10 s + 27 leap seconds), as s6-log */
#define TAI64N_LEN 25                    /* "@" + 24 hex digits */
#define ISO8601_LEN 29                   /* "YYYY-MM-DD HH:MM:SS.nnnnnnnnn" */
#define STATE_FILE "gen-log.state"
#define STATE_MAGIC 0x67656e6c6f673031ULL /* "genlog01" */
/* Written by a service's finish script into the log pipe when a run ends (see end_run). */
#define MARKER "\0gen-log:end-of-run\0"
#define MARKER_LEN (sizeof MARKER - 1)
#define OUT_CAP (2u * CHUNK)          /* out_buf's size: stamps make the output longer */
#define EDGE 64                          /* bytes of a pending write's input remembered at each end */

enum stamp { STAMP_NONE, STAMP_TAI64N, STAMP_ISO8601 };
enum phase { PHASE_IDLE, PHASE_WRITING, PHASE_CONSUMING };

/* What a restarted logger needs to finish the work of a killed one: in DIR/gen-log.state, written
 * with pwrite at fixed offsets (the writer's part and the copier's part never overlap). */
struct writer_state {
  uint64_t magic, phase, ino, size_before, taken, line_start;
  unsigned char head[EDGE], tail[EDGE];
};
struct copier_state {
  uint64_t magic, ino, offset, line_start;
};
#define COPIER_STATE_AT 512 /* the stdout copy's part */
#define FORWARD_STATE_AT 1024 /* the forwarding's part */

/* One file of the log, oldest first: archives then current. The copier reads them in this order. */
struct segment {
  uint64_t seq, ino, size;
  int is_current, deleted;
  char name[48];
};

static struct {
  enum stamp stamp;
  uint64_t max_size;
  unsigned keep;
  int copy;
  const char *prefix;
  long drain_ms;
  int end_on_term;
  const char *dir;
  const char *forward_to, *app_name;
  int facility;
} opt = {STAMP_NONE, 268435455, 3, 0, NULL, 3000, 0, NULL, NULL, NULL, 1};

static int dir_fd = -1, cur_fd = -1, state_fd = -1;
static uint64_t cur_size, cur_ino;
static int line_start = 1;          /* the files end at a line boundary */
static int stdin_is_pipe, scratch[2] = {-1, -1}, devnull = -1;
static volatile sig_atomic_t term_seen; /* -e: SIGTERM came; the input ends when the pipe is empty */
static sigset_t unblocked;              /* -e: the mask while waiting for input, SIGTERM let in */

/* Shared with the copy threads, under lock. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static struct segment *segs;
static size_t nsegs, segs_cap;
static uint64_t next_seq, progress; /* progress: bumped each time a copy moves on */
static int input_done;

/* A reader of the files at its own pace: the stdout copy (-o) or the syslog forwarding (-f). Its
 * place, done and skip counts are under lock; line_start and need_more are its thread's own. */
struct copy {
  const char *what; /* in gen-log's own lines */
  size_t (*send)(struct copy *c, int fd, uint64_t off, size_t len, int complete, char *buf);
  off_t state_at;
  uint64_t seq, off, open_seq; /* open_seq: the segment whose file it has open */
  int done, line_start, need_more, stopped; /* stopped: the send gave up for good (stdout gone) */
  uint64_t pending_skip, skipped_total; /* skipped bytes still to be said in the files; said so far */
  unsigned pending_skip_files;
  pthread_t thread;
};
static struct copy copies[2], *stdout_copy;
static size_t ncopies;

static void say(const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n > sizeof line - 2) n = sizeof line - 2;
  line[n++] = '\n';
  ssize_t ignored = write(2, line, (size_t)n);
  (void)ignored;
}

static void die(const char *fmt, ...) {
  char line[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  say("gen-log: %s", line);
  exit(111);
}

static void usage(const char *problem) {
  die("%s; usage: gen-log [-t none|tai64n|iso8601] [-s MAX_SIZE] [-n KEEP] [-o] [-p PREFIX] [-d DRAIN_MS] [-e] "
      "[-f udp://HOST:PORT|tcp://HOST:PORT|unix:///PATH [-a APP_NAME] [-l FACILITY]] DIR",
      problem);
}

static uint64_t number(const char *s, uint64_t min, uint64_t max, const char *what) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || *s == '-' || v < min || v > max)
    die("%s %s is not a whole number from %llu to %llu", what, s, (unsigned long long)min, (unsigned long long)max);
  return v;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* --- writing helpers ---------------------------------------------------------------------- */

/* Write all of buf to fd, retrying on EINTR; on another error say it and retry after 1 s (a full
 * disk must not lose what the pipe still holds). */
static void write_all(int fd, const char *buf, size_t len, const char *what) {
  while (len) {
    ssize_t n = write(fd, buf, len);
    if (n > 0) {
      buf += n;
      len -= (size_t)n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      say("gen-log: cannot write %s/%s: %s; retrying in 1 s", opt.dir, what, strerror(n < 0 ? errno : EIO));
      sleep_ms(1000);
    }
  }
}

static void pwrite_state(const void *data, size_t len, off_t at) {
  if (state_fd >= 0 && pwrite(state_fd, data, len, at) != (ssize_t)len)
    say("gen-log: cannot write %s/%s: %s", opt.dir, STATE_FILE, strerror(errno));
}

/* --- timestamps ----------------------------------------------------------------------------- */

static void tai64n_of(const struct timespec *ts, char *out) {
  static const char hex[] = "0123456789abcdef";
  uint64_t secs = TAI64_BASE + TAI_UTC_OFFSET + (uint64_t)ts->tv_sec;
  uint32_t nanos = (uint32_t)ts->tv_nsec;
  out[0] = '@';
  for (int i = 0; i < 16; i++) out[1 + i] = hex[(secs >> (60 - 4 * i)) & 15];
  for (int i = 0; i < 8; i++) out[17 + i] = hex[(nanos >> (28 - 4 * i)) & 15];
}

/* The stamp put before each line read in this block, and a space (two after iso8601, as s6-log). */
static size_t make_stamp(char *out) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  if (opt.stamp == STAMP_TAI64N) {
    tai64n_of(&ts, out);
    out[TAI64N_LEN] = ' ';
    return TAI64N_LEN + 1;
  }
  struct tm tm;
  localtime_r(&ts.tv_sec, &tm);
  char buf[64];
  snprintf(buf, sizeof buf, "%04d-%02d-%02d %02d:%02d:%02d.%09ld  ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
           tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec);
  memcpy(out, buf, ISO8601_LEN + 2);
  return ISO8601_LEN + 2;
}

static size_t stamp_len(void) {
  return opt.stamp == STAMP_NONE ? 0 : opt.stamp == STAMP_TAI64N ? TAI64N_LEN + 1 : ISO8601_LEN + 2;
}

/* --- segments (shared with the copier) ------------------------------------------------------ */

static struct segment *add_segment(const char *name, uint64_t ino, uint64_t size, int is_current) {
  if (nsegs == segs_cap) {
    segs_cap = segs_cap ? segs_cap * 2 : 16;
    segs = realloc(segs, segs_cap * sizeof *segs);
    if (!segs) die("out of memory");
  }
  struct segment *s = &segs[nsegs++];
  memset(s, 0, sizeof *s);
  s->seq = next_seq++;
  s->ino = ino;
  s->size = size;
  s->is_current = is_current;
  snprintf(s->name, sizeof s->name, "%s", name);
  return s;
}

/* Drop segments every copy has passed, so the list stays as short as the directory. */
static void forget_copied_segments(void) {
  uint64_t oldest = UINT64_MAX;
  for (size_t i = 0; i < ncopies; i++)
    if (!copies[i].done && copies[i].seq < oldest) oldest = copies[i].seq;
  size_t drop = 0;
  while (drop < nsegs && segs[drop].seq < oldest && !segs[drop].is_current) drop++;
  if (drop) {
    memmove(segs, segs + drop, (nsegs - drop) * sizeof *segs);
    nsegs -= drop;
  }
}

static struct segment *segment_by_seq(uint64_t seq) {
  for (size_t i = 0; i < nsegs; i++)
    if (segs[i].seq == seq) return &segs[i];
  return NULL;
}

/* --- the directory ---------------------------------------------------------------------------- */

static int is_archive(const char *name) {
  size_t n = strlen(name);
  return n == TAI64N_LEN + 2 && name[0] == '@' && strcmp(name + n - 2, ".s") == 0;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The archives' names, oldest first (TAI64N names sort by time). */
static char **list_archives(size_t *count) {
  int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR *d = fd < 0 ? NULL : fdopendir(fd);
  if (!d) die("cannot list %s: %s", opt.dir, strerror(errno));
  char **names = NULL;
  size_t n = 0, cap = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!is_archive(e->d_name)) continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 16;
      names = realloc(names, cap * sizeof *names);
      if (!names) die("out of memory");
    }
    if (!(names[n++] = strdup(e->d_name))) die("out of memory");
  }
  closedir(d);
  if (n) qsort(names, n, sizeof *names, by_name);
  *count = n;
  return names;
}

static void free_names(char **names, size_t n) {
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
}

static void open_current(void) {
  cur_fd = openat(dir_fd, "current", O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (cur_fd < 0) die("cannot open %s/current: %s", opt.dir, strerror(errno));
  struct stat st;
  if (fstat(cur_fd, &st) < 0) die("cannot stat %s/current: %s", opt.dir, strerror(errno));
  fchmod(cur_fd, 0644); /* s6-log's convention: 0744 marks a file that is complete */
  cur_size = (uint64_t)st.st_size;
  cur_ino = (uint64_t)st.st_ino;
  line_start = 1;
  if (cur_size) {
    char last;
    int rfd = openat(dir_fd, "current", O_RDONLY | O_CLOEXEC);
    if (rfd >= 0 && pread(rfd, &last, 1, (off_t)cur_size - 1) == 1) line_start = last == '\n';
    if (rfd >= 0) close(rfd);
  }
}

/* Delete the oldest archives beyond KEEP. One a copy has not reached is skipped by it: the bytes
 * are counted, and said in the files at the next line boundary. */
static void prune(void) {
  size_t n;
  char **names = list_archives(&n);
  for (size_t i = 0; i + opt.keep < n; i++) {
    struct stat st;
    if (fstatat(dir_fd, names[i], &st, 0) < 0) continue;
    /* Deleted under the lock, as the copies open files under it: a copy either has the file open
     * (and reads it to its end) or finds it marked deleted here, never missing without a word. */
    pthread_mutex_lock(&lock);
    if (unlinkat(dir_fd, names[i], 0) < 0) {
      int err = errno;
      pthread_mutex_unlock(&lock);
      say("gen-log: cannot delete %s/%s: %s", opt.dir, names[i], strerror(err));
      continue;
    }
    for (size_t j = 0; j < nsegs; j++) {
      struct segment *s = &segs[j];
      if (s->deleted || s->is_current || s->ino != (uint64_t)st.st_ino) continue;
      s->deleted = 1;
      for (size_t k = 0; k < ncopies; k++) {
        struct copy *c = &copies[k];
        if (c->done || s->seq < c->seq || s->seq == c->open_seq) continue; /* passed, or open: still readable */
        c->pending_skip += s->size - (s->seq == c->seq ? c->off : 0);
        c->pending_skip_files++;
      }
    }
    pthread_mutex_unlock(&lock);
  }
  free_names(names, n);
}

/* current -> @<tai64n>.s (mode 0744: complete), a new current, then the oldest archives go. */
static char newest_archive[48]; /* the latest archive name given, or "" */

static void rotate(void) {
  char name[48];
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  if (!newest_archive[0]) { /* the first rotation of this run: the archives an earlier run left */
    size_t n;
    char **names = list_archives(&n);
    if (n) snprintf(newest_archive, sizeof newest_archive, "%s", names[n - 1]);
    free_names(names, n);
  }
  tai64n_of(&ts, name);
  if (strncmp(name, newest_archive, TAI64N_LEN) <= 0) { /* the clock went back: prune goes by name */
    char secs[17] = {0}, nanos[9] = {0};
    memcpy(secs, newest_archive + 1, 16);
    memcpy(nanos, newest_archive + 17, 8);
    uint64_t tai = strtoull(secs, NULL, 16);
    ts.tv_sec = (time_t)(tai - TAI64_BASE - TAI_UTC_OFFSET);
    ts.tv_nsec = (long)strtoul(nanos, NULL, 16) + 1;
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec = 0;
  }
  for (int tries = 0;; tries++) {
    tai64n_of(&ts, name);
    strcpy(name + TAI64N_LEN, ".s");
    struct stat taken;
    if (fstatat(dir_fd, name, &taken, AT_SYMLINK_NOFOLLOW) < 0) break;
    if (++ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec = 0; /* a name is never reused */
    if (tries > 1000) die("cannot find a free archive name in %s", opt.dir);
  }
  memcpy(newest_archive, name, sizeof newest_archive);
  fchmod(cur_fd, 0744);
  /* Renamed under the lock: the copy opens files by the names the list gives. */
  for (;;) {
    pthread_mutex_lock(&lock);
    int renamed = renameat(dir_fd, "current", dir_fd, name) == 0, err = errno;
    for (size_t i = 0; renamed && i < nsegs; i++)
      if (segs[i].is_current) {
        segs[i].is_current = 0;
        segs[i].size = cur_size;
        snprintf(segs[i].name, sizeof segs[i].name, "%s", name);
      }
    pthread_mutex_unlock(&lock);
    if (renamed) break;
    say("gen-log: cannot rename %s/current to %s: %s; retrying in 1 s", opt.dir, name, strerror(err));
    sleep_ms(1000);
  }
  close(cur_fd);
  open_current();
  pthread_mutex_lock(&lock);
  add_segment("current", cur_ino, 0, 1);
  forget_copied_segments(); /* with no copy running, every archive: the list stays short */
  pthread_cond_broadcast(&changed);
  pthread_mutex_unlock(&lock);
  prune();
}

/* Bytes appended to current: the copies may read up to the new size. */
static void appended(size_t n) {
  cur_size += n;
  if (!ncopies) return;
  pthread_mutex_lock(&lock);
  for (size_t i = nsegs; i-- > 0;)
    if (segs[i].is_current) {
      segs[i].size = cur_size;
      break;
    }
  pthread_cond_broadcast(&changed);
  pthread_mutex_unlock(&lock);
}

/* A line of gen-log's own into the files (and so into the copies), at a line boundary. */
static void own_line(const char *text) {
  char line[600];
  size_t len = 0;
  if (opt.stamp != STAMP_NONE) len = make_stamp(line);
  len += (size_t)snprintf(line + len, sizeof line - len, "gen-log: %s\n", text);
  if (len > sizeof line - 1) len = sizeof line - 1;
  if (cur_size + len > opt.max_size && cur_size) rotate();
  write_all(cur_fd, line, len, "current");
  appended(len);
}

static void say_skips(void) {
  for (size_t k = 0; k < ncopies; k++) {
    struct copy *c = &copies[k];
    pthread_mutex_lock(&lock);
    uint64_t bytes = c->pending_skip;
    unsigned files = c->pending_skip_files;
    c->pending_skip = 0;
    c->pending_skip_files = 0;
    /* The total too: a line like this one may itself be in a file the copy skips later. */
    c->skipped_total += bytes;
    uint64_t total = c->skipped_total;
    pthread_mutex_unlock(&lock);
    if (!bytes && !files) continue;
    char text[300];
    snprintf(text, sizeof text,
             "the %s fell behind by more than the %u kept files and skipped %llu bytes (%u file%s deleted by "
             "rotation before it reached %s; %llu bytes in all)",
             c->what, opt.keep, (unsigned long long)bytes, files, files == 1 ? "" : "s", files == 1 ? "it" : "them",
             (unsigned long long)total);
    own_line(text);
  }
}

/* --- input ------------------------------------------------------------------------------------- */

static char *in_buf, *out_buf;

/* A non-blocking stdin (someone set O_NONBLOCK on the pipe): wait until it has data or EOF. */
static int wait_for_input(void) {
  struct pollfd p = {0, POLLIN, 0};
  return poll(&p, 1, -1) >= 0 || errno == EINTR; /* else errno says why poll failed, for die */
}

static void on_term(int sig) {
  (void)sig;
  term_seen = 1;
}

/* -e: whether input may still come. SIGTERM stays blocked except inside ppoll, so it cannot slip in
 * between the check and a blocking read; once it came, reads never block and empty means the end. */
static int input_may_come(void) {
  if (!opt.end_on_term) return 1;
  while (!term_seen) {
    struct pollfd p = {0, POLLIN, 0};
    int ready = ppoll(&p, 1, NULL, &unblocked);
    if (ready > 0) return 1;
    if (ready < 0 && errno != EINTR) die("cannot wait for stdin: %s", strerror(errno));
  }
  struct pollfd p = {0, POLLIN, 0};
  return poll(&p, 1, 0) > 0 && (p.revents & POLLIN);
}

/* Up to CHUNK bytes of input into in_buf without consuming them from a pipe (tee into a scratch
 * pipe, then read that); from anything else, a plain read. 0 at EOF. */
static size_t peek_input(void) {
  for (;;) {
    if (!input_may_come()) return 0;
    if (stdin_is_pipe) {
      ssize_t n = tee(0, scratch[1], CHUNK, 0);
      if (n < 0 && (errno == EINTR || (errno == EAGAIN && wait_for_input()))) continue;
      if (n < 0 && errno == EINVAL) {
        stdin_is_pipe = 0; /* not a pipe after all (a socket, say) */
        continue;
      }
      if (n < 0) die("cannot read stdin: %s", strerror(errno));
      size_t got = 0;
      while (got < (size_t)n) {
        ssize_t r = read(scratch[0], in_buf + got, (size_t)n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) die("cannot read the scratch pipe: %s", strerror(errno));
        got += (size_t)r;
      }
      return got;
    }
    ssize_t n = read(0, in_buf, CHUNK);
    if (n < 0 && (errno == EINTR || (errno == EAGAIN && wait_for_input()))) continue;
    if (n < 0) die("cannot read stdin: %s", strerror(errno));
    return (size_t)n;
  }
}

/* Remove n bytes from the pipe once they are in the files (for plain reads: already gone, but a
 * read that ran past the rotation point keeps its rest for the next round). */
static size_t carry; /* bytes at in_buf's start kept from the last plain read */
static void consume_input(size_t n, size_t peeked) {
  if (!stdin_is_pipe) {
    carry = peeked - n;
    if (carry) memmove(in_buf, in_buf + n, carry);
    return;
  }
  while (n) {
    ssize_t r = splice(0, NULL, devnull, NULL, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) { /* /dev/null without splice: read the bytes away */
      r = read(0, out_buf, n < CHUNK ? n : CHUNK);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) die("cannot consume stdin: %s", strerror(errno));
    }
    n -= (size_t)r;
  }
}

/* Of in[0..n), how much goes into current now (taken) and the bytes that make it in out (with
 * stamps); *rotate_after when current is full after it. */
static size_t plan_write(const char *in, size_t n, const char **out, size_t *out_len, int *rotate_after) {
  uint64_t room = opt.max_size > cur_size ? opt.max_size - cur_size : 0;
  *rotate_after = 0;
  if (opt.stamp == STAMP_NONE) {
    *out = in;
    if (n <= room) {
      *out_len = n;
      return n;
    }
    const char *nl = room ? memrchr(in, '\n', room) : NULL;
    size_t take = nl ? (size_t)(nl - in) + 1 : cur_size ? 0 : room; /* a line longer than a file is split */
    *out_len = take;
    *rotate_after = 1;
    return take;
  }
  char stamp[64];
  size_t slen = make_stamp(stamp), taken = 0, len = 0;
  int at_start = line_start;
  while (taken < n) {
    const char *nl = memchr(in + taken, '\n', n - taken);
    size_t seg = nl ? (size_t)(nl - (in + taken)) + 1 : n - taken;
    size_t need = seg + (at_start ? slen : 0);
    if (len + need > OUT_CAP) break; /* the rest next round */
    if (len + need > room) {
      *rotate_after = 1;
      if (len || cur_size) break;
      if (room <= slen) break;
      seg = (size_t)room - (at_start ? slen : 0); /* a line longer than a file is split */
      need = room;
    }
    if (at_start) memcpy(out_buf + len, stamp, slen), len += slen;
    memcpy(out_buf + len, in + taken, seg);
    len += seg;
    taken += seg;
    at_start = in[taken - 1] == '\n';
    if (*rotate_after) break;
  }
  *out = out_buf;
  *out_len = len;
  return taken;
}

static void record_write(enum phase phase, uint64_t size_before, const char *in, size_t taken) {
  if (!stdin_is_pipe) return;
  struct writer_state ws = {STATE_MAGIC, phase, cur_ino, size_before, taken, (uint64_t)line_start, {0}, {0}};
  if (phase != PHASE_IDLE) {
    memcpy(ws.head, in, taken < EDGE ? taken : EDGE);
    memcpy(ws.tail, in + (taken > EDGE ? taken - EDGE : 0), taken < EDGE ? taken : EDGE);
  }
  pwrite_state(&ws, sizeof ws, 0);
}

/* Whether in[0..n) is what current holds from offset `from` to its end, once the stamps (at each
 * line start, the first as at_line_start says) are left out. */
static int logged_as(const char *in, size_t n, uint64_t from, int at_line_start) {
  if (cur_size < from || cur_size - from > OUT_CAP) return 0;
  size_t len = (size_t)(cur_size - from), got = 0, slen = stamp_len(), i = 0, j = 0;
  int rfd = openat(dir_fd, "current", O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (rfd < 0) return 0;
  while (got < len) {
    ssize_t r = pread(rfd, out_buf + got, len - got, (off_t)(from + got));
    if (r <= 0) break;
    got += (size_t)r;
  }
  close(rfd);
  if (got != len) return 0;
  while (j < n) {
    if (at_line_start && (i += slen) > len) return 0;
    const char *nl = memchr(in + j, '\n', n - j);
    size_t seg = nl ? (size_t)(nl - (in + j)) + 1 : n - j;
    if (seg > len - i || memcmp(out_buf + i, in + j, seg) != 0) return 0;
    i += seg, j += seg;
    at_line_start = in[j - 1] == '\n';
  }
  return i == len;
}

/* Finish what a killed logger left: a half-done write is cut off (its bytes are still in the pipe);
 * a complete write whose input is still at the pipe's head is consumed. That the head is the same
 * input is known by comparing it with what the write put in current, byte for byte: the one case
 * left open is a logger killed between consuming a block and recording that, whose next block of
 * input is the same bytes again (a run of identical lines); that repeat is then dropped. */
static void recover(void) {
  struct writer_state ws;
  if (!stdin_is_pipe || pread(state_fd, &ws, sizeof ws, 0) != (ssize_t)sizeof ws || ws.magic != STATE_MAGIC) return;
  if (ws.ino != cur_ino || ws.phase == PHASE_IDLE) return;
  if (ws.phase == PHASE_WRITING) {
    if (cur_size > ws.size_before && ftruncate(cur_fd, (off_t)ws.size_before) == 0) {
      cur_size = ws.size_before;
      line_start = (int)ws.line_start;
    }
  } else if (ws.phase == PHASE_CONSUMING && ws.taken <= CHUNK) {
    ssize_t n = tee(0, scratch[1], ws.taken, SPLICE_F_NONBLOCK);
    size_t got = 0;
    while (n > 0 && got < (size_t)n) {
      ssize_t r = read(scratch[0], in_buf + got, (size_t)n - got);
      if (r <= 0) break;
      got += (size_t)r;
    }
    size_t edge = ws.taken < EDGE ? ws.taken : EDGE;
    if (got == ws.taken && memcmp(in_buf, ws.head, edge) == 0 && memcmp(in_buf + got - edge, ws.tail, edge) == 0 &&
        logged_as(in_buf, got, ws.size_before, (int)ws.line_start))
      consume_input(ws.taken, ws.taken);
  }
  record_write(PHASE_IDLE, 0, NULL, 0);
}

/* Where the first end-of-run marker starts in buf[0..n), or n. Text never holds a NUL, so the
 * search is a memchr for one. A full block that ends in the marker's first bytes ends before them:
 * the rest of the marker is in the next read (from a pipe a block never cuts one, as the pipe holds
 * no more than a block and the marker is one atomic write; from a file or a socket it may). */
static size_t find_marker(const char *buf, size_t n) {
  for (const char *p = buf; (p = memchr(p, '\0', n - (size_t)(p - buf))); p++) {
    size_t left = (size_t)(buf + n - p);
    if (left >= MARKER_LEN ? memcmp(p, MARKER, MARKER_LEN) == 0 : n == CHUNK && p > buf && memcmp(p, MARKER, left) == 0)
      return (size_t)(p - buf);
  }
  return n;
}

/* The service's run ended (its finish script wrote the marker after everything the run wrote):
 * a last line without newline ends here, not in the next run's first line. */
static void end_run(size_t peeked) {
  int add = !line_start;
  if (add && cur_size + 1 > opt.max_size) rotate();
  uint64_t before = cur_size;
  record_write(PHASE_WRITING, before, in_buf, MARKER_LEN);
  if (add) write_all(cur_fd, "\n", 1, "current");
  line_start = 1;
  record_write(PHASE_CONSUMING, before, in_buf, MARKER_LEN);
  consume_input(MARKER_LEN, peeked);
  record_write(PHASE_IDLE, 0, NULL, 0);
  if (add) appended(1);
}

static void write_loop(void) {
  for (;;) {
    size_t n;
    if (carry) {
      /* carry exists for plain reads only */
      ssize_t r = input_may_come() ? read(0, in_buf + carry, CHUNK - carry) : 0;
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) die("cannot read stdin: %s", strerror(errno));
      n = carry + (size_t)r;
      carry = 0;
    } else {
      n = peek_input();
      if (!n) break;
    }
    size_t usable = find_marker(in_buf, n);
    if (usable == 0) {
      end_run(n);
      continue;
    }
    if (line_start && ncopies) say_skips();
    const char *out;
    size_t out_len;
    int rotate_after;
    size_t taken = plan_write(in_buf, usable, &out, &out_len, &rotate_after);
    if (taken) {
      uint64_t before = cur_size;
      record_write(PHASE_WRITING, before, in_buf, taken);
      write_all(cur_fd, out, out_len, "current");
      int ends_line = out[out_len - 1] == '\n'; /* out may be in_buf, which consuming moves */
      /* Recorded with line_start as it was before the write: recover() compares the block with
       * current from size_before on, where its first stamp is only if the block began a line. */
      record_write(PHASE_CONSUMING, before, in_buf, taken);
      consume_input(taken, n);
      record_write(PHASE_IDLE, 0, NULL, 0);
      line_start = ends_line;
      appended(out_len);
    } else if (!stdin_is_pipe) {
      carry = n;
    }
    if (rotate_after) rotate();
  }
  if (!line_start) { /* the last line had no newline: it ends here */
    write_all(cur_fd, "\n", 1, "current");
    line_start = 1;
    appended(1);
  }
  if (ncopies) say_skips();
}

/* --- the stdout copy ------------------------------------------------------------------------------ */

/* stdout is gone (closed by the engine): stop copying, keep logging to the files. The copier sees
 * stopped after the send returns and ends there, closing its file (an archive rotation deletes
 * would otherwise keep its disk space). */
static void stop_copy(int err) {
  say("gen-log: the stdout copy stops: %s", strerror(err));
  stdout_copy->stopped = 1;
}

/* Whether to try again: a signal, or a non-blocking stdout that is full (wait until it is not). */
static int retry_stdout(int err) {
  if (err == EINTR) return 1;
  if (err != EAGAIN) return 0;
  struct pollfd p = {1, POLLOUT, 0};
  poll(&p, 1, 1000);
  return 1;
}

static size_t stdout_pipe_size; /* the engine's pipe's capacity when stdout is a pipe, else 0 */

/* How much of want to write to stdout now. With stdout a pipe, wait until half of it (or want) is
 * free: the engine reads in small pieces (conmon: 8 KiB), and a writer blocked on a full pipe is
 * woken for each of them; waiting for room wakes the copy once per half pipe instead, which
 * leaves the core to the app and the file writer. The wait is short while the engine reads and
 * grows to 50 ms while it reads nothing (a stalled engine costs 20 wake-ups a second). */
static size_t stdout_room(size_t want) {
  if (!stdout_pipe_size) return want;
  size_t goal = want < stdout_pipe_size / 2 ? want : stdout_pipe_size / 2;
  long wait_us = 250;
  int last = -1;
  for (;;) {
    int queued;
    if (ioctl(1, FIONREAD, &queued) < 0 || queued < 0) return want;
    size_t room = (size_t)queued < stdout_pipe_size ? stdout_pipe_size - (size_t)queued : 0;
    if (room >= goal) return want < room ? want : room;
    /* A reader that closed a full pipe frees no room: the write's EPIPE says it is gone. */
    struct pollfd p = {1, POLLOUT, 0};
    if (poll(&p, 1, 0) > 0 && (p.revents & POLLERR)) return want;
    wait_us = last >= 0 && queued < last ? 250 : (wait_us < 25000 ? wait_us * 2 : 50000);
    last = queued;
    struct timespec pause = {0, wait_us * 1000};
    nanosleep(&pause, NULL);
  }
}

/* A copy's read of the files came back empty (the file was cut short by hand) or failed: those bytes
 * are passed over, said when it is an error, rather than asked for again and again. */
static size_t unreadable(struct copy *c, ssize_t got, size_t len) {
  if (got < 0) say("gen-log: the %s cannot read the files back: %s; %zu bytes passed over", c->what, strerror(errno), len);
  return len;
}

static void write_stdout(const char *buf, size_t len) {
  while (len) {
    ssize_t n = write(1, buf, stdout_room(len));
    if (n < 0 && retry_stdout(errno)) continue;
    if (n <= 0) {
      stop_copy(n < 0 ? errno : EIO);
      return;
    }
    buf += n;
    len -= (size_t)n;
  }
}

/* Whether p (with at least stamp_len() bytes) starts with a stamp of the -t in force: files written
 * under another -t (a changed setting, a restart) are copied as they are, never cut. */
static int is_stamp(const char *p) {
  if (opt.stamp == STAMP_TAI64N) return p[0] == '@' && p[TAI64N_LEN] == ' ';
  return p[4] == '-' && p[7] == '-' && p[10] == ' ' && p[19] == '.' && p[ISO8601_LEN] == ' ' &&
         p[ISO8601_LEN + 1] == ' ';
}

/* Copy [off, off+len) of fd to stdout; returns bytes copied. Stamps are left out and the prefix
 * put in, line by line; without either, sendfile moves the bytes without a copy into this process. */
static size_t copy_to_stdout(struct copy *c, int fd, uint64_t off, size_t len, int complete, char *buf) {
  if (!opt.prefix && opt.stamp == STAMP_NONE) {
    off_t pos = (off_t)off;
    ssize_t n = sendfile(1, fd, &pos, stdout_room(len));
    if (n > 0) return (size_t)n;
    if (n < 0 && retry_stdout(errno)) return 0;
    if (n < 0 && errno != EINVAL && errno != ENOSYS) {
      stop_copy(errno);
      return 0;
    }
  }
  ssize_t n = pread(fd, buf, len, (off_t)off);
  if (n <= 0) return unreadable(c, n, len);
  size_t slen = stamp_len(), plen = opt.prefix ? strlen(opt.prefix) : 0, i = 0, end = (size_t)n;
  char *out = buf + CHUNK; /* the second half of the buffer */
  size_t o = 0;
  while (i < end) {
    if (c->line_start) {
      if (slen && end - i < slen && !complete) { /* the rest of this stamp comes next round */
        if (i == 0) c->need_more = 1;
        break;
      }
      if (slen && end - i >= slen && is_stamp(buf + i)) i += slen;
      if (plen) {
        memcpy(out + o, opt.prefix, plen);
        o += plen;
        out[o++] = ' ';
      }
      c->line_start = 0;
      if (i == end) break; /* the window ended with the stamp: its line's text comes next round */
    }
    const char *nl = memchr(buf + i, '\n', end - i);
    size_t seg = nl ? (size_t)(nl - (buf + i)) + 1 : end - i;
    if (o + seg > CHUNK) seg = CHUNK - o;
    memcpy(out + o, buf + i, seg);
    o += seg;
    i += seg;
    if (buf[i - 1] == '\n') c->line_start = 1;
    if (o + plen + 1 >= CHUNK) break;
  }
  if (o) write_stdout(out, o);
  return i;
}

/* --- the syslog forwarding ------------------------------------------------------------------------ */

#define FWD_PIECE 7680          /* the longest MSG sent in one message: collectors' default limit is 8 KiB */
#define FWD_LINE_WAIT (64u << 10) /* a line without newline yet is sent in pieces once this long */
#define FWD_BATCH (256u << 10)  /* framed messages written to a stream at once */
#define FWD_BACKOFF_MAX_MS 10000
#define FWD_CONNECT_MS 5000
#define FWD_SAY_EVERY_MS 60000 /* a collector that keeps failing is said at most once a minute */

static struct {
  int stream, local; /* tcp; unix */
  char host[256], port[8];
  struct sockaddr_un sun;
  char app[49], hostname[256];
  int fd;
  int failing; /* read by main at exit: atomic */
  long backoff_ms, said_ms;
  int said, said_failing; /* said ever; said in this failure */
  char why[320];
  char *batch;
  size_t batch_len;
} fwd = {.fd = -1};

static const char *const facility_names[] = {"kern", "user",   "mail", "daemon", "auth",    "syslog",
                                             "lpr",  "news",   "uucp", "cron",   "authpriv", "ftp"};

static int facility_code(const char *name) {
  for (int i = 0; i < (int)(sizeof facility_names / sizeof *facility_names); i++)
    if (!strcmp(name, facility_names[i])) return i;
  if (!strncmp(name, "local", 5) && name[5] >= '0' && name[5] <= '7' && !name[6]) return 16 + name[5] - '0';
  die("-l %s: use kern, user, mail, daemon, auth, syslog, lpr, news, uucp, cron, authpriv, ftp or local0 to local7",
      name);
  return 0;
}

/* RFC 5424's header fields are printable US-ASCII without spaces, of a bounded length. */
static void header_field(char *out, size_t cap, const char *in) {
  size_t n = 0;
  for (; *in && n + 1 < cap; in++) out[n++] = (*in > 32 && *in < 127) ? *in : '_';
  if (!n) out[n++] = '-';
  out[n] = 0;
}

static void parse_target(const char *url) {
  static const char usage_text[] = "use udp://HOST:PORT, tcp://HOST:PORT or unix:///PATH";
  if (!strncmp(url, "unix://", 7)) {
    const char *path = url + 7;
    if (path[0] != '/' || strlen(path) >= sizeof fwd.sun.sun_path)
      die("-f %s: a unix socket is an absolute path of at most %zu bytes", url, sizeof fwd.sun.sun_path - 1);
    fwd.local = 1;
    fwd.sun.sun_family = AF_UNIX;
    strcpy(fwd.sun.sun_path, path);
    return;
  }
  fwd.stream = !strncmp(url, "tcp://", 6);
  if (!fwd.stream && strncmp(url, "udp://", 6)) die("-f %s: %s", url, usage_text);
  const char *host = url + 6, *colon;
  size_t len;
  if (*host == '[') { /* an IPv6 address */
    const char *end = strchr(host, ']');
    if (!end || end[1] != ':') die("-f %s: %s ([ADDRESS]:PORT for IPv6)", url, usage_text);
    host++;
    len = (size_t)(end - host);
    colon = end + 1;
  } else {
    colon = strchr(host, ':');
    len = colon ? (size_t)(colon - host) : 0;
  }
  if (!colon || !len || len >= sizeof fwd.host || strspn(host, "0123456789abcdefghijklmnopqrstuvwxyz"
                                                                "ABCDEFGHIJKLMNOPQRSTUVWXYZ.-:") < len)
    die("-f %s: %s", url, usage_text);
  memcpy(fwd.host, host, len);
  fwd.host[len] = 0;
  number(colon + 1, 1, 65535, "-f: the port");
  snprintf(fwd.port, sizeof fwd.port, "%s", colon + 1);
}

/* A connected socket to the collector, or -1 with fwd.why set. */
static int open_collector(void) {
  if (fwd.local) {
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&fwd.sun, sizeof fwd.sun) == 0) return fd;
    snprintf(fwd.why, sizeof fwd.why, "cannot connect: %s", strerror(errno));
    if (fd >= 0) close(fd);
    return -1;
  }
  struct addrinfo hints, *found;
  memset(&hints, 0, sizeof hints);
  hints.ai_socktype = fwd.stream ? SOCK_STREAM : SOCK_DGRAM;
  int rc = getaddrinfo(fwd.host, fwd.port, &hints, &found);
  if (rc) {
    snprintf(fwd.why, sizeof fwd.why, "cannot resolve %s: %s", fwd.host, gai_strerror(rc));
    return -1;
  }
  int fd = -1;
  for (struct addrinfo *ai = found; ai && fd < 0; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) continue;
    int err = connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 ? 0 : errno;
    if (err == EINPROGRESS) { /* bounded: an address that drops packets must not hold the forwarding */
      struct pollfd p = {fd, POLLOUT, 0};
      socklen_t elen = sizeof err;
      err = poll(&p, 1, FWD_CONNECT_MS) <= 0 ? ETIMEDOUT : getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) ? errno : err;
    }
    if (err) {
      snprintf(fwd.why, sizeof fwd.why, "cannot connect: %s", strerror(err));
      close(fd);
      fd = -1;
    } else {
      fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    }
  }
  freeaddrinfo(found);
  return fd;
}

/* The collector failed: say so once, then retry with backoff (the files keep everything). */
static void collector_failed(void) {
  if (fwd.fd >= 0) close(fwd.fd);
  fwd.fd = -1;
  /* Over UDP a collector that is down fails every other send (the refusal comes back with the
   * next one): one line a minute, not two a try. */
  if (!fwd.failing && (!fwd.said || now_ms() - fwd.said_ms >= FWD_SAY_EVERY_MS)) {
    say("gen-log: forwarding to %s: %s; retrying with backoff, the files keep every line", opt.forward_to, fwd.why);
    fwd.said = fwd.said_failing = 1;
    fwd.said_ms = now_ms();
  }
  __atomic_store_n(&fwd.failing, 1, __ATOMIC_RELAXED);
  fwd.backoff_ms = fwd.backoff_ms ? fwd.backoff_ms * 2 : 100;
  if (fwd.backoff_ms > FWD_BACKOFF_MAX_MS) fwd.backoff_ms = FWD_BACKOFF_MAX_MS;
  sleep_ms(fwd.backoff_ms);
}

static void collector_took(void) {
  if (fwd.failing && fwd.said_failing && (fwd.stream || fwd.local)) /* a UDP send proves nothing */
    say("gen-log: forwarding to %s goes on", opt.forward_to);
  fwd.said_failing = 0;
  __atomic_store_n(&fwd.failing, 0, __ATOMIC_RELAXED);
  fwd.backoff_ms = 0;
}

/* Whether the collector has closed the stream (a restart, say): sending into it would lose lines. */
static int stream_closed(void) {
  struct pollfd p = {fwd.fd, POLLIN | POLLRDHUP, 0};
  if (poll(&p, 1, 0) <= 0) return 0;
  if (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) return 1;
  char junk[512]; /* a collector has nothing to say: whatever it sent is read away */
  ssize_t n = recv(fwd.fd, junk, sizeof junk, MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
}

/* Send one datagram, or the stream batch whole, retrying until the collector takes it. */
static void send_to_collector(const char *buf, size_t len) {
  for (;;) {
    if (fwd.fd < 0 && (fwd.fd = open_collector()) < 0) {
      collector_failed();
      continue;
    }
    if (fwd.stream && stream_closed()) {
      snprintf(fwd.why, sizeof fwd.why, "the collector closed the connection");
      collector_failed();
      continue;
    }
    size_t sent = 0;
    while (sent < len) {
      ssize_t n = send(fwd.fd, buf + sent, len - sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0 || (!fwd.stream && (size_t)n != len)) break;
      sent += (size_t)n;
    }
    if (sent == len) {
      collector_took();
      return;
    }
    snprintf(fwd.why, sizeof fwd.why, "cannot send: %s", strerror(errno));
    collector_failed(); /* a stream's batch is sent again whole: a line may come twice, none is lost */
  }
}

static void flush_batch(void) {
  if (fwd.batch_len) send_to_collector(fwd.batch, fwd.batch_len);
  fwd.batch_len = 0;
}

/* The RFC 5424 time (UTC, microseconds) of the stamp at p, into out; the stamp's length in the
 * files, or 0 when p holds no stamp of the kind given by -t (a file from a run with another -t). */
static size_t stamp_time(const char *p, size_t avail, char *out, size_t cap) {
  size_t slen = stamp_len();
  if (avail < slen) return 0;
  struct timespec ts = {0, 0};
  if (opt.stamp == STAMP_TAI64N) {
    if (p[0] != '@' || p[TAI64N_LEN] != ' ' || strspn(p + 1, "0123456789abcdef") < 24) return 0;
    uint64_t secs = 0, nanos = 0;
    for (int i = 0; i < 16; i++) secs = secs * 16 + (uint64_t)(p[1 + i] <= '9' ? p[1 + i] - '0' : p[1 + i] - 'a' + 10);
    for (int i = 0; i < 8; i++) nanos = nanos * 16 + (uint64_t)(p[17 + i] <= '9' ? p[17 + i] - '0' : p[17 + i] - 'a' + 10);
    if (secs < TAI64_BASE + TAI_UTC_OFFSET || nanos > 999999999) return 0;
    ts.tv_sec = (time_t)(secs - TAI64_BASE - TAI_UTC_OFFSET);
    ts.tv_nsec = (long)nanos;
  } else {
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    char tail[3] = {0};
    long nanos;
    if (sscanf(p, "%4d-%2d-%2d %2d:%2d:%2d.%9ld%2c", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
               &tm.tm_sec, &nanos, tail) != 8 || strcmp(tail, "  ") || p[ISO8601_LEN] != ' ')
      return 0;
    tm.tm_year -= 1900, tm.tm_mon -= 1, tm.tm_isdst = -1; /* written in local time, as s6-log's T */
    ts.tv_sec = mktime(&tm);
    ts.tv_nsec = nanos;
  }
  struct tm utc;
  if (ts.tv_nsec < 0 || ts.tv_nsec > 999999999 || !gmtime_r(&ts.tv_sec, &utc) || utc.tm_year < -1900 ||
      utc.tm_year > 8099)
    return 0;
  snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday,
           utc.tm_hour % 24, utc.tm_min % 60, utc.tm_sec % 61, (int)(ts.tv_nsec / 1000));
  return slen;
}

/* One line (or a piece of a long one) as a message: a datagram, or framed into the stream batch. */
static void forward_message(const char *time_text, const char *text, size_t len) {
  char head[400];
  int hlen = snprintf(head, sizeof head, "<%d>1 %s %s %s - - - ", opt.facility * 8 + 6, time_text, fwd.hostname,
                      fwd.app);
  char *msg = fwd.batch + fwd.batch_len;
  if (fwd.stream) {
    if (fwd.batch_len + 16 + (size_t)hlen + len > FWD_BATCH) {
      flush_batch();
      msg = fwd.batch;
    }
    msg += sprintf(msg, "%zu ", (size_t)hlen + len);
  }
  memcpy(msg, head, (size_t)hlen);
  memcpy(msg + hlen, text, len);
  size_t total = (size_t)(msg - (fwd.batch + fwd.batch_len)) + (size_t)hlen + len;
  if (fwd.stream) {
    fwd.batch_len += total;
  } else {
    send_to_collector(fwd.batch, total);
  }
}

/* Forward the whole lines of [off, off+len) of fd (and a last one without newline when the file is
 * complete); returns the bytes forwarded. A line not yet ended is left for the next round. */
static size_t forward_lines(struct copy *c, int fd, uint64_t off, size_t len, int complete, char *buf) {
  ssize_t got = pread(fd, buf, len, (off_t)off);
  if (got <= 0) return unreadable(c, got, len);
  size_t n = (size_t)got, i = 0;
  complete = complete && n == len;
  while (i < n) {
    size_t start = i;
    char time_text[64] = "-";
    if (c->line_start && opt.stamp != STAMP_NONE) {
      if (n - i < stamp_len() && !complete) break;
      i += stamp_time(buf + i, n - i, time_text, sizeof time_text);
    }
    const char *nl = memchr(buf + i, '\n', n - i);
    size_t text_len = nl ? (size_t)(nl - (buf + i)) : n - i;
    if (!nl && !complete && text_len < FWD_LINE_WAIT) {
      i = start;
      break;
    }
    for (size_t piece = 0; piece < text_len || piece == 0; piece += FWD_PIECE) {
      size_t plen = text_len - piece < FWD_PIECE ? text_len - piece : FWD_PIECE;
      forward_message(time_text, buf + i + piece, plen);
      if (!text_len) break;
    }
    i += text_len + (nl ? 1 : 0);
    c->line_start = nl != NULL;
  }
  flush_batch();
  c->need_more = i == 0;
  return i;
}

static void start_forwarding(void) {
  parse_target(opt.forward_to);
  char name[256] = "";
  gethostname(name, sizeof name - 1);
  header_field(fwd.hostname, sizeof fwd.hostname, name);
  const char *base = strrchr(opt.dir, '/');
  header_field(fwd.app, sizeof fwd.app, opt.app_name ? opt.app_name : base && base[1] ? base + 1 : opt.dir);
  fwd.batch = malloc(FWD_BATCH + 512);
  if (!fwd.batch) die("out of memory");
}

/* --- the copy threads ------------------------------------------------------------------------------ */

static void *copier(void *arg) {
  struct copy *c = arg;
  char *buf = malloc(2 * (size_t)CHUNK + 4096);
  if (!buf) die("out of memory");
  int fd = -1;
  struct copier_state cs = {STATE_MAGIC, 0, 0, 1};
  pthread_mutex_lock(&lock);
  for (;;) {
    struct segment *s = segment_by_seq(c->seq);
    if (!s) { /* the list ran out: wait for the writer */
      if (input_done) break;
      pthread_cond_wait(&changed, &lock);
      continue;
    }
    if (s->deleted && c->open_seq != s->seq) { /* rotated away before the copy reached it */
      c->seq++, c->off = 0;
      continue;
    }
    if (c->off >= s->size) {
      if (!s->is_current) { /* a complete archive: on to the next file */
        c->seq++, c->off = 0;
        forget_copied_segments();
        continue;
      }
      if (input_done) break;
      pthread_cond_wait(&changed, &lock);
      continue;
    }
    if (c->open_seq != s->seq) {
      if (fd >= 0) close(fd);
      fd = openat(dir_fd, s->name, O_RDONLY | O_CLOEXEC);
      c->open_seq = fd >= 0 ? s->seq : UINT64_MAX;
      if (fd < 0) { /* deleted by hand: skip it */
        c->seq++, c->off = 0;
        continue;
      }
      cs.ino = s->ino;
    }
    uint64_t off = c->off, len = s->size - c->off, seq = c->seq;
    int complete = (!s->is_current || input_done) && len <= CHUNK;
    pthread_mutex_unlock(&lock);
    size_t n = c->send(c, fd, off, len > CHUNK ? CHUNK : (size_t)len, complete, buf);
    if (c->stopped) {
      pthread_mutex_lock(&lock);
      break;
    }
    cs.offset = off + n;
    cs.line_start = (uint64_t)c->line_start;
    pwrite_state(&cs, sizeof cs, c->state_at);
    pthread_mutex_lock(&lock);
    c->off = off + n;
    progress += n;
    if (c->need_more) { /* a line not yet ended: wait for more of it (or the end of the input) */
      c->need_more = 0;
      s = segment_by_seq(seq);
      if (s && s->is_current && s->size == off + len && !input_done) pthread_cond_wait(&changed, &lock);
    }
  }
  c->done = 1;
  pthread_cond_broadcast(&changed);
  pthread_mutex_unlock(&lock);
  if (fd >= 0) close(fd);
  free(buf);
  return NULL;
}

/* The segment list: the archives, oldest first, and current. */
static void list_segments(void) {
  size_t n;
  char **names = list_archives(&n);
  for (size_t i = 0; i < n; i++) {
    struct stat st;
    if (fstatat(dir_fd, names[i], &st, 0) == 0) add_segment(names[i], (uint64_t)st.st_ino, (uint64_t)st.st_size, 0);
  }
  free_names(names, n);
  add_segment("current", cur_ino, cur_size, 1);
}

/* Where a copy starts: where the last logger's copy stopped, if that file is still here; else at the
 * end of current (a new start copies only new output). */
static void place_copy(struct copy *c) {
  struct copier_state cs;
  int resume = state_fd >= 0 && pread(state_fd, &cs, sizeof cs, c->state_at) == (ssize_t)sizeof cs &&
               cs.magic == STATE_MAGIC;
  struct segment *at = &segs[nsegs - 1]; /* current */
  c->off = cur_size;
  c->line_start = line_start; /* from the end of current: where the writer is, maybe mid-line */
  for (size_t i = 0; resume && i < nsegs; i++)
    if (segs[i].ino == cs.ino && cs.offset <= segs[i].size) {
      at = &segs[i];
      c->off = cs.offset;
      c->line_start = (int)cs.line_start;
      break;
    }
  c->seq = at->seq;
  /* Recorded at once: a logger that ends before its copy sent anything (a collector that is down)
   * leaves its successor the place to start from. */
  struct copier_state placed = {STATE_MAGIC, at->ino, c->off, (uint64_t)c->line_start};
  pwrite_state(&placed, sizeof placed, c->state_at);
}

static void start_copy(const char *what, size_t (*send)(struct copy *, int, uint64_t, size_t, int, char *),
                       off_t state_at) {
  struct copy *c = &copies[ncopies++];
  c->what = what, c->send = send, c->state_at = state_at, c->open_seq = UINT64_MAX;
  place_copy(c);
  if (send == copy_to_stdout) stdout_copy = c;
}

/* --- main ------------------------------------------------------------------------------------------ */

/* At EOF: the copies get as long as they need while they make progress; DRAIN_MS without any (a
 * stalled engine, a collector that takes nothing) and gen-log gives up on them and exits, its files
 * complete. A collector that cannot be reached at all is not waited for: the state file keeps the
 * forwarding's place for the next start on these files. */
static void drain_copies(void) {
  pthread_mutex_lock(&lock);
  input_done = 1;
  pthread_cond_broadcast(&changed);
  uint64_t seen = progress;
  long idle_since = now_ms();
  for (;;) {
    size_t running = 0;
    for (size_t k = 0; k < ncopies; k++)
      running += !copies[k].done && !(copies[k].send == forward_lines && __atomic_load_n(&fwd.failing, __ATOMIC_RELAXED));
    if (!running) break;
    if (progress != seen) {
      seen = progress;
      idle_since = now_ms();
    }
    long left = idle_since + opt.drain_ms - now_ms();
    if (left <= 0) break;
    if (left > 100) left = 100; /* look at the progress ten times a second */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += left * 1000000L;
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(&changed, &lock, &ts);
  }
  for (size_t k = 0; k < ncopies; k++) {
    struct copy *c = &copies[k];
    if (c->done) continue;
    uint64_t behind = 0;
    for (size_t i = 0; i < nsegs; i++)
      if (segs[i].seq >= c->seq && !segs[i].deleted) behind += segs[i].size - (segs[i].seq == c->seq ? c->off : 0);
    if (c == stdout_copy)
      say("gen-log: stdout took nothing for %ld ms at exit: its last %llu bytes are in the files only", opt.drain_ms,
          (unsigned long long)behind);
    else if (__atomic_load_n(&fwd.failing, __ATOMIC_RELAXED))
      say("gen-log: forwarding to %s: the collector cannot be reached at exit: the last %llu bytes are in the files "
          "only (a next start on them forwards them)",
          opt.forward_to, (unsigned long long)behind);
    else
      say("gen-log: forwarding to %s made no progress for %ld ms at exit: the last %llu bytes are in the files "
          "only (a next start on them forwards them)",
          opt.forward_to, opt.drain_ms, (unsigned long long)behind);
  }
  pthread_mutex_unlock(&lock);
}

int main(int argc, char **argv) {
  int c;
  opterr = 0; /* one line of our own instead of getopt's */
  int check_only = 0;
  while ((c = getopt(argc, argv, "+t:s:n:op:d:ef:a:l:c")) != -1) {
    switch (c) {
      case 't':
        if (!strcmp(optarg, "none")) opt.stamp = STAMP_NONE;
        else if (!strcmp(optarg, "tai64n")) opt.stamp = STAMP_TAI64N;
        else if (!strcmp(optarg, "iso8601")) opt.stamp = STAMP_ISO8601;
        else die("-t %s: use none, tai64n or iso8601", optarg);
        break;
      case 's': opt.max_size = number(optarg, 4096, UINT64_MAX / 2, "-s"); break;
      case 'n': opt.keep = (unsigned)number(optarg, 0, 100000, "-n"); break;
      case 'o': opt.copy = 1; break;
      case 'p': opt.prefix = optarg; break;
      case 'd': opt.drain_ms = (long)number(optarg, 0, 86400000, "-d"); break;
      case 'e': opt.end_on_term = 1; break;
      case 'f': opt.forward_to = optarg; break;
      case 'a': opt.app_name = optarg; break;
      case 'l': opt.facility = facility_code(optarg); break;
      case 'c': check_only = 1; break;
      default: usage(strchr("tsnpdfal", optopt) ? "an option lacks its value" : "unknown option");
    }
  }
  if (check_only) {
    if (opt.forward_to && *opt.forward_to) parse_target(opt.forward_to);
    return 0;
  }
  if (optind != argc - 1) usage(optind < argc ? "one directory only" : "no log directory");
  opt.dir = argv[optind];
  if (opt.prefix && strlen(opt.prefix) > 200) die("-p: a prefix of at most 200 bytes");
  if (opt.forward_to && !*opt.forward_to) opt.forward_to = NULL; /* -f '': no forwarding */
  if (opt.forward_to) start_forwarding();

  /* The logger lives until EOF: s6-supervise's SIGTERM at stop must not cut the log short. With
   * -e it ends the input instead, once the pipe is empty; blocked but while waiting for input, and
   * so blocked in the copier thread too (created later, it inherits the mask). */
  if (opt.end_on_term) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &term, &unblocked);
    sigdelset(&unblocked, SIGTERM);
  } else {
    signal(SIGTERM, SIG_IGN);
  }
  signal(SIGPIPE, SIG_IGN);
  signal(SIGHUP, SIG_IGN);

  if (mkdir(opt.dir, 02755) < 0 && errno != EEXIST) die("cannot create %s: %s", opt.dir, strerror(errno));
  dir_fd = open(opt.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) die("cannot open %s: %s", opt.dir, strerror(errno));
  int lock_fd = openat(dir_fd, "lock", O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (lock_fd < 0) die("cannot open %s/lock: %s", opt.dir, strerror(errno));
  if (flock(lock_fd, LOCK_EX | LOCK_NB) < 0)
    die("%s is in use by another logger (its lock file is held): give each logger its own directory", opt.dir);
  state_fd = openat(dir_fd, STATE_FILE, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (state_fd < 0) die("cannot open %s/%s: %s", opt.dir, STATE_FILE, strerror(errno));

  in_buf = malloc(CHUNK);
  out_buf = malloc(OUT_CAP);
  if (!in_buf || !out_buf) die("out of memory");
  struct stat st;
  stdin_is_pipe = fstat(0, &st) == 0 && S_ISFIFO(st.st_mode);
  if (stdin_is_pipe) {
    devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (devnull < 0 || pipe2(scratch, O_CLOEXEC) < 0) die("cannot set up: %s", strerror(errno));
    /* Large pipes: fewer wake-ups, and room for a burst while the disk is slow (best effort). */
    fcntl(0, F_SETPIPE_SZ, CHUNK);
    if (fcntl(scratch[0], F_SETPIPE_SZ, CHUNK) < 0) fcntl(scratch[0], F_SETPIPE_SZ, 65536);
  }
  open_current();
  recover();
  if (opt.copy && fstat(1, &st) == 0 && S_ISFIFO(st.st_mode)) {
    fcntl(1, F_SETPIPE_SZ, CHUNK); /* the engine's pipe: room for a burst, fewer wake-ups (best effort) */
    int size = fcntl(1, F_GETPIPE_SZ);
    stdout_pipe_size = size > 0 ? (size_t)size : 0;
  }
  if (opt.copy || opt.forward_to) list_segments();
  if (opt.copy) start_copy("stdout copy", copy_to_stdout, COPIER_STATE_AT);
  if (opt.forward_to) start_copy("syslog forwarding", forward_lines, FORWARD_STATE_AT);
  pthread_mutex_lock(&lock);
  forget_copied_segments();
  pthread_mutex_unlock(&lock);
  for (size_t k = 0; k < ncopies; k++)
    if (pthread_create(&copies[k].thread, NULL, copier, &copies[k])) die("cannot start the %s", copies[k].what);
  if (cur_size >= opt.max_size) rotate();
  write_loop();
  fchmod(cur_fd, 0744); /* complete, as s6-log leaves it */
  if (ncopies) drain_copies();
  return 0;
}
