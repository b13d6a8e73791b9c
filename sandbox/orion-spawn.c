/*
 * orion-spawn: starts action processes for an Orion daemon (sandbox/spawn-helper.ts).
 *
 * Node.js starts a child with fork(): the kernel copies the page tables of the whole
 * daemon (1.6 ms of CPU at 57 MB, 3.3 ms at 400 MB, measured) and the event loop waits
 * until the child has exec'd, which on a loaded machine means until the child gets a core.
 * This small process starts them with posix_spawn (vfork semantics: nothing copied),
 * collects their output and exit status, and reports back over its stdout, so the daemon
 * pays a pipe write and read per action instead.
 *
 * Usage: orion-spawn MAX_OUTPUT_BYTES   (requests on stdin, replies on stdout)
 *
 * Every integer is a little-endian u32 (i32 where signed); a string is its length then
 * its bytes. Each frame starts with the length of what follows.
 *   request: id, flags, cwd, argc, argv..., envc, "NAME=value"..., then with flag bit 0
 *            a cgroup.procs path: the process starts inside that cgroup, so the cgroup
 *            counts everything it starts (see "keepers" below)
 *   reply:   type (one byte), id, then by type
 *     'S' started: pid, then the pid of the cgroup's keeper (0 without a cgroup)
 *     'F' could not start: errno, then the pid of the cgroup's keeper (0 when none)
 *     'X' exited: signalled (one byte, 0 or 1), exit code or signal number
 *     'C' its stdout and stderr reached end of file (after 'X'): stdout, stderr (strings),
 *         then one byte: bit 0 set when stdout was cut at MAX_OUTPUT_BYTES, bit 1 when
 *         stderr was (the daemon does not read this byte)
 * Each command runs in a new session (its own process group), with stdin from /dev/null,
 * the environment it was given and default signal handling; a name without '/' is looked
 * up in the PATH of that environment. When its stdin closes (the daemon exited), the
 * helper kills every process group it started and exits.
 *
 * Keepers. A process moved into a cgroup after it started (a write of its pid to
 * cgroup.procs) takes the kernel's cgroup_threadgroup_rwsem for writing, which waits for
 * an RCU grace period unless the cgroup hierarchy is mounted with favordynmods: 5-15 ms
 * per command on a 2-core VM (measured), during which its slot does nothing. A child
 * is born in its parent's cgroup for free, so the helper keeps one small process (a fork
 * of itself, the cgroup's "keeper") in each cgroup it is asked to start commands in: the
 * keeper joins the cgroup once, and starts each command there with clone(CLONE_PARENT),
 * so the command is still the helper's child (its exit and output are collected here).
 * The keeper counts as one process of its cgroup and must not be killed with the
 * command's processes: its pid is in every 'S' and 'F' reply. A keeper ends when the
 * helper does, or when killed (the daemon removing the cgroup); the next command for its
 * cgroup starts a new one.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_FRAME (64u << 20)

/* A growable byte buffer (a command's output, a keeper's request). */
struct buf {
  char *data;
  size_t len, cap;
};

struct stream {
  int fd; /* -1 once at end of file */
  struct buf b;
  int cut;
};

struct job {
  uint32_t id;
  pid_t pid;
  int exited;
  struct stream out, err;
  struct job *next;
};

static struct job *jobs;
static size_t max_output;
static int chld_pipe[2];

struct keeper {
  char *procs; /* the cgroup.procs file of its cgroup */
  pid_t pid;
  int sock; /* requests to it, its replies */
  struct keeper *next;
};

static struct keeper *keepers;

static void kill_keepers(void) {
  for (struct keeper *k = keepers; k; k = k->next)
    kill(k->pid, SIGKILL);
}

static void die(const char *what) {
  fprintf(stderr, "orion-spawn: %s: %s\n", what, strerror(errno));
  for (struct job *j = jobs; j; j = j->next)
    kill(-j->pid, SIGKILL);
  kill_keepers();
  exit(2);
}

static void on_chld(int sig) {
  (void)sig;
  int saved = errno;
  char b = 0;
  (void)!write(chld_pipe[1], &b, 1);
  errno = saved;
}

/* ---------- replies ---------- */

