/*
 * The kernel's floor for fan-out on this machine (issue 23): what it costs a writer,
 * in CPU, to put small messages on many loopback TCP connections, with nothing but
 * send() around them. pushgate's CPU per delivery is compared with it
 * (docs/benchmarks.md, "Tools: the floor and an older version side by side").
 *
 * It opens N loopback TCP connections (default 9,000). The accepting ends live in a
 * child process (the reader: fork), which drains every socket with epoll and throws
 * the bytes away; the connecting ends stay in the writer, so each process holds N
 * descriptors and a few more (20,000 per process is this machine's hard cap). For each
 * batch size K (default 1, 4 and 16) the writer makes rounds: in each it sends K
 * messages of SIZE bytes (default 110, a pushgate push frame with a 100-byte val) to
 * every socket in one send() per socket, so K = 1 is one message per send() and K = 16
 * sixteen messages sharing one. It reports its own CPU (getrusage: user + sys) per
 * message and per send() for each K.
 *
 * On loopback the receiving side's TCP input (the receive queue, the wake-up of the
 * reader) runs in the sender's system call and is charged to the sender: that is part
 * of the floor as issue 23 defines it, and of what pushgate's write() costs too. The
 * reader's own reads are not counted (another process). The writer's sockets have
 * TCP_NODELAY set, as asyncio sets it on every TCP transport, so the kernel does not
 * hold small writes back to merge them (Nagle).
 *
 * Sockets are non-blocking; a send() that meets a full buffer (EAGAIN) or writes part
 * of its bytes waits for the socket with poll() and sends the rest; both are counted.
 * Before each batch size's measured rounds there is one unmeasured round, and after
 * them the writer waits until the reader has received every byte, so no backlog runs
 * into the next measurement.
 *
 * Linux only (epoll). Built and run by scripts/floor; `scripts/floor --help`.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_BATCHES 16
#define FD_RESERVE 16 /* stdio, the listening socket, pipes, epoll */
#define DRAIN_TIMEOUT_S 60

static const char *USAGE =
    "usage: scripts/floor [-n N] [--rounds R | --seconds S] [--size BYTES]\n"
    "                     [--batch K[,K...]] [--rate R] [--json]\n"
    "\n"
    "The kernel's floor for fan-out: a writer sends SIZE-byte messages to N loopback\n"
    "TCP connections (a reader in a child process drains them with epoll), K messages\n"
    "per send(), and reports its own CPU (getrusage user+sys) per message for each K.\n"
    "On loopback the receiver's TCP input is charged to the sender: it is part of the\n"
    "floor.\n"
    "\n"
    "  -n N            connections (default 9000; at most the open-file limit less 16)\n"
    "  --rounds R      rounds per batch size: one send() of K messages to every socket\n"
    "                  per round (default: as many as fit in --seconds)\n"
    "  --seconds S     without --rounds, make rounds for about S seconds per batch size\n"
    "                  (default 2)\n"
    "  --size BYTES    bytes per message (default 110: a push frame, 100-byte val)\n"
    "  --batch LIST    messages per send(), comma-separated (default 1,4,16)\n"
    "  --rate R        paced: start R rounds per second (a round is one push to every\n"
    "                  socket); default 0: back to back\n"
    "  --json          one JSON object on stdout instead of the table\n";

struct variant {
    int batch;
    long rounds;
    long long messages, sends, partial, eagain, late;
    double user_s, sys_s, wall_s;
};

static void die(const char *what) {
    fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void fail(const char *message) {
    fprintf(stderr, "floor: %s\n", message);
    exit(2);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double tv_s(struct timeval tv) { return (double)tv.tv_sec + (double)tv.tv_usec / 1e6; }

static void write_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("write to the reader's pipe");
        }
        p += n;
        len -= (size_t)n;
    }
}

static int read_all(int fd, void *buf, size_t len) {
    char *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) die("fcntl O_NONBLOCK");
}

/*
 * The reader: accepts n connections, says so, then drains every socket and answers
 * each target it is sent (a total of bytes, 8 bytes on ctl_in) once it has received
 * that many. It ends when ctl_in closes (the writer is done or gone).
 */
