/* What a hostile container would try from inside the vzpkg sandbox. One static binary with a
 * subcommand per attack; the tests in tests/confinement.rs run it with `vzpkg exec` and read
 * what it prints, one result per line:
 *
 *   probe: start SUBCOMMAND          always first: the probe did run inside
 *   WHAT: denied ERRNAME             the kernel refused
 *   WHAT: LEAKED DATA                the attack worked (DATA escaped, bytes below 0x20 as \xNN)
 *   WHAT: ...                        anything else the test reads (ids, listings)
 *
 * The probe decides nothing itself where the test knows better (what the host's secret is).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/keyctl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

static const char *err(void) {
    const char *name = strerrorname_np(errno);
    return name ? name : "EUNKNOWN";
}

static void denied(const char *what) {
    printf("%s: denied %s\n", what, err());
}

/* Prints up to `len` bytes, escaped so that each result stays on one line. */
static void put_escaped(const unsigned char *buf, size_t len) {
    for (size_t i = 0; i < len; i++) {
        if (buf[i] < 0x20 || buf[i] >= 0x7f || buf[i] == '\\')
            printf("\\x%02x", buf[i]);
        else
            putchar(buf[i]);
    }
}

static void leaked(const char *what, const void *buf, size_t len) {
    printf("%s: LEAKED ", what);
    put_escaped(buf, len);
    putchar('\n');
}

/* Reads at most sizeof buf - 1 bytes of `fd`; -1 with errno on failure. */
static ssize_t read_some(int fd, char *buf, size_t size) {
    ssize_t n = read(fd, buf, size - 1);
    if (n >= 0)
        buf[n] = 0;
    return n;
}

/* Opens `path` and reports its content as LEAKED under the name `what`. */
static void try_read(const char *what, int dirfd, const char *path) {
    char buf[512];
    int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        denied(what);
        return;
    }
    ssize_t n = read_some(fd, buf, sizeof buf);
    if (n < 0)
        denied(what);
    else
        leaked(what, buf, n);
    close(fd);
}

/* 1. The filesystem's root directory by file handle (ext4: inode 2, generation 0), then the
 * host's file by the relative path the test gives. */
static int handle(int argc, char **argv) {
    if (argc < 1)
        return 2;
    struct {
        struct file_handle fh;
        uint32_t ino_gen[2];
    } h = {.fh = {.handle_bytes = 8, .handle_type = 1}, .ino_gen = {2, 0}};
    int mount_fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (mount_fd < 0) {
        denied("open /");
        return 1;
    }
    int root = syscall(SYS_open_by_handle_at, mount_fd, &h.fh, O_RDONLY | O_DIRECTORY);
    if (root < 0) {
        denied("open_by_handle_at");
        return 0;
    }
    printf("open_by_handle_at: opened\n");
    try_read("host file by handle", root, argv[0]);
    return 0;
}

/* 2. A global sysctl, written back with its own value. */
static int sysctl(void) {
    const char *path = "/proc/sys/kernel/core_pattern";
    char value[512];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read_some(fd, value, sizeof value);
    if (n < 0) {
        denied("read core_pattern");
        n = 0;
        value[0] = 0;
    }
    if (fd >= 0)
        close(fd);
    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        denied("core_pattern");
        return 0;
    }
    if (write(fd, value, n) < 0)
        denied("core_pattern");
    else
        leaked("core_pattern", "written", 7);
    close(fd);
    return 0;
}

static void key_read(const char *what, long serial) {
    char buf[512];
    long n = syscall(SYS_keyctl, KEYCTL_READ, serial, buf, sizeof buf);
    if (n < 0)
        denied(what);
    else
        leaked(what, buf, n < (long)sizeof buf ? (size_t)n : sizeof buf);
}

/* 3. The host's user key: by serial, by searching the user keyring, by request_key. */
static int keys(int argc, char **argv) {
    if (argc < 2)
        return 2;
    key_read("keyctl read", strtol(argv[0], NULL, 10));
    long found = syscall(SYS_keyctl, KEYCTL_SEARCH, KEY_SPEC_USER_KEYRING, "user", argv[1], 0);
    if (found < 0)
        denied("keyctl search");
    else
        key_read("keyctl search", found);
    found = syscall(SYS_request_key, "user", argv[1], NULL, 0);
    if (found < 0)
        denied("request_key");
    else
        key_read("request_key", found);
    return 0;
}

