/* Looks for a key named by argv[1] in the session keyring it was started
 * with, as a hostile job would; prints "found: <payload>" or
 * "not found: <errno name>". Built static by tests/hardening.rs, so it runs
 * in a busybox root, which has no keyctl of its own. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define KEY_SPEC_SESSION_KEYRING -3
#define KEYCTL_SEARCH 10
#define KEYCTL_READ 11

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    long id = syscall(SYS_keyctl, KEYCTL_SEARCH, KEY_SPEC_SESSION_KEYRING, "user", argv[1], 0);
    if (id < 0) {
        printf("not found: %s\n", strerror(errno));
        return 1;
    }
    char buf[256] = {0};
    long n = syscall(SYS_keyctl, KEYCTL_READ, id, buf, sizeof buf - 1);
    if (n < 0) {
        printf("not readable: %s\n", strerror(errno));
        return 1;
    }
    printf("found: %s\n", buf);
    return 0;
}