/* Reads exactly n bytes; 0 on success, -1 at end of file or on an error. */
static int read_full(int fd, void *buf, size_t n) {
  char *p = buf;
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

static int write_full(int fd, const void *buf, size_t n) {
  const char *p = buf;
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static void write_all(const void *buf, size_t n) {
  if (write_full(1, buf, n) < 0) die("writing a reply");
}

static void put_u32(char *p, uint32_t v) {
  p[0] = (char)(v & 0xff);
  p[1] = (char)((v >> 8) & 0xff);
  p[2] = (char)((v >> 16) & 0xff);
  p[3] = (char)((v >> 24) & 0xff);
}

static void buf_put(struct buf *b, const void *p, size_t n) {
  if (n == 0) return;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) die("realloc");
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
}

static void buf_u32(struct buf *b, uint32_t v) {
  char p[4];
  put_u32(p, v);
  buf_put(b, p, 4);
}

static void buf_str(struct buf *b, const char *s) {
  size_t n = strlen(s);
  buf_u32(b, (uint32_t)n);
  buf_put(b, s, n);
}

static void reply_small(char type, uint32_t id, const char *body, size_t n) {
  char head[9];
  put_u32(head, (uint32_t)(5 + n));
  head[4] = type;
  put_u32(head + 5, id);
  write_all(head, 9);
  if (n) write_all(body, n);
}

static void reply_closed(struct job *j) {
  char head[13];
  size_t n = 5 + 4 + j->out.b.len + 4 + j->err.b.len + 1;
  put_u32(head, (uint32_t)n);
  head[4] = 'C';
  put_u32(head + 5, j->id);
  put_u32(head + 9, (uint32_t)j->out.b.len);
  write_all(head, 13);
  if (j->out.b.len) write_all(j->out.b.data, j->out.b.len);
  char len[4];
  put_u32(len, (uint32_t)j->err.b.len);
  write_all(len, 4);
  if (j->err.b.len) write_all(j->err.b.data, j->err.b.len);
  char flags = (char)((j->out.cut ? 1 : 0) | (j->err.cut ? 2 : 0));
  write_all(&flags, 1);
}

static void finish_if_done(struct job *j) {
  if (!j->exited || j->out.fd >= 0 || j->err.fd >= 0) return;
  reply_closed(j);
  for (struct job **p = &jobs; *p; p = &(*p)->next) {
    if (*p == j) {
      *p = j->next;
      break;
    }
  }
  free(j->out.b.data);
  free(j->err.b.data);
  free(j);
}

/* ---------- requests ---------- */

struct reader {
  const unsigned char *p, *end;
  int bad;
};

static uint32_t get_u32(struct reader *r) {
  if (r->end - r->p < 4) {
    r->bad = 1;
    return 0;
  }
  uint32_t v = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 | (uint32_t)r->p[3] << 24;
  r->p += 4;
  return v;
}

/* A NUL-terminated copy of the next string (NUL bytes inside are refused). */
static char *get_str(struct reader *r) {
  uint32_t n = get_u32(r);
  if (r->bad || (size_t)(r->end - r->p) < n || memchr(r->p, 0, n)) {
    r->bad = 1;
    return NULL;
  }
  char *s = malloc((size_t)n + 1);
  if (!s) die("malloc");
  memcpy(s, r->p, n);
  s[n] = 0;
  r->p += n;
  return s;
}

/* The program to exec: `file` itself when it names a path, else the first executable regular file in PATH. */
static char *resolve(const char *file, char **envp, const char *cwd, int *err) {
  if (strchr(file, '/')) return strdup(file);
  const char *path = "/usr/local/bin:/usr/bin:/bin";
  for (char **e = envp; *e; e++)
    if (strncmp(*e, "PATH=", 5) == 0) path = *e + 5;
  *err = ENOENT;
  const char *p = path;
  for (;;) {
    const char *colon = strchr(p, ':');
    size_t dlen = colon ? (size_t)(colon - p) : strlen(p);
    /* An empty entry is the working directory; a relative one is relative to it. */
    char *cand;
    if (dlen == 0) {
      if (asprintf(&cand, "%s/%s", cwd, file) < 0) die("asprintf");
    } else if (p[0] != '/') {
      if (asprintf(&cand, "%s/%.*s/%s", cwd, (int)dlen, p, file) < 0) die("asprintf");
    } else if (asprintf(&cand, "%.*s/%s", (int)dlen, p, file) < 0) {
      die("asprintf");
    }
    struct stat st;
    if (stat(cand, &st) == 0 && S_ISREG(st.st_mode)) {
      if (access(cand, X_OK) == 0) return cand;
      *err = EACCES;
    }
    free(cand);
    if (!colon) return NULL;
    p = colon + 1;
  }
}

static void set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) die("fcntl");
}

