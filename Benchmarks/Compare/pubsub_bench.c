// The latency benchmark's workload against redis pub/sub or nats-server, for comparison with
// `tocsin bench latency`: N subscribers of one subject on loopback, one publisher at a fixed
// rate, each message carrying its send time. Prints delivered/expected, latency percentiles
// and the server's CPU time per delivered message (user+system from /proc/PID/stat).
//
//   cc -O2 -pthread -o pubsub_bench pubsub_bench.c
//   ./pubsub_bench redis|nats HOST PORT SERVER_PID SUBSCRIBERS RATE SECONDS PAYLOAD_BYTES
//
// Benchmarks/Compare/run.sh starts the servers and runs it. Nothing here is built by CI.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MARK "T@"
#define DIGITS 19
#define STAMP (2 + DIGITS)

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static double cpu_seconds(int pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return 0;
    unsigned long ut = 0, st = 0;
    // After ")": state(3) ... utime(14) stime(15)
    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st);
    return (double)(ut + st) / sysconf(_SC_CLK_TCK);
}

static int dial(const char *host, int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) { perror("connect"); exit(1); }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void send_all(int fd, const char *s, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0) { if (errno == EINTR) continue; perror("write"); exit(1); }
        s += w; n -= w;
    }
}

// Reads until `needle` has been seen (a subscription's confirmation).
static void expect(int fd, const char *needle) {
    char buf[4096]; size_t have = 0;
    while (1) {
        ssize_t r = read(fd, buf + have, sizeof buf - 1 - have);
        if (r <= 0) { fprintf(stderr, "connection closed before '%s'\n", needle); exit(1); }
        have += r; buf[have] = 0;
        if (strstr(buf, needle)) return;
        if (have > 3000) { memmove(buf, buf + have - 100, 100); have = 100; }
    }
}

static int nsubs;
static int *subs;
static atomic_int stop_readers;
static atomic_llong window_start = 0x7fffffffffffffffLL, window_end = 0x7fffffffffffffffLL;
static long long *lat; static atomic_long nlat; static long maxlat;

static void *reader(void *arg) {
    (void)arg;
    int ep = epoll_create1(0);
    char (*carry)[STAMP] = calloc(nsubs, STAMP);
    int *ncarry = calloc(nsubs, sizeof(int));
    for (int i = 0; i < nsubs; i++) {
        struct epoll_event e = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, subs[i], &e);
    }
    static char buf[(1 << 16) + STAMP];
    struct epoll_event ev[256];
    while (!atomic_load(&stop_readers)) {
        int n = epoll_wait(ep, ev, 256, 100);
        for (int k = 0; k < n; k++) {
            int i = ev[k].data.u32;
            memcpy(buf, carry[i], ncarry[i]);
            ssize_t r = read(subs[i], buf + ncarry[i], (1 << 16));
            if (r <= 0) continue;
            long long t = now_ns();
            size_t len = ncarry[i] + r;
            size_t pos = 0;
            char *p;
            while ((p = memmem(buf + pos, len - pos, MARK, 2)) != NULL) {
                size_t at = p - buf;
                if (at + STAMP > len) break;
                long long sent = 0;
                for (int d = 0; d < DIGITS; d++) sent = sent * 10 + (p[2 + d] - '0');
                if (sent >= atomic_load(&window_start) && sent < atomic_load(&window_end)) {
                    long idx = atomic_fetch_add(&nlat, 1);
                    if (idx < maxlat) lat[idx] = t - sent;
                }
                pos = at + STAMP;
            }
            // Keep a possibly split stamp for the next read.
            size_t keep = len - pos < STAMP - 1 ? len - pos : STAMP - 1;
            memcpy(carry[i], buf + len - keep, keep);
            ncarry[i] = keep;
        }
    }
    return NULL;
}

