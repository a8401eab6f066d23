/* The example pen on a POSIX machine: a pseudo-terminal for the line, CLOCK_MONOTONIC for
 * time, poll() for the loop (README.md next to this file).
 *
 *     example_pen [--serial S] [--model M] [--pen-id N] [--pairing FILE] [--today DAY]
 *                 [--cartridge-id N] [--cartridge-lot LOT] [--cartridge-made DAY]
 *                 [--cartridge-expiry DAY] [--cartridge-strokes-used N] [--cartridge-ms-used MS]
 *
 * Prints one JSON line {"pty": "/dev/pts/N", "serial": "...", "pen_id": N} on stdout once the
 * pty is ready, then serves until SIGTERM or SIGINT and exits 0. A host opens the pty as a
 * serial port (micropen status --pen /dev/pts/N).
 *
 * --pairing FILE: one pairing per line, "HOST_ID KEY" (decimal host id, 64 hex digits of
 * pairing key), as a bench provisions a pen; the file must be readable by its owner only.
 */
#define _XOPEN_SOURCE 700
#define _DEFAULT_SOURCE 1

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "pen.h"
#include "port_openssl.h"

#define OUTBOX_BYTES 65536u
#define READ_BYTES 4096u
#define MAX_SLEEP_MS 1000u
#define DAY_S 86400

static pen the_pen; /* large (held records): static, as a firmware allocates it */
static int wake_pipe[2] = {-1, -1};
static volatile sig_atomic_t stopping;

static struct {
    uint8_t buf[OUTBOX_BYTES];
    size_t len;
} outbox;

static void on_signal(int signo)
{
    int saved = errno;
    (void)signo;
    stopping = 1;
    if (wake_pipe[1] >= 0) {
        ssize_t ignored = write(wake_pipe[1], "", 1);
        (void)ignored;
    }
    errno = saved;
}

static uint32_t clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

static void bad_input(const char *what, const char *value, const char *fix)
{
    fprintf(stderr, "example_pen: %s %s: %s\n", what, value, fix);
    exit(2);
}

static void failure(const char *what, const char *detail)
{
    fprintf(stderr, "example_pen: %s: %s\n", what, detail);
    exit(1);
}

static uint32_t parse_u32(const char *option, const char *text, uint32_t lo, uint32_t hi)
{
    char *end = NULL;
    unsigned long long v;
    errno = 0;
    v = strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || v < lo || v > hi) {
        char fix[96];
        snprintf(fix, sizeof fix, "must be a whole number in %lu..%lu", (unsigned long)lo,
                 (unsigned long)hi);
        bad_input(option, text, fix);
    }
    return (uint32_t)v;
}