/*
 * In a new child: becomes `prog` as posix_spawn would start it (new session, stdin
 * /dev/null, stdout and stderr on `out`/`err`, directory `cwd`, no blocked signals, default
 * dispositions). On failure writes the errno to `report` (close-on-exec: end of file there
 * means the exec succeeded) and exits.
 */
static void become(int report, const char *prog, char **argv, char **envp, const char *cwd, int out, int err) {
  int e = 0;
  sigset_t none;
  sigemptyset(&none);
  if (setsid() < 0) e = errno;
  for (int s = 1; s < 32 && !e; s++)
    if (s != SIGKILL && s != SIGSTOP) signal(s, SIG_DFL);
  if (!e) sigprocmask(SIG_SETMASK, &none, NULL);
  int dn = e ? -1 : open("/dev/null", O_RDONLY);
  if (!e && (dn < 0 || dup2(dn, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)) e = errno;
  if (!e && chdir(cwd) < 0) e = errno;
  if (!e) {
    execve(prog, argv, envp);
    e = errno;
  }
  if (write(report, &e, sizeof e) < 0) _exit(127);
  _exit(127);
}

/* ---------- keepers (see the top of this file) ---------- */

/*
 * A keeper's request: the frame's length with three descriptors attached (the command's
 * stdout, its stderr, the exec report pipe), then prog, cwd, argc, argv..., envc, env...
 * encoded as requests are. Its reply: an i32, the command's pid or minus an errno.
 */
static void keeper_loop(int sock) {
  for (;;) {
    unsigned char lenb[4];
    int fds[3] = {-1, -1, -1};
    char control[CMSG_SPACE(sizeof fds)];
    struct iovec iov = {lenb, sizeof lenb};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
    ssize_t got;
    do got = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_WAITALL);
    while (got < 0 && errno == EINTR);
    if (got != (ssize_t)sizeof lenb) _exit(0); /* the helper is gone */
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (!c || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof fds)) _exit(3);
    memcpy(fds, CMSG_DATA(c), sizeof fds);
    struct reader lr = {lenb, lenb + sizeof lenb, 0};
    uint32_t n = get_u32(&lr);
    unsigned char *body = malloc(n ? n : 1);
    if (!body || read_full(sock, body, n) < 0) _exit(3);
    struct reader r = {body, body + n, 0};
    char *prog = get_str(&r), *cwd = get_str(&r);
    uint32_t argc = get_u32(&r);
    if (r.bad || argc > n / 4) _exit(3);
    char **argv = calloc((size_t)argc + 1, sizeof(char *));
    for (uint32_t i = 0; argv && i < argc; i++) argv[i] = get_str(&r);
    uint32_t envc = get_u32(&r);
    if (!argv || r.bad || envc > n / 4) _exit(3);
    char **envp = calloc((size_t)envc + 1, sizeof(char *));
    for (uint32_t i = 0; envp && i < envc; i++) envp[i] = get_str(&r);
    if (!envp || r.bad) _exit(3);
    /* Born in this cgroup, and the helper's child, not this keeper's. */
    pid_t child = (pid_t)syscall(SYS_clone, CLONE_PARENT | SIGCHLD, NULL, NULL, NULL, NULL);
    if (child == 0) become(fds[2], prog, argv, envp, cwd, fds[0], fds[1]);
    int32_t reply = child < 0 ? -errno : child;
    for (int i = 0; i < 3; i++) close(fds[i]);
    for (uint32_t i = 0; i < argc; i++) free(argv[i]);
    for (uint32_t i = 0; i < envc; i++) free(envp[i]);
    free(argv);
    free(envp);
    free(prog);
    free(cwd);
    free(body);
    if (write_full(sock, &reply, sizeof reply) < 0) _exit(0);
  }
}