/* 4. Pid 1's executable: which file is it? */
static int exe(void) {
    struct stat st;
    int fd = open("/proc/1/exe", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        denied("/proc/1/exe");
        return 0;
    }
    if (fstat(fd, &st) < 0) {
        denied("/proc/1/exe");
        return 0;
    }
    printf("/proc/1/exe: dev=%llu ino=%llu\n", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
    return 0;
}

static void read_block(const char *where, dev_t dev) {
    char path[64], what[96], buf[64];
    snprintf(path, sizeof path, "%s/probe-disk", where);
    snprintf(what, sizeof what, "mknod %s %u:%u", where, major(dev), minor(dev));
    unlink(path);
    if (mknod(path, S_IFBLK | 0600, dev) < 0) {
        denied(what);
        return;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf);
    if (n < 0)
        denied(what);
    else
        leaked(what, buf, n);
    if (fd >= 0)
        close(fd);
    unlink(path);
}

/* 5. Host disks, through device nodes made inside: on the root's filesystem and in /dev.
 * argv: MAJOR MINOR, for each device. */
static int block(int argc, char **argv) {
    if (argc < 2)
        return 2;
    for (int i = 0; i + 1 < argc; i += 2) {
        dev_t dev = makedev(atoi(argv[i]), atoi(argv[i + 1]));
        read_block("/tmp", dev);
        read_block("/dev", dev);
    }
    return 0;
}

/* 6. The magic SysRq key ("h" only prints help to the kernel log). */
static int sysrq(void) {
    int fd = open("/proc/sysrq-trigger", O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        denied("sysrq-trigger");
        return 0;
    }
    if (write(fd, "h", 1) < 0)
        denied("sysrq-trigger");
    else
        leaked("sysrq-trigger", "written", 7);
    close(fd);
    return 0;
}

/* 7. Descriptors: this process's own, then every one that /proc shows of any process. */
static int fds(void) {
    DIR *self = opendir("/proc/self/fd");
    if (!self) {
        denied("/proc/self/fd");
        return 1;
    }
    printf("self fds:");
    for (struct dirent *e; (e = readdir(self));) {
        if (e->d_name[0] != '.' && atoi(e->d_name) != dirfd(self))
            printf(" %s", e->d_name);
    }
    printf("\n");
    closedir(self);
    DIR *proc = opendir("/proc");
    for (struct dirent *p; proc && (p = readdir(proc));) {
        if (p->d_name[0] < '1' || p->d_name[0] > '9')
            continue;
        char dir[300];
        snprintf(dir, sizeof dir, "/proc/%s/fd", p->d_name);
        DIR *d = opendir(dir);
        if (!d) {
            printf("fd %s: denied %s\n", p->d_name, err());
            continue;
        }
        for (struct dirent *e; (e = readdir(d));) {
            char link[600], target[256];
            if (e->d_name[0] == '.')
                continue;
            snprintf(link, sizeof link, "%s/%s", dir, e->d_name);
            ssize_t n = readlink(link, target, sizeof target - 1);
            if (n < 0)
                continue;
            target[n] = 0;
            printf("fd %s/%s -> ", p->d_name, e->d_name);
            put_escaped((unsigned char *)target, n);
            printf("\n");
        }
        closedir(d);
    }
    return 0;
}

/* 8. Everything of pid 1 that might lead out: root, cwd, each descriptor and the directories
 * above it, mapped files, ptrace and memory. argv: the marker's name, its host path. */
static int pid1(int argc, char **argv) {
    if (argc < 2)
        return 2;
    const char *name = argv[0], *host_path = argv[1];
    char path[1024], what[1100];
    const char *bases[] = {"/proc/1/root", "/proc/1/cwd"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", bases[i], host_path);
        try_read(path, AT_FDCWD, path);
        snprintf(path, sizeof path, "%s/../%s", bases[i], name);
        try_read(path, AT_FDCWD, path);
        snprintf(path, sizeof path, "%s/etc/hostname", bases[i]);
        try_read(path, AT_FDCWD, path);
    }
    DIR *d = opendir("/proc/1/fd");
    if (!d)
        denied("/proc/1/fd");
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        const char *tails[] = {"", "/", "/..", "/../..", "/../../.."};
        for (int i = 0; i < 5; i++) {
            snprintf(path, sizeof path, "/proc/1/fd/%s%s", e->d_name, tails[i]);
            if (i > 0)
                snprintf(path + strlen(path), sizeof path - strlen(path), "/%s", name);
            struct stat st;
            /* Only files: a pipe or a terminal would block. */
            if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
                try_read(path, AT_FDCWD, path);
        }
    }
    if (d)
        closedir(d);
    d = opendir("/proc/1/map_files");
    if (!d)
        denied("/proc/1/map_files");
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/1/map_files/%s", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        snprintf(what, sizeof what, "map_files %s", e->d_name);
        if (fd < 0 || fstat(fd, &st) < 0) {
            denied(what);
        } else {
            char line[96];
            snprintf(line, sizeof line, "dev=%llu ino=%llu", (unsigned long long)st.st_dev,
                     (unsigned long long)st.st_ino);
            leaked(what, line, strlen(line));
        }
        if (fd >= 0)
            close(fd);
    }
    if (d)
        closedir(d);
    if (ptrace(PTRACE_ATTACH, 1, 0, 0) < 0) {
        denied("ptrace attach 1");
    } else {
        leaked("ptrace attach 1", "attached", 8);
        waitpid(1, NULL, __WALL);
        ptrace(PTRACE_DETACH, 1, 0, 0);
    }
    /* The first readable mapping's first bytes. */
    unsigned long start = 0;
    FILE *maps = fopen("/proc/1/maps", "re");
    if (!maps || fscanf(maps, "%lx-", &start) != 1)
        denied("/proc/1/maps");
    if (maps)
        fclose(maps);
    int mem = open("/proc/1/mem", O_RDONLY | O_CLOEXEC);
    if (mem < 0) {
        denied("/proc/1/mem");
        return 0;
    }
    unsigned char buf[16];
    ssize_t n = pread(mem, buf, sizeof buf, start);
    if (n <= 0)
        denied("/proc/1/mem");
    else
        leaked("/proc/1/mem", buf, n);
    close(mem);
    return 0;
}

