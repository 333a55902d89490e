// One fan-out workload against Tocsin (WebSocket), redis pub/sub, nats-server or mosquitto
// (MQTT 3.1.1, QoS 0), driven the same way for each: N subscribers of one subject on loopback,
// one publisher at a fixed rate, each message carrying its send time in its payload. Prints
// delivered/expected, latency percentiles, the server's CPU time per delivered message
// (user+system from /proc/PID/stat) and its resident memory per subscriber (VmRSS before the
// subscribers connect and once they have all subscribed) and the share of the machine's CPU time the
// hypervisor stole during the run, then one `RESULT` line for scripts.
//
//   cc -O2 -pthread -o pubsub_bench pubsub_bench.c
//   ./pubsub_bench tocsin|redis|nats|mqtt HOST PORT SERVER_PID SUBSCRIBERS RATE SECONDS PAYLOAD_BYTES [LABEL]
//
// Tocsin: a broker with the example definitions and no authentication (`tocsin serve
// --insecure-no-auth`); each subscriber says hello with its own client id and subscribes to
// EmergenciesOfKind(kind: "bench") (a durable subscription); the publisher publishes over its
// own WebSocket, each event stored (and synced, unless the broker runs with --no-fsync) before
// it is delivered. Benchmarks/Compare/peers.sh starts every server present and prints one
// table; run.sh is the older redis/nats-only runner. Nothing here is built by CI.
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

// The machine's CPU time so far and the part of it the hypervisor stole, in clock ticks
// (/proc/stat's "cpu" line): a run with much stolen time is not comparable with a quiet one.
static void machine_ticks(unsigned long long *total, unsigned long long *steal) {
    unsigned long long v[8] = {0};
    *total = *steal = 0;
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return;
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) == 8) {
        for (int i = 0; i < 8; i++) *total += v[i];
        *steal = v[7];
    }
    fclose(f);
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

// Reads exactly `n` bytes (a binary acknowledgement: MQTT's CONNACK, SUBACK).
static void expect_bytes(int fd, size_t n) {
    char buf[64];
    size_t have = 0;
    while (have < n) {
        ssize_t r = read(fd, buf + have, n - have);
        if (r <= 0) { fprintf(stderr, "connection closed during the MQTT handshake\n"); exit(1); }
        have += r;
    }
}

// A client's WebSocket text frame (masked, as RFC 6455 requires of clients).
static size_t ws_frame(char *out, const char *text, size_t n) {
    size_t h = 0;
    out[h++] = (char)0x81;
    if (n < 126) {
        out[h++] = (char)(0x80 | n);
    } else {
        out[h++] = (char)(0x80 | 126);
        out[h++] = (char)(n >> 8);
        out[h++] = (char)(n & 0xff);
    }
    unsigned char key[4] = {0x12, 0x34, 0x56, 0x78};
    memcpy(out + h, key, 4);
    h += 4;
    for (size_t i = 0; i < n; i++) out[h + i] = text[i] ^ key[i & 3];
    return h + n;
}

static void ws_send(int fd, const char *text) {
    char frame[8192];
    size_t n = ws_frame(frame, text, strlen(text));
    send_all(fd, frame, n);
}

static void expect(int fd, const char *needle);

static void ws_open(int fd, const char *host, int port) {
    char req[512];
    snprintf(req, sizeof req,
        "GET /v1/ws HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", host, port);
    send_all(fd, req, strlen(req));
    expect(fd, "\r\n\r\n");
}

// An MQTT 3.1.1 packet's remaining length.
static size_t mqtt_length(char *out, size_t n) {
    size_t i = 0;
    do {
        unsigned char b = n % 128;
        n /= 128;
        if (n > 0) b |= 0x80;
        out[i++] = (char)b;
    } while (n > 0);
    return i;
}

static void mqtt_connect(int fd, const char *client) {
    char body[128], packet[160];
    size_t b = 0, id = strlen(client);
    memcpy(body, "\x00\x04MQTT\x04\x02\x00\x3c", 10);
    b = 10;
    body[b++] = (char)(id >> 8);
    body[b++] = (char)(id & 0xff);
    memcpy(body + b, client, id);
    b += id;
    size_t p = 0;
    packet[p++] = 0x10;
    p += mqtt_length(packet + p, b);
    memcpy(packet + p, body, b);
    send_all(fd, packet, p + b);
    expect_bytes(fd, 4);
}