/* Starts a keeper in the cgroup whose cgroup.procs is `procs`; NULL with *err set when it cannot join it. */
static struct keeper *keeper_start(const char *procs, int *err) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
    *err = errno;
    return NULL;
  }
  pid_t helper = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    *err = errno;
    close(sv[0]);
    close(sv[1]);
    return NULL;
  }
  if (pid == 0) {
    /* Ends with the helper; holds none of its descriptors (the daemon's pipes, the commands' output). */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != helper) _exit(0);
    int e = 0;
    char me[24];
    int len = snprintf(me, sizeof me, "%d", (int)getpid());
    int fd = open(procs, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, me, (size_t)len) != len) e = errno ? errno : EIO;
    if (fd >= 0) close(fd);
    if (write_full(sv[1], &e, sizeof e) < 0 || e) _exit(0);
    int dn = open("/dev/null", O_RDWR);
    if (dn < 0 || dup2(dn, 0) < 0 || dup2(dn, 1) < 0 || (sv[1] != 3 && dup3(sv[1], 3, O_CLOEXEC) < 0)) _exit(3);
    close_range(4, ~0U, 0);
    signal(SIGCHLD, SIG_DFL);
    keeper_loop(3);
  }
  close(sv[1]);
  int e = EIO;
  if (read_full(sv[0], &e, sizeof e) < 0 || e != 0) {
    close(sv[0]);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    *err = e ? e : EIO;
    return NULL;
  }
  struct keeper *k = calloc(1, sizeof *k);
  if (!k || !(k->procs = strdup(procs))) die("calloc");
  k->pid = pid;
  k->sock = sv[0];
  k->next = keepers;
  keepers = k;
  return k;
}

/* Forgets the keeper: it was reaped, or (`end`) it stopped answering and is killed, to be reaped with the other children. */
static void keeper_drop(struct keeper *k, int end) {
  for (struct keeper **p = &keepers; *p; p = &(*p)->next) {
    if (*p == k) {
      *p = k->next;
      break;
    }
  }
  if (end) kill(k->pid, SIGKILL);
  close(k->sock);
  free(k->procs);
  free(k);
}

/* Sends one request to the keeper and reads its reply (the command's pid, or minus an errno); 1 when the keeper is gone. */
static int keeper_ask(struct keeper *k, const struct buf *body, const int fds[3], int32_t *reply) {
  char lenb[4];
  put_u32(lenb, (uint32_t)body->len);
  char control[CMSG_SPACE(3 * sizeof(int))];
  memset(control, 0, sizeof control);
  struct iovec iov = {lenb, sizeof lenb};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(3 * sizeof(int));
  memcpy(CMSG_DATA(c), fds, 3 * sizeof(int));
  ssize_t sent;
  do sent = sendmsg(k->sock, &msg, MSG_NOSIGNAL);
  while (sent < 0 && errno == EINTR);
  if (sent != (ssize_t)sizeof lenb) return 1;
  if (write_full(k->sock, body->data, body->len) < 0) return 1;
  if (read_full(k->sock, reply, sizeof *reply) < 0) return 1;
  return 0;
}

/*
 * Starts `prog` inside the cgroup whose cgroup.procs is `procs`, through that cgroup's
 * keeper (started first if there is none, or again if it died). Returns 0 with *pid set
 * once the exec succeeded, else the errno of the step that failed (the child is reaped);
 * *keeper is the keeper's pid, 0 when there is none.
 */
static int spawn_in(const char *procs, const char *prog, char **argv, char **envp, const char *cwd, int out, int err, pid_t *pid, pid_t *keeper) {
  struct keeper *k = NULL;
  for (struct keeper *x = keepers; x; x = x->next)
    if (strcmp(x->procs, procs) == 0) k = x;
  struct buf body = {0};
  buf_str(&body, prog);
  buf_str(&body, cwd);
  uint32_t argc = 0, envc = 0;
  while (argv[argc]) argc++;
  while (envp[envc]) envc++;
  buf_u32(&body, argc);
  for (uint32_t i = 0; i < argc; i++) buf_str(&body, argv[i]);
  buf_u32(&body, envc);
  for (uint32_t i = 0; i < envc; i++) buf_str(&body, envp[i]);
  int e = 0;
  pid_t child = -1;
  int report[2] = {-1, -1};
  /* A keeper that died since its last command is replaced once. */
  for (int attempt = 0; attempt < 2 && child < 0 && !e; attempt++) {
    if (!k && !(k = keeper_start(procs, &e))) break;
    if (pipe2(report, O_CLOEXEC) < 0) {
      e = errno;
      break;
    }
    int fds[3] = {out, err, report[1]};
    int32_t reply = 0;
    int gone = keeper_ask(k, &body, fds, &reply);
    close(report[1]);
    if (gone || reply < 0) {
      close(report[0]);
      if (gone) {
        keeper_drop(k, 1);
        k = NULL;
      } else {
        e = -reply;
      }
      continue;
    }
    child = reply;
  }
  free(body.data);
  *keeper = k ? k->pid : 0;
  if (child < 0) return e ? e : EIO;
  int ee = 0;
  ssize_t got;
  do got = read(report[0], &ee, sizeof ee);
  while (got < 0 && errno == EINTR);
  close(report[0]);
  if (got == (ssize_t)sizeof ee) {
    while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {
    }
    return ee ? ee : EIO;
  }
  *pid = child;
  return 0;
}