/* 9. Every environment /proc shows. */
static int environ_all(void) {
    DIR *proc = opendir("/proc");
    for (struct dirent *p; proc && (p = readdir(proc));) {
        if (p->d_name[0] < '1' || p->d_name[0] > '9')
            continue;
        char path[300], what[300], buf[65536];
        snprintf(path, sizeof path, "/proc/%s/environ", p->d_name);
        snprintf(what, sizeof what, "environ %s", p->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            denied(what);
            continue;
        }
        size_t len = 0;
        for (ssize_t n; len < sizeof buf && (n = read(fd, buf + len, sizeof buf - len)) > 0;)
            len += n;
        close(fd);
        printf("%s: ", what);
        put_escaped((unsigned char *)buf, len);
        printf("\n");
    }
    return 0;
}

static void send(const char *what, pid_t pid, int sig) {
    if (kill(pid, sig) < 0)
        denied(what);
    else
        printf("%s: sent\n", what);
}

/* 10. Signals to whatever is around the sandbox. The probe ignores them itself. */
static int signals(void) {
    int sigs[] = {SIGUSR1, SIGUSR2, SIGTERM, SIGHUP};
    for (int i = 0; i < 4; i++)
        signal(sigs[i], SIG_IGN);
    printf("pgrp=%d ppid=%d\n", getpgrp(), getppid());
    fflush(stdout);
    send("kill(0, USR2)", 0, SIGUSR2);
    send("kill(-1, TERM)", -1, SIGTERM);
    send("kill(ppid, HUP)", getppid(), SIGHUP);
    send("kill(-pgrp, USR1)", -getpgrp(), SIGUSR1);
    return 0;
}

static void inject(const char *what, int fd) {
    const char *text = "echo INJECTED\n";
    for (const char *c = text; *c; c++) {
        if (ioctl(fd, TIOCSTI, c) < 0) {
            denied(what);
            return;
        }
    }
    leaked(what, "pushed", 6);
}

/* 11. Keystrokes pushed into the terminal vzpkg was given: directly, through /dev/tty, and
 * after making it this process's controlling terminal. */
static int tiocsti(void) {
    inject("TIOCSTI stdin", 0);
    int tty = open("/dev/tty", O_RDWR | O_CLOEXEC);
    if (tty < 0) {
        denied("/dev/tty");
    } else {
        printf("/dev/tty: opened\n");
        inject("TIOCSTI /dev/tty", tty);
        close(tty);
    }
    if (setsid() < 0)
        denied("setsid");
    if (ioctl(0, TIOCSCTTY, 0) < 0) {
        denied("TIOCSCTTY");
    } else {
        printf("TIOCSCTTY: done\n");
        inject("TIOCSTI controlling", 0);
    }
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *cmd = argc > 1 ? argv[1] : "";
    printf("probe: start %s\n", cmd);
    argc -= 2;
    argv += 2;
    if (!strcmp(cmd, "handle"))
        return handle(argc, argv);
    if (!strcmp(cmd, "sysctl"))
        return sysctl();
    if (!strcmp(cmd, "keys"))
        return keys(argc, argv);
    if (!strcmp(cmd, "exe"))
        return exe();
    if (!strcmp(cmd, "block"))
        return block(argc, argv);
    if (!strcmp(cmd, "sysrq"))
        return sysrq();
    if (!strcmp(cmd, "fds"))
        return fds();
    if (!strcmp(cmd, "pid1"))
        return pid1(argc, argv);
    if (!strcmp(cmd, "environ"))
        return environ_all();
    if (!strcmp(cmd, "signals"))
        return signals();
    if (!strcmp(cmd, "tiocsti"))
        return tiocsti();
    printf("probe: unknown subcommand %s\n", cmd);
    return 2;
}