static long rss_kb(int pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    long kb = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) { kb = atol(line + 6); break; }
    }
    fclose(f);
    return kb;
}

// Reads until `needle` has been seen (a subscription's confirmation).
static void expect(int fd, const char *needle) {
    char buf[4096]; size_t have = 0;
    while (1) {
        ssize_t r = read(fd, buf + have, sizeof buf - 1 - have);
        if (r <= 0) { fprintf(stderr, "connection closed before '%s'\n", needle); exit(1); }
        have += r; buf[have] = 0;
        // memmem, not strstr: a WebSocket frame's length bytes may be 0.
        if (memmem(buf, have, needle, strlen(needle))) return;
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

enum kind { REDIS, NATS, TOCSIN, MQTT };

int main(int argc, char **argv) {
    if (argc != 9 && argc != 10) {
        fprintf(stderr, "usage: %s tocsin|redis|nats|mqtt HOST PORT SERVER_PID SUBSCRIBERS RATE SECONDS PAYLOAD_BYTES [LABEL]\n", argv[0]);
        return 2;
    }
    enum kind kind = strcmp(argv[1], "nats") == 0 ? NATS : strcmp(argv[1], "tocsin") == 0 ? TOCSIN : strcmp(argv[1], "mqtt") == 0 ? MQTT : REDIS;
    const char *label = argc == 10 ? argv[9] : argv[1];
    const char *host = argv[2];
    int port = atoi(argv[3]), pid = atoi(argv[4]);
    nsubs = atoi(argv[5]);
    int rate = atoi(argv[6]);
    double seconds = atof(argv[7]), warmup = 2;
    int payload = atoi(argv[8]);
    if (payload < STAMP) payload = STAMP;

    long rss0 = rss_kb(pid);
    subs = calloc(nsubs, sizeof(int));
    char text[512];
    for (int i = 0; i < nsubs; i++) {
        subs[i] = dial(host, port);
        if (kind == NATS) {
            expect(subs[i], "INFO");
            const char *s = "CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB bench 1\r\nPING\r\n";
            send_all(subs[i], s, strlen(s));
            expect(subs[i], "PONG");
        } else if (kind == TOCSIN) {
            ws_open(subs[i], host, port);
            snprintf(text, sizeof text, "{\"type\":\"hello\",\"client\":\"bench-%d-%d\"}", getpid(), i);
            ws_send(subs[i], text);
            expect(subs[i], "welcome");
            ws_send(subs[i], "{\"type\":\"subscribe\",\"channel\":\"EmergenciesOfKind\",\"params\":{\"kind\":\"bench\"}}");
            expect(subs[i], "subscribed");
        } else if (kind == MQTT) {
            snprintf(text, sizeof text, "bench-%d-%d", getpid(), i);
            mqtt_connect(subs[i], text);
            const char sub[] = "\x82\x0a\x00\x01\x00\x05" "bench" "\x00";
            send_all(subs[i], sub, sizeof sub - 1);
            expect_bytes(subs[i], 5);
        } else {
            const char *s = "*2\r\n$9\r\nSUBSCRIBE\r\n$5\r\nbench\r\n";
            send_all(subs[i], s, strlen(s));
            expect(subs[i], ":1\r\n");
        }
    }
    struct timespec quiet = {1, 0};
    nanosleep(&quiet, NULL);
    long rss1 = rss_kb(pid);
    int pub = dial(host, port);
    if (kind == NATS) {
        expect(pub, "INFO");
        const char *s = "CONNECT {\"verbose\":false,\"pedantic\":false}\r\n";
        send_all(pub, s, strlen(s));
    } else if (kind == TOCSIN) {
        ws_open(pub, host, port);
    } else if (kind == MQTT) {
        snprintf(text, sizeof text, "bench-%d-publisher", getpid());
        mqtt_connect(pub, text);
    }
    maxlat = (long)(rate * seconds * nsubs) + 1000;
    lat = malloc(maxlat * sizeof(long long));
    pthread_t th;
    pthread_create(&th, NULL, reader, NULL);

    char *msg = malloc(payload + 512);
    char *body = malloc(payload + 1);
    memset(body, 'x', payload);
    long total = (long)((warmup + seconds) * rate), warm = (long)(warmup * rate), published = 0;
    long long start = now_ns(), interval = 1000000000LL / rate;
    double cpu0 = 0; long long wall0 = 0;
    unsigned long long ticks0 = 0, steal0 = 0, ticks1 = 0, steal1 = 0;
    char sink[65536];
    for (long n = 0; n < total; n++) {
        if (n == warm) { cpu0 = cpu_seconds(pid); machine_ticks(&ticks0, &steal0); wall0 = now_ns(); atomic_store(&window_start, wall0); }
        long long due = start + n * interval, t;
        while ((t = now_ns()) < due) {
            struct timespec d = {0, due - t};
            nanosleep(&d, NULL);
        }
        int hl = snprintf(body, payload + 1, MARK "%0*lld", DIGITS, now_ns());
        body[hl] = 'x';
        int len;
        if (kind == NATS) {
            len = snprintf(msg, payload + 512, "PUB bench %d\r\n", payload);
            memcpy(msg + len, body, payload);
            len += payload;
            memcpy(msg + len, "\r\n", 2);
            len += 2;
        } else if (kind == REDIS) {
            len = snprintf(msg, payload + 512, "*3\r\n$7\r\nPUBLISH\r\n$5\r\nbench\r\n$%d\r\n", payload);
            memcpy(msg + len, body, payload);
            len += payload;
            memcpy(msg + len, "\r\n", 2);
            len += 2;
        } else if (kind == MQTT) {
            len = 0;
            msg[len++] = 0x30;
            len += mqtt_length(msg + len, 2 + 5 + payload);
            memcpy(msg + len, "\x00\x05" "bench", 7);
            len += 7;
            memcpy(msg + len, body, payload);
            len += payload;
        } else {
            char event[8192];
            int e = snprintf(event, sizeof event,
                "{\"type\":\"publish\",\"stream\":\"emergencies\",\"event\":{\"kind\":\"bench\",\"severity\":1,"
                "\"location\":{\"lat\":0.0,\"lon\":0.0},\"area\":\"a\",\"time\":0,\"description\":\"%.*s\"}}", payload, body);
            len = (int)ws_frame(msg, event, e);
        }
        send_all(pub, msg, len);
        if (kind == REDIS || kind == TOCSIN) while (recv(pub, sink, sizeof sink, MSG_DONTWAIT) > 0) {}
        if (n >= warm) published++;
    }
    long long wall1 = now_ns();
    atomic_store(&window_end, wall1);
    double cpu = cpu_seconds(pid) - cpu0, wall = (wall1 - wall0) / 1e9;
    machine_ticks(&ticks1, &steal1);
    double stolen = ticks1 > ticks0 ? 100.0 * (steal1 - steal0) / (ticks1 - ticks0) : 0;
    struct timespec settle = {2, 0};
    nanosleep(&settle, NULL);
    atomic_store(&stop_readers, 1);
    pthread_join(th, NULL);
    long got = atomic_load(&nlat);
    if (got > maxlat) got = maxlat;
    qsort(lat, got, sizeof(long long), cmp);
    long expected = published * nsubs;
    double kb = nsubs ? (double)(rss1 - rss0) / nsubs : 0;
    printf("%s: %d subscribers, %d msgs/s, %d-byte messages\n", label, nsubs, rate, payload);
    printf("delivered %ld of %ld expected messages (%ld missing after a 2 s settle)\n", got, expected, expected - got);
    double p50 = 0, p99 = 0;
    if (got > 0) {
        #define AT(q) (lat[(long)((got - 1) * (q))] / 1e6)
        p50 = AT(0.5);
        p99 = AT(0.99);
        printf("publish→receive latency: p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms\n", AT(0.5), AT(0.9),
            AT(0.99), AT(0.999), lat[got - 1] / 1e6);
    }
    printf("server CPU: %.2f s over %.1f s wall (%.0f%% of one core); %.2f µs per delivered message\n", cpu, wall, cpu / wall * 100,
        got ? cpu / got * 1e6 : 0);
    printf("server memory: %ld KiB resident before the subscribers, %ld KiB with them: %.1f KiB per subscriber\n", rss0, rss1, kb);
    printf("machine: %.1f%% of the CPU time was stolen by the hypervisor\n", stolen);
    printf("RESULT %s %d %d %.2f %.3f %.3f %.1f %ld %ld %.1f\n", label, nsubs, rate, got ? cpu / got * 1e6 : 0, p50, p99, kb, got, expected,
        stolen);
    return 0;
}
