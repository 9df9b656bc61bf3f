/* readdir's d_ino against lstat's st_ino for every entry below a
 * directory (default /), to depth 8:
 * what CPython's test_os (TestScandir.test_attributes) checks, and what
 * every disk filesystem guarantees. Mount points are skipped (their d_ino
 * is the covered entry's everywhere). With "write" first: a new deep tree
 * and a copy-up of an existing file (so the upper layer is in play). */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int bad, checked, dirs, mounts;

/* A mount point's d_ino is the covered entry's, as everywhere: skipped. */
static void walk(const char *dir, int depth) {
  DIR *d = opendir(dir);
  struct dirent *e;
  char p[4096];
  struct stat st, self;
  if (!d)
    return;
  if (fstat(dirfd(d), &self)) {
    closedir(d);
    return;
  }
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
      continue;
    snprintf(p, sizeof p, "%s/%s", strcmp(dir, "/") ? dir : "", e->d_name);
    if (lstat(p, &st))
      continue;
    if (st.st_dev != self.st_dev) {
      mounts++;
      continue;
    }
    checked++;
    if (st.st_ino != e->d_ino) {
      bad++;
      printf("mismatch %s d_ino=%llu st_ino=%llu\n", p, (unsigned long long)e->d_ino,
             (unsigned long long)st.st_ino);
    }
    if (S_ISDIR(st.st_mode) && depth < 8) {
      dirs++;
      walk(p, depth + 1);
    }
  }
  closedir(d);
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "write")) {
    mkdir("/tmp/a", 0755);
    mkdir("/tmp/a/b", 0755);
    mkdir("/tmp/a/b/c", 0755);
    close(open("/tmp/a/b/c/new", O_CREAT | O_WRONLY, 0644));
    int fd = open("/etc/passwd", O_WRONLY | O_APPEND);
    if (fd >= 0) {
      if (write(fd, "\n", 1) < 0)
        perror("write");
      close(fd);
    }
  }
  walk("/", 0);
  printf("checked %d entries in %d dirs (%d mount points skipped), %d mismatches\n", checked, dirs, mounts, bad);
  return bad != 0;
}
