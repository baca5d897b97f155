// cflags: -luring
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
static char buf[4096];
int main(int argc, char **argv) {
    struct io_uring ring;
    struct io_uring_cqe *cqe;
    if (argc < 2 || io_uring_queue_init(4, &ring, 0) < 0) return 2;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    io_uring_prep_openat(sqe, AT_FDCWD, argv[1], O_RDONLY, 0);
    io_uring_submit(&ring);
    if (io_uring_wait_cqe(&ring, &cqe) < 0) return 3;
    int fd = cqe->res;
    io_uring_cqe_seen(&ring, cqe);
    if (fd < 0) return 4;
    sqe = io_uring_get_sqe(&ring);
    io_uring_prep_read(sqe, fd, buf, sizeof buf, 0);
    io_uring_submit(&ring);
    if (io_uring_wait_cqe(&ring, &cqe) < 0) return 5;
    int n = cqe->res;
    io_uring_cqe_seen(&ring, cqe);
    printf("%d\n", n);
    return n > 0 ? 0 : 6;
}