static void reader(int listener, int n, int ctl_in, int ack_out) {
    int *fds = calloc((size_t)n, sizeof *fds);
    if (!fds) die("calloc");
    for (int i = 0; i < n; i++) {
        int fd = accept(listener, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR) {
                i--;
                continue;
            }
            die("accept");
        }
        set_nonblocking(fd);
        fds[i] = fd;
    }
    close(listener);
    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN};
    for (int i = 0; i < n; i++) {
        ev.data.fd = fds[i];
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) < 0) die("epoll_ctl");
    }
    ev.data.fd = ctl_in;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, ctl_in, &ev) < 0) die("epoll_ctl");
    char ready = 'r';
    write_all(ack_out, &ready, 1);

    static char buf[1 << 16];
    struct epoll_event events[256];
    unsigned long long received = 0, target = 0;
    int waiting = 0;
    for (;;) {
        int k = epoll_wait(ep, events, 256, -1);
        if (k < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int e = 0; e < k; e++) {
            int fd = events[e].data.fd;
            if (fd == ctl_in) {
                if (read_all(ctl_in, &target, sizeof target) < 0) exit(0);
                waiting = 1;
                continue;
            }
            for (;;) {
                ssize_t got = read(fd, buf, sizeof buf);
                if (got > 0) {
                    received += (unsigned long long)got;
                    if (got < (ssize_t)sizeof buf) break;
                    continue;
                }
                if (got < 0 && errno == EINTR) continue;
                if (got < 0 && errno == EAGAIN) break;
                if (got == 0 || (got < 0 && errno == ECONNRESET)) { /* the writer closed */
                    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                    close(fd);
                    break;
                }
                die("read");
            }
        }
        if (waiting && received >= target) {
            waiting = 0;
            write_all(ack_out, &received, sizeof received);
        }
    }
}

/* Send len bytes on fd, waiting with poll() whenever the socket's buffer is full. */
static void send_all(int fd, const char *buf, size_t len, struct variant *v) {
    for (;;) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        v->sends++;
        if (n == (ssize_t)len) return;
        if (n >= 0) {
            v->partial++;
            buf += n;
            len -= (size_t)n;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            v->eagain++;
        } else if (errno != EINTR) {
            die("send");
        }
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        while (poll(&p, 1, -1) < 0)
            if (errno != EINTR) die("poll");
    }
}

static void round_robin(const int *fds, int n, const char *buf, size_t len, struct variant *v) {
    for (int i = 0; i < n; i++) send_all(fds[i], buf, len, v);
}