static void start(const unsigned char *frame, size_t n) {
  struct reader r = {frame, frame + n, 0};
  uint32_t id = get_u32(&r);
  uint32_t flags = get_u32(&r);
  char *cwd = get_str(&r);
  uint32_t argc = get_u32(&r);
  if (r.bad || argc == 0 || argc > n / 4) {
    fprintf(stderr, "orion-spawn: malformed request (argument count)\n");
    exit(2);
  }
  char **argv = calloc((size_t)argc + 1, sizeof(char *));
  if (!argv) die("calloc");
  for (uint32_t i = 0; i < argc; i++) argv[i] = get_str(&r);
  uint32_t envc = get_u32(&r);
  if (r.bad || envc > n / 4) {
    fprintf(stderr, "orion-spawn: malformed request (environment)\n");
    exit(2);
  }
  char **envp = calloc((size_t)envc + 1, sizeof(char *));
  if (!envp) die("calloc");
  for (uint32_t i = 0; i < envc; i++) envp[i] = get_str(&r);
  char *cgroup = (flags & 1) ? get_str(&r) : NULL;
  if (r.bad || r.p != r.end || (flags & ~1u) != 0) {
    fprintf(stderr, "orion-spawn: malformed request\n");
    exit(2);
  }

  int err = 0;
  char *prog = resolve(argv[0], envp, cwd, &err);
  pid_t pid = 0, keeper = 0;
  int out[2] = {-1, -1}, errp[2] = {-1, -1};
  if (prog) {
    if (pipe2(out, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) die("pipe2");
    sigset_t none, all;
    sigemptyset(&none);
    sigemptyset(&all);
    for (int s = 1; s < 32; s++)
      if (s != SIGKILL && s != SIGSTOP) sigaddset(&all, s);
    if (cgroup) {
      err = spawn_in(cgroup, prog, argv, envp, cwd, out[1], errp[1], &pid, &keeper);
    } else {
      posix_spawn_file_actions_t fa;
      posix_spawnattr_t at;
      posix_spawn_file_actions_init(&fa);
      posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
      posix_spawn_file_actions_adddup2(&fa, out[1], 1);
      posix_spawn_file_actions_adddup2(&fa, errp[1], 2);
      posix_spawn_file_actions_addchdir_np(&fa, cwd);
      posix_spawnattr_init(&at);
      posix_spawnattr_setsigmask(&at, &none);
      posix_spawnattr_setsigdefault(&at, &all);
      posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
      err = posix_spawn(&pid, prog, &fa, &at, argv, envp);
      posix_spawn_file_actions_destroy(&fa);
      posix_spawnattr_destroy(&at);
    }
    close(out[1]);
    close(errp[1]);
    free(prog);
  }
  for (uint32_t i = 0; i < argc; i++) free(argv[i]);
  for (uint32_t i = 0; i < envc; i++) free(envp[i]);
  free(argv);
  free(envp);
  free(cwd);
  free(cgroup);

  char body[8];
  put_u32(body + 4, (uint32_t)keeper);
  if (err != 0) {
    if (out[0] >= 0) close(out[0]);
    if (errp[0] >= 0) close(errp[0]);
    put_u32(body, (uint32_t)err);
    reply_small('F', id, body, 8);
    return;
  }
  struct job *j = calloc(1, sizeof *j);
  if (!j) die("calloc");
  j->id = id;
  j->pid = pid;
  j->out.fd = out[0];
  j->err.fd = errp[0];
  set_nonblock(j->out.fd);
  set_nonblock(j->err.fd);
  j->next = jobs;
  jobs = j;
  put_u32(body, (uint32_t)pid);
  reply_small('S', id, body, 8);
}

/* ---------- output and exits ---------- */

static void drain(struct job *j, struct stream *s) {
  char buf[65536];
  for (;;) {
    ssize_t n = read(s->fd, buf, sizeof buf);
    if (n > 0) {
      size_t keep = (size_t)n;
      if (s->b.len + keep > max_output) {
        keep = max_output - s->b.len;
        s->cut = 1;
      }
      buf_put(&s->b, buf, keep);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    close(s->fd); /* end of file, or an error that ends the stream all the same */
    s->fd = -1;
    finish_if_done(j);
    return;
  }
}

static void reap(void) {
  char b[64];
  while (read(chld_pipe[0], b, sizeof b) > 0) {
  }
  for (;;) {
    int st;
    pid_t pid = waitpid(-1, &st, WNOHANG);
    if (pid <= 0) return;
    for (struct keeper *k = keepers; k; k = k->next) {
      if (k->pid != pid) continue;
      keeper_drop(k, 0);
      break;
    }
    for (struct job *j = jobs; j; j = j->next) {
      if (j->pid != pid) continue;
      char body[5];
      body[0] = WIFSIGNALED(st) ? 1 : 0;
      put_u32(body + 1, (uint32_t)(WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st)));
      reply_small('X', j->id, body, 5);
      j->exited = 1;
      finish_if_done(j);
      break;
    }
  }
}

int main(int argc, char **argv) {
  if (argc != 2 || (max_output = strtoull(argv[1], NULL, 10)) == 0) {
    fprintf(stderr, "usage: orion-spawn MAX_OUTPUT_BYTES (started by Orion, requests on stdin)\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  if (pipe2(chld_pipe, O_CLOEXEC | O_NONBLOCK) < 0) die("pipe2");
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_chld;
  sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGCHLD, &sa, NULL) < 0) die("sigaction");

  unsigned char *in = NULL;
  size_t in_len = 0, in_cap = 0;
  struct pollfd *pfd = NULL;
  struct stream **who = NULL;
  struct job **owner = NULL;
  size_t pcap = 0;
  for (;;) {
    size_t n = 2;
    for (struct job *j = jobs; j; j = j->next) n += 2;
    if (n > pcap) {
      pcap = n * 2;
      pfd = realloc(pfd, pcap * sizeof *pfd);
      who = realloc(who, pcap * sizeof *who);
      owner = realloc(owner, pcap * sizeof *owner);
      if (!pfd || !who || !owner) die("realloc");
    }
    pfd[0] = (struct pollfd){.fd = 0, .events = POLLIN};
    pfd[1] = (struct pollfd){.fd = chld_pipe[0], .events = POLLIN};
    size_t k = 2;
    for (struct job *j = jobs; j; j = j->next) {
      struct stream *ss[2] = {&j->out, &j->err};
      for (int i = 0; i < 2; i++) {
        if (ss[i]->fd < 0) continue;
        pfd[k] = (struct pollfd){.fd = ss[i]->fd, .events = POLLIN};
        who[k] = ss[i];
        owner[k] = j;
        k++;
      }
    }
    if (poll(pfd, k, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (pfd[1].revents) reap();
    for (size_t i = 2; i < k; i++)
      if (pfd[i].revents) {
        /* The job may have been freed by an earlier stream's end in this round: look it up. */
        for (struct job *j = jobs; j; j = j->next)
          if (j == owner[i] && who[i]->fd == pfd[i].fd) {
            drain(j, who[i]);
            break;
          }
      }
    if (pfd[0].revents) {
      while (in_cap - in_len < 65536) {
        in_cap = in_cap ? in_cap * 2 : 131072;
        in = realloc(in, in_cap);
        if (!in) die("realloc");
      }
      ssize_t r = read(0, in + in_len, in_cap - in_len);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        /* The daemon is gone: so is everything it started. */
        for (struct job *j = jobs; j; j = j->next)
          kill(-j->pid, SIGKILL);
        kill_keepers();
        return 0;
      }
      in_len += (size_t)r;
      size_t off = 0;
      while (in_len - off >= 4) {
        uint32_t len = (uint32_t)in[off] | (uint32_t)in[off + 1] << 8 | (uint32_t)in[off + 2] << 16 | (uint32_t)in[off + 3] << 24;
        if (len > MAX_FRAME) {
          fprintf(stderr, "orion-spawn: request of %u bytes is over the limit\n", len);
          return 2;
        }
        if (in_len - off - 4 < len) break; /* the rest of it comes with later reads */
        start(in + off + 4, len);
        off += 4 + (size_t)len;
      }
      memmove(in, in + off, in_len - off);
      in_len -= off;
    }
  }
}