static int cmp(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: %s redis|nats HOST PORT SERVER_PID SUBSCRIBERS RATE SECONDS PAYLOAD_BYTES\n", argv[0]);
        return 2;
    }
    int nats = strcmp(argv[1], "nats") == 0;
    const char *host = argv[2];
    int port = atoi(argv[3]), pid = atoi(argv[4]);
    nsubs = atoi(argv[5]);
    int rate = atoi(argv[6]);
    double seconds = atof(argv[7]), warmup = 2;
    int payload = atoi(argv[8]);
    if (payload < STAMP) payload = STAMP;

    subs = calloc(nsubs, sizeof(int));
    for (int i = 0; i < nsubs; i++) {
        subs[i] = dial(host, port);
        if (nats) {
            expect(subs[i], "INFO");
            const char *s = "CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB bench 1\r\nPING\r\n";
            send_all(subs[i], s, strlen(s));
            expect(subs[i], "PONG");
        } else {
            const char *s = "*2\r\n$9\r\nSUBSCRIBE\r\n$5\r\nbench\r\n";
            send_all(subs[i], s, strlen(s));
            expect(subs[i], ":1\r\n");
        }
    }
    int pub = dial(host, port);
    if (nats) {
        expect(pub, "INFO");
        const char *s = "CONNECT {\"verbose\":false,\"pedantic\":false}\r\n";
        send_all(pub, s, strlen(s));
    }
    maxlat = (long)(rate * seconds * nsubs) + 1000;
    lat = malloc(maxlat * sizeof(long long));
    pthread_t th;
    pthread_create(&th, NULL, reader, NULL);

    char *msg = malloc(payload + 128);
    char *body = malloc(payload + 1);
    memset(body, 'x', payload);
    long total = (long)((warmup + seconds) * rate), warm = (long)(warmup * rate), published = 0;
    long long start = now_ns(), interval = 1000000000LL / rate;
    double cpu0 = 0; long long wall0 = 0;
    char sink[4096];
    for (long n = 0; n < total; n++) {
        if (n == warm) { cpu0 = cpu_seconds(pid); wall0 = now_ns(); atomic_store(&window_start, wall0); }
        long long due = start + n * interval, t;
        while ((t = now_ns()) < due) {
            struct timespec d = {0, due - t};
            nanosleep(&d, NULL);
        }
        int hl = snprintf(body, payload + 1, MARK "%0*lld", DIGITS, now_ns());
        body[hl] = 'x';
        int len;
        if (nats) len = snprintf(msg, payload + 128, "PUB bench %d\r\n", payload);
        else len = snprintf(msg, payload + 128, "*3\r\n$7\r\nPUBLISH\r\n$5\r\nbench\r\n$%d\r\n", payload);
        memcpy(msg + len, body, payload);
        len += payload;
        memcpy(msg + len, "\r\n", 2);
        len += 2;
        send_all(pub, msg, len);
        if (!nats) while (recv(pub, sink, sizeof sink, MSG_DONTWAIT) > 0) {}
        if (n >= warm) published++;
    }
    long long wall1 = now_ns();
    atomic_store(&window_end, wall1);
    double cpu = cpu_seconds(pid) - cpu0, wall = (wall1 - wall0) / 1e9;
    struct timespec settle = {2, 0};
    nanosleep(&settle, NULL);
    atomic_store(&stop_readers, 1);
    pthread_join(th, NULL);
    long got = atomic_load(&nlat);
    if (got > maxlat) got = maxlat;
    qsort(lat, got, sizeof(long long), cmp);
    long expected = published * nsubs;
    printf("%s: %d subscribers, %d msgs/s, %d-byte messages\n", argv[1], nsubs, rate, payload);
    printf("delivered %ld of %ld expected messages (%ld missing after a 2 s settle)\n", got, expected, expected - got);
    if (got > 0) {
        #define AT(q) (lat[(long)((got - 1) * (q))] / 1e6)
        printf("publish→receive latency: p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms\n", AT(0.5), AT(0.9),
            AT(0.99), AT(0.999), lat[got - 1] / 1e6);
    }
    printf("server CPU: %.2f s over %.1f s wall (%.0f%% of one core); %.2f µs per delivered message\n", cpu, wall, cpu / wall * 100,
        got ? cpu / got * 1e6 : 0);
    return 0;
}