static const char *parse_text(const char *option, const char *text, size_t max, int allow_empty)
{
    size_t i, n = strlen(text);
    if (n > max || (n == 0 && !allow_empty)) {
        char fix[96];
        snprintf(fix, sizeof fix, "must be %s%lu characters", allow_empty ? "at most " : "1 to ",
                 (unsigned long)max);
        bad_input(option, text, fix);
    }
    for (i = 0; i < n; i++) { /* printable ASCII that needs no escaping in JSON */
        char c = text[i];
        if (c < 0x20 || c > 0x7E || c == '"' || c == '\\') {
            bad_input(option, text, "use printable ASCII without quotes or backslashes");
        }
    }
    return text;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* Pairings provisioned at start (a local act on the bench, as `micropen sim serve` pairs the
 * simulator with this user's keystore). */
static void load_pairings(pen *p, const char *path)
{
    char line[256];
    struct stat st;
    unsigned count = 0;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        bad_input("--pairing", path, strerror(errno));
    }
    if (fstat(fileno(f), &st) != 0 || (st.st_mode & 077) != 0) {
        fclose(f);
        bad_input("--pairing", path, "can be read by others; chmod 600 it (it holds keys)");
    }
    while (fgets(line, sizeof line, f) != NULL) {
        char *host = strtok(line, " \t\r\n"), *key = strtok(NULL, " \t\r\n");
        uint8_t raw[MP_KEY_BYTES];
        size_t i;
        if (host == NULL || host[0] == '#') {
            continue;
        }
        if (key == NULL || strlen(key) != 2u * MP_KEY_BYTES) {
            fclose(f);
            bad_input("--pairing", path, "each line is HOST_ID and 64 hex digits of key");
        }
        for (i = 0; i < MP_KEY_BYTES; i++) {
            int hi = hex_value(key[2 * i]), lo = hex_value(key[2 * i + 1]);
            if (hi < 0 || lo < 0) {
                fclose(f);
                bad_input("--pairing", path, "the key must be 64 hex digits");
            }
            raw[i] = (uint8_t)(hi << 4 | lo);
        }
        if (!pen_add_pairing(p, parse_u32("--pairing host id", host, 1, 0xFFFFFFFFu), raw)) {
            fclose(f);
            bad_input("--pairing", path, "holds more than 8 pairings");
        }
        count++;
    }
    fclose(f);
    if (count == 0) {
        bad_input("--pairing", path, "holds no pairing (lines: HOST_ID KEY)");
    }
}

static void make_raw(int fd)
{
    struct termios t;
    if (tcgetattr(fd, &t) != 0) {
        failure("pty", strerror(errno));
    }
    t.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
    t.c_oflag &= ~(tcflag_t)OPOST;
    t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
    t.c_cflag &= ~(tcflag_t)(CSIZE | PARENB);
    t.c_cflag |= CS8;
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    if (tcsetattr(fd, TCSANOW, &t) != 0) {
        failure("pty", strerror(errno));
    }
}

/* A new pty: the master is ours, the slave is what the host opens. The slave stays open here
 * too, so a host closing and reopening the port is not a hang-up. Packet mode tells us when
 * the host flushes its input (pyserial does, on open): what we queued before is stale. */
static int open_pty(char *name, size_t size, int *slave)
{
    int one = 1;
    const char *path;
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) {
        failure("cannot make a pseudo-terminal", strerror(errno));
    }
    path = ptsname(master);
    if (path == NULL || strlen(path) >= size) {
        failure("cannot name the pseudo-terminal", strerror(errno));
    }
    strcpy(name, path);
    *slave = open(name, O_RDWR | O_NOCTTY);
    if (*slave < 0) {
        failure("cannot open the pseudo-terminal", strerror(errno));
    }
    make_raw(*slave);
    if (fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK) != 0 ||
        ioctl(master, TIOCPKT, &one) != 0) {
        failure("cannot configure the pseudo-terminal", strerror(errno));
    }
    return master;
}

static int outbox_has_room(void) { return OUTBOX_BYTES - outbox.len >= MP_FRAME_MAX_WIRE * 2u; }

static void fill_outbox(pen *p, uint32_t now)
{ /* frames wait in the link (not here) while the host does not read */
    while (outbox_has_room()) {
        size_t n = pen_transmit(p, outbox.buf + outbox.len, OUTBOX_BYTES - outbox.len, now);
        if (n == 0) {
            return;
        }
        outbox.len += n;
    }
}

static void flush_outbox(int master)
{
    while (outbox.len > 0) {
        ssize_t n = write(master, outbox.buf, outbox.len);
        if (n <= 0) {
            return; /* EAGAIN: the host is not reading; poll tells when it does */
        }
        memmove(outbox.buf, outbox.buf + n, outbox.len - (size_t)n);
        outbox.len -= (size_t)n;
    }
}

static void serve(int master)
{
    uint8_t in[READ_BYTES + 1];
    for (;;) {
        struct pollfd fds[2];
        uint32_t now = clock_ms(), wait;
        pen_advance(&the_pen, now);
        fill_outbox(&the_pen, now);
        flush_outbox(master);
        /* a full outbox waits for the host to read (POLLOUT), not for the link, which would
         * only want to transmit more */
        wait = outbox_has_room() ? pen_next_deadline_ms(&the_pen, now)
                                 : pen_next_timer_ms(&the_pen, now);
        if (wait > MAX_SLEEP_MS) {
            wait = MAX_SLEEP_MS;
        }
        fds[0].fd = master;
        fds[0].events = (short)(POLLIN | (outbox.len > 0 ? POLLOUT : 0));
        fds[1].fd = wake_pipe[0];
        fds[1].events = POLLIN;
        if (stopping) {
            return;
        }
        if (poll(fds, 2, (int)wait) < 0 && errno != EINTR) {
            failure("poll", strerror(errno));
        }
        if (stopping) {
            return;
        }
        if (fds[0].revents & POLLIN) {
            ssize_t n = read(master, in, sizeof in);
            if (n > 0 && in[0] != TIOCPKT_DATA) {
                if (in[0] & TIOCPKT_FLUSHREAD) {
                    outbox.len = 0; /* the host opened the port: what it missed is stale */
                }
            } else if (n > 1) {
                now = clock_ms();
                pen_advance(&the_pen, now);
                pen_receive(&the_pen, in + 1, (size_t)n - 1u, now);
            }
        }
    }
}

