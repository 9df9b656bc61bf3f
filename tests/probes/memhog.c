/* Allocates and touches MiB after MiB (argv[1], default 200), printing
 * each hundred, then says "allocated": busybox has no allocator. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    long mib = argc > 1 ? atol(argv[1]) : 200;
    for (long i = 0; i < mib; i++) {
        char *p = malloc(1 << 20);
        if (!p) {
            printf("malloc failed at %ld MiB\n", i);
            return 1;
        }
        memset(p, 0x5a, 1 << 20);
    }
    printf("allocated %ld MiB\n", mib);
    return 0;
}