static void sleep_until(double t) {
    struct timespec ts;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static unsigned long long sent_total;

static void wait_drained(int ctl_out, int ack_in) {
    write_all(ctl_out, &sent_total, sizeof sent_total);
    struct pollfd p = {.fd = ack_in, .events = POLLIN};
    int r;
    while ((r = poll(&p, 1, DRAIN_TIMEOUT_S * 1000)) < 0)
        if (errno != EINTR) die("poll");
    unsigned long long received = 0;
    if (r == 0 || read_all(ack_in, &received, sizeof received) < 0)
        fail("the reader did not receive everything that was sent");
}

static void measure(struct variant *v, const int *fds, int n, size_t size, long rounds,
                    double seconds, double rate, int ctl_out, int ack_in) {
    size_t len = size * (size_t)v->batch;
    char *buf = malloc(len);
    if (!buf) die("malloc");
    /* Each message looks like a pushgate push: a text frame holding JSON. */
    for (size_t m = 0; m < (size_t)v->batch; m++) {
        char *msg = buf + m * size;
        memset(msg, 'x', size);
        static const char head[] = "{\"type\":3,\"data\":\"";
        if (size - 2 < 126 && size >= 2 + sizeof head + 2) {
            msg[0] = (char)0x81; /* FIN, text; unmasked, as a server sends */
            msg[1] = (char)(size - 2);
            memcpy(msg + 2, head, sizeof head - 1);
            memcpy(msg + size - 2, "\"}", 2);
        }
    }
    struct variant warmup = {0};
    round_robin(fds, n, buf, len, &warmup);
    sent_total += (unsigned long long)len * (unsigned long long)n;
    wait_drained(ctl_out, ack_in);

    struct rusage before, after;
    double start = now_s(), next = start;
    getrusage(RUSAGE_SELF, &before);
    for (long r = 0;; r++) {
        if (rounds > 0 ? r >= rounds : (r > 0 && now_s() - start >= seconds)) break;
        if (rate > 0) {
            if (now_s() > next + 0.5 / rate)
                v->late++;
            else
                sleep_until(next);
            next += 1.0 / rate;
        }
        round_robin(fds, n, buf, len, v);
        v->rounds++;
    }
    getrusage(RUSAGE_SELF, &after);
    v->wall_s = now_s() - start;
    v->user_s = tv_s(after.ru_utime) - tv_s(before.ru_utime);
    v->sys_s = tv_s(after.ru_stime) - tv_s(before.ru_stime);
    v->messages = (long long)v->rounds * n * v->batch;
    sent_total += (unsigned long long)len * (unsigned long long)n * (unsigned long long)v->rounds;
    wait_drained(ctl_out, ack_in);
    free(buf);
}

static void cpu_model(char *out, size_t size) {
    snprintf(out, size, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0) {
            char *colon = strchr(line, ':');
            if (colon) {
                colon += 2;
                colon[strcspn(colon, "\n")] = 0;
                for (char *c = colon; *c; c++)
                    if (*c == '"' || *c == '\\') *c = ' '; /* it goes into JSON */
                snprintf(out, size, "%s", colon);
            }
            break;
        }
    }
    fclose(f);
}

static int parse_batches(const char *s, int *out) {
    int count = 0;
    char *copy = strdup(s), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *end;
        long k = strtol(t, &end, 10);
        if (*end || k < 1 || k > 1024 || count == MAX_BATCHES) {
            free(copy);
            return -1;
        }
        out[count++] = (int)k;
    }
    free(copy);
    return count;
}

static double number(const char *flag, const char *value, double min) {
    char *end;
    if (!value) {
        fprintf(stderr, "floor: %s needs a value\n%s", flag, USAGE);
        exit(2);
    }
    double x = strtod(value, &end);
    if (*end || x < min) {
        fprintf(stderr, "floor: %s must be a number of at least %g, got %s\n", flag, min, value);
        exit(2);
    }
    return x;
}