static void usage(void)
{
    fputs("usage: example_pen [--serial S] [--model M] [--pen-id N] [--pairing FILE]\n"
          "                   [--today DAY] [--cartridge-id N] [--cartridge-lot LOT]\n"
          "                   [--cartridge-made DAY] [--cartridge-expiry DAY]\n"
          "                   [--cartridge-strokes-used N] [--cartridge-ms-used MS]\n",
          stdout);
}

int main(int argc, char **argv)
{
    pen_config cfg;
    const char *pairing = NULL;
    char name[128];
    struct sigaction sa;
    int master, slave, i, made_given = 0, expiry_given = 0;
    uint8_t draw[8];
    memset(&cfg, 0, sizeof cfg);
    cfg.port = pen_port_openssl();
    cfg.port.random_bytes(cfg.port.ctx, draw, sizeof draw);
    cfg.model = "MP-12 C";
    cfg.serial = "C-000001";
    cfg.firmware_major = 0;
    cfg.firmware_minor = 1;
    cfg.firmware_patch = 0;
    cfg.hardware_revision = 1;
    cfg.boot_id = (uint32_t)draw[0] | (uint32_t)draw[1] << 8 | (uint32_t)draw[2] << 16 |
                  (uint32_t)draw[3] << 24;
    cfg.pen_id = ((uint32_t)draw[4] | (uint32_t)draw[5] << 8 | (uint32_t)draw[6] << 16 |
                  (uint32_t)draw[7] << 24) | 1u;
    cfg.today_day = (uint32_t)(time(NULL) / DAY_S);
    cfg.cartridge_id = 0x00C0FFEEu;
    cfg.cartridge_lot = "C-LOT-0001";
    for (i = 1; i < argc; i++) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(opt, "--help") == 0 || strcmp(opt, "-h") == 0) {
            usage();
            return 0;
        }
        if (val == NULL) {
            bad_input("option", opt, "needs a value (see --help)");
        }
        i++;
        if (strcmp(opt, "--serial") == 0) {
            cfg.serial = parse_text(opt, val, 16, 0);
        } else if (strcmp(opt, "--model") == 0) {
            cfg.model = parse_text(opt, val, 16, 0);
        } else if (strcmp(opt, "--pen-id") == 0) {
            cfg.pen_id = parse_u32(opt, val, 1, 0xFFFFFFFFu);
        } else if (strcmp(opt, "--pairing") == 0) {
            pairing = val;
        } else if (strcmp(opt, "--today") == 0) {
            cfg.today_day = parse_u32(opt, val, 0, 0xFFFFFFFFu);
        } else if (strcmp(opt, "--cartridge-id") == 0) {
            cfg.cartridge_id = parse_u32(opt, val, 0, 0xFFFFFFFFu);
        } else if (strcmp(opt, "--cartridge-lot") == 0) {
            cfg.cartridge_lot = parse_text(opt, val, 12, 1);
        } else if (strcmp(opt, "--cartridge-made") == 0) {
            cfg.cartridge_made_day = parse_u32(opt, val, 0, 0xFFFFFFFFu);
            made_given = 1;
        } else if (strcmp(opt, "--cartridge-strokes-used") == 0) {
            cfg.cartridge_strokes_used = parse_u32(opt, val, 0, 0xFFFFFFFFu);
        } else if (strcmp(opt, "--cartridge-ms-used") == 0) {
            cfg.cartridge_run_ms_used = parse_u32(opt, val, 0, 0xFFFFFFFFu);
        } else if (strcmp(opt, "--cartridge-expiry") == 0) {
            cfg.cartridge_expiry_day = parse_u32(opt, val, 0, 0xFFFFFFFFu);
            expiry_given = 1;
        } else {
            bad_input("unknown option", opt, "see --help");
        }
    }
    if (!made_given) { /* a fresh sterile cartridge: made 30 days ago, a year to expiry */
        cfg.cartridge_made_day = cfg.today_day >= 30u ? cfg.today_day - 30u : 0u;
    }
    if (!expiry_given) {
        cfg.cartridge_expiry_day = cfg.cartridge_made_day + 365u;
    }
    pen_init(&the_pen, &cfg, clock_ms());
    if (pairing != NULL) {
        load_pairings(&the_pen, pairing);
    }
    if (pipe(wake_pipe) != 0) {
        failure("pipe", strerror(errno));
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    master = open_pty(name, sizeof name, &slave);
    printf("{\"pty\": \"%s\", \"serial\": \"%s\", \"pen_id\": %lu}\n", name, the_pen.serial,
           (unsigned long)the_pen.cfg.pen_id);
    fflush(stdout);
    serve(master);
    close(master);
    close(slave);
    close(wake_pipe[0]);
    close(wake_pipe[1]);
    pen_port_openssl_close();
    return 0;
}
