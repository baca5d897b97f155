// cflags: -no-pie -fno-pie
#include <stdio.h>
#include <string.h>
static char path[4096];
static char buf[4096];
int main(int argc, char **argv) {
    if (argc < 2) return 2;
    strncpy(path, argv[1], sizeof path - 1);
    long fd, n, rc;
    __asm__ volatile("int $0x80" : "=a"(fd) : "a"(5L), "b"(path), "c"(0L) : "memory");
    if (fd < 0) return 3;
    __asm__ volatile("int $0x80" : "=a"(n) : "a"(3L), "b"(fd), "c"(buf), "d"((long)sizeof buf) : "memory");
    __asm__ volatile("int $0x80" : "=a"(rc) : "a"(6L), "b"(fd) : "memory");
    printf("%ld\n", n);
    return n > 0 ? 0 : 4;
}