int main(int argc, char **argv) {
    int n = 9000, json = 0, batches[MAX_BATCHES] = {1, 4, 16}, nbatches = 3;
    long rounds = 0;
    double seconds = 2.0, rate = 0.0;
    size_t size = 110;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(USAGE, stdout);
            return 0;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--connections")) {
            n = (int)number(a, v, 1), i++;
        } else if (!strcmp(a, "--rounds")) {
            rounds = (long)number(a, v, 1), i++;
        } else if (!strcmp(a, "--seconds")) {
            seconds = number(a, v, 0), i++;
        } else if (!strcmp(a, "--size")) {
            size = (size_t)number(a, v, 1), i++;
        } else if (!strcmp(a, "--rate")) {
            rate = number(a, v, 0), i++;
        } else if (!strcmp(a, "--batch")) {
            if (!v || (nbatches = parse_batches(v, batches)) < 1) {
                fprintf(stderr, "floor: --batch takes K[,K...], each 1 to 1024\n");
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else {
            fprintf(stderr, "floor: unknown argument %s\n%s", a, USAGE);
            return 2;
        }
    }

    /* Each process holds n sockets and a few descriptors more. */
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) < 0) die("getrlimit");
    if (lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
        getrlimit(RLIMIT_NOFILE, &lim);
    }
    if ((rlim_t)n + FD_RESERVE > lim.rlim_cur) {
        fprintf(stderr,
                "floor: -n %d does not fit under the open-file limit of %llu per process "
                "(at most %llu)\n",
                n, (unsigned long long)lim.rlim_cur,
                (unsigned long long)(lim.rlim_cur > FD_RESERVE ? lim.rlim_cur - FD_RESERVE : 0));
        return 2;
    }

    int listener = socket(AF_INET, SOCK_STREAM, 0);
    if (listener < 0) die("socket");
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof addr;
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(listener, SOMAXCONN) < 0) die("listen");
    if (getsockname(listener, (struct sockaddr *)&addr, &alen) < 0) die("getsockname");

    int ctl[2], ack[2];
    if (pipe(ctl) < 0 || pipe(ack) < 0) die("pipe");
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        close(ctl[1]);
        close(ack[0]);
        reader(listener, n, ctl[0], ack[1]);
        return 0;
    }
    close(listener);
    close(ctl[0]);
    close(ack[1]);

    int *fds = calloc((size_t)n, sizeof *fds);
    if (!fds) die("calloc");
    int one = 1;
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) die("socket");
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
        if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
            die("setsockopt TCP_NODELAY");
        set_nonblocking(fd);
        fds[i] = fd;
    }
    char ready;
    if (read_all(ack[0], &ready, 1) < 0) fail("the reader ended before it accepted everything");

    struct variant vs[MAX_BATCHES] = {{0}};
    for (int b = 0; b < nbatches; b++) {
        vs[b].batch = batches[b];
        measure(&vs[b], fds, n, size, rounds, seconds, rate, ctl[1], ack[0]);
    }

    /* Close with a reset (linger 0): no TIME_WAIT left on this machine's ports. */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    for (int i = 0; i < n; i++) {
        setsockopt(fds[i], SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(fds[i]);
    }
    close(ctl[1]);
    int status;
    while (waitpid(child, &status, 0) < 0)
        if (errno != EINTR) die("waitpid");

    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    if (json) {
        printf("{\"connections\":%d,\"size\":%zu,\"rate\":%g,\"cpu\":\"%s\",\"variants\":[", n,
               size, rate, cpu);
        for (int b = 0; b < nbatches; b++) {
            struct variant *v = &vs[b];
            double cpu_s = v->user_s + v->sys_s;
            printf("%s{\"batch\":%d,\"rounds\":%ld,\"messages\":%lld,\"sends\":%lld,"
                   "\"partial\":%lld,\"eagain\":%lld,\"late_rounds\":%lld,\"user_s\":%.4f,"
                   "\"sys_s\":%.4f,\"cpu_s\":%.4f,\"wall_s\":%.4f,\"us_per_message\":%.4f,"
                   "\"us_per_send\":%.4f}",
                   b ? "," : "", v->batch, v->rounds, v->messages, v->sends, v->partial,
                   v->eagain, v->late, v->user_s, v->sys_s, cpu_s, v->wall_s,
                   cpu_s * 1e6 / (double)v->messages,
                   cpu_s * 1e6 / (double)((long long)v->rounds * n));
        }
        printf("]}\n");
        return 0;
    }
    printf("floor: %d loopback TCP connections, %zu-byte messages, %s; %s\n", n, size,
           rate > 0 ? "paced" : "back to back", cpu);
    if (rate > 0) printf("paced: %g rounds per second (one send() to every socket each)\n", rate);
    printf("writer CPU (getrusage user+sys; the receiver's TCP input included)\n\n");
    printf("%8s %8s %12s %8s %8s %12s %9s %8s %8s\n", "msg/send", "rounds", "messages",
           "CPU s", "sys %", "µs/message", "µs/send", "EAGAIN", "wall s");
    for (int b = 0; b < nbatches; b++) {
        struct variant *v = &vs[b];
        double cpu_s = v->user_s + v->sys_s;
        printf("%8d %8ld %12lld %8.3f %8.0f %12.3f %9.3f %8lld %8.2f\n", v->batch, v->rounds,
               v->messages, cpu_s, cpu_s > 0 ? 100 * v->sys_s / cpu_s : 0.0,
               cpu_s * 1e6 / (double)v->messages,
               cpu_s * 1e6 / (double)((long long)v->rounds * n), v->eagain, v->wall_s);
    }
    long long late = 0;
    for (int b = 0; b < nbatches; b++) late += vs[b].late;
    if (late) printf("\n%lld rounds started late (a round took longer than 1/rate)\n", late);
    return 0;
}
