/* Sends what a hostile job with NET_RAW would send to pose as another job
 * or to give the host routes. Built static by tests/spoofing.rs, so it
 * runs in a busybox root. Frames go out eth0 through an AF_PACKET socket,
 * which netfilter's ip and arp hooks in the job's netns never see.
 *
 *   spoofprobe arp MAC IP TARGET_IP
 *       a broadcast ARP reply "IP is at MAC", from MAC
 *   spoofprobe udp SRC_IP DST_IP PORT TEXT
 *       TEXT in a UDP datagram from SRC_IP, through a raw IP socket
 *   spoofprobe frame SRC_MAC DST_MAC SRC_IP DST_IP PORT TEXT
 *       the same, as a whole Ethernet frame from SRC_MAC
 *   spoofprobe ra SRC_MAC
 *       an IPv6 router advertisement to ff02::1: a default route and the
 *       prefix 2001:db8:1::/64 for autoconf
 *
 * Exit 0 once sent; errors on stderr. */
#include <arpa/inet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netpacket/packet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void mac(const char *s, uint8_t out[6]) {
    unsigned b[6];
    if (sscanf(s, "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) != 6) {
        fprintf(stderr, "bad MAC %s\n", s);
        exit(2);
    }
    for (int i = 0; i < 6; i++)
        out[i] = (uint8_t)b[i];
}

static uint32_t ip4(const char *s) {
    struct in_addr a;
    if (inet_pton(AF_INET, s, &a) != 1) {
        fprintf(stderr, "bad IPv4 address %s\n", s);
        exit(2);
    }
    return a.s_addr;
}

/* The Internet checksum of `len` bytes, folded onto `sum`. */
static uint16_t csum(const uint8_t *p, size_t len, uint32_t sum) {
    for (size_t i = 0; i + 1 < len; i += 2)
        sum += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (len & 1)
        sum += (uint32_t)(p[len - 1] << 8);
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return htons((uint16_t)~sum);
}

static void send_frame(const uint8_t *frame, size_t len) {
    int fd = socket(AF_PACKET, SOCK_RAW, 0);
    if (fd < 0)
        die("socket(AF_PACKET)");
    struct sockaddr_ll to = {0};
    to.sll_family = AF_PACKET;
    to.sll_ifindex = (int)if_nametoindex("eth0");
    to.sll_halen = 6;
    memcpy(to.sll_addr, frame, 6);
    if (to.sll_ifindex == 0)
        die("eth0");
    if (sendto(fd, frame, len, 0, (struct sockaddr *)&to, sizeof to) != (ssize_t)len)
        die("sendto");
    close(fd);
}

static size_t eth_header(uint8_t *f, const uint8_t dst[6], const uint8_t src[6], uint16_t type) {
    memcpy(f, dst, 6);
    memcpy(f + 6, src, 6);
    f[12] = (uint8_t)(type >> 8);
    f[13] = (uint8_t)type;
    return 14;
}

/* An IPv4 header and UDP datagram carrying `text` at `p`; its length. */
static size_t ipv4_udp(uint8_t *p, uint32_t src, uint32_t dst, int port, const char *text) {
    size_t n = strlen(text), total = 20 + 8 + n;
    memset(p, 0, 28);
    p[0] = 0x45;
    p[2] = (uint8_t)(total >> 8);
    p[3] = (uint8_t)total;
    p[8] = 64;
    p[9] = IPPROTO_UDP;
    memcpy(p + 12, &src, 4);
    memcpy(p + 16, &dst, 4);
    uint16_t sum = csum(p, 20, 0);
    memcpy(p + 10, &sum, 2);
    p[20] = 0x30, p[21] = 0x39; /* source port 12345 */
    p[22] = (uint8_t)(port >> 8);
    p[23] = (uint8_t)port;
    p[24] = (uint8_t)((8 + n) >> 8);
    p[25] = (uint8_t)(8 + n);
    /* A zero UDP checksum means "none" over IPv4. */
    memcpy(p + 28, text, n);
    return total;
}

static void arp(char **argv) {
    uint8_t f[64] = {0}, sha[6], bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    mac(argv[0], sha);
    uint32_t spa = ip4(argv[1]), tpa = ip4(argv[2]);
    size_t n = eth_header(f, bcast, sha, ETH_P_ARP);
    uint8_t hdr[8] = {0, 1, 8, 0, 6, 4, 0, 2}; /* Ethernet, IPv4, reply */
    memcpy(f + n, hdr, 8);
    memcpy(f + n + 8, sha, 6);
    memcpy(f + n + 14, &spa, 4);
    memcpy(f + n + 18, bcast, 6);
    memcpy(f + n + 24, &tpa, 4);
    send_frame(f, n + 28);
}

static void udp(char **argv) {
    uint8_t p[1500];
    size_t n = ipv4_udp(p, ip4(argv[0]), ip4(argv[1]), atoi(argv[2]), argv[3]);
    int fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW); /* IP_HDRINCL */
    if (fd < 0)
        die("socket(SOCK_RAW)");
    struct sockaddr_in to = {0};
    to.sin_family = AF_INET;
    to.sin_addr.s_addr = ip4(argv[1]);
    if (sendto(fd, p, n, 0, (struct sockaddr *)&to, sizeof to) != (ssize_t)n)
        die("sendto");
    close(fd);
}

static void frame(char **argv) {
    uint8_t f[1514], src[6], dst[6];
    mac(argv[0], src);
    mac(argv[1], dst);
    size_t n = eth_header(f, dst, src, ETH_P_IP);
    n += ipv4_udp(f + n, ip4(argv[2]), ip4(argv[3]), atoi(argv[4]), argv[5]);
    send_frame(f, n);
}

static void ra(char **argv) {
    uint8_t f[256] = {0}, src[6], dst[6] = {0x33, 0x33, 0, 0, 0, 1};
    mac(argv[0], src);
    size_t n = eth_header(f, dst, src, ETH_P_IPV6);
    uint8_t *ip = f + n, *icmp = ip + 40;
    struct in6_addr from, to, prefix;
    inet_pton(AF_INET6, "fe80::42:ff:fe00:1", &from);
    inet_pton(AF_INET6, "ff02::1", &to);
    inet_pton(AF_INET6, "2001:db8:1::", &prefix);
    size_t len = 16 + 32; /* the RA, then one prefix information option */
    icmp[0] = 134;        /* router advertisement */
    icmp[4] = 64;         /* current hop limit */
    icmp[6] = 0x07, icmp[7] = 0x08; /* router lifetime 1800 s */
    uint8_t *opt = icmp + 16;
    opt[0] = 3, opt[1] = 4, opt[2] = 64, opt[3] = 0xc0; /* on-link, autonomous */
    opt[4] = 0, opt[5] = 1, opt[6] = 0x51, opt[7] = 0x80; /* valid 86400 s */
    opt[8] = 0, opt[9] = 0, opt[10] = 0x38, opt[11] = 0x40; /* preferred 14400 s */
    memcpy(opt + 16, &prefix, 16);
    ip[0] = 0x60;
    ip[4] = (uint8_t)(len >> 8), ip[5] = (uint8_t)len;
    ip[6] = IPPROTO_ICMPV6;
    ip[7] = 255;
    memcpy(ip + 8, &from, 16);
    memcpy(ip + 24, &to, 16);
    /* The pseudo-header: addresses, length, next header. */
    uint8_t pseudo[40] = {0};
    memcpy(pseudo, &from, 16);
    memcpy(pseudo + 16, &to, 16);
    pseudo[34] = (uint8_t)(len >> 8), pseudo[35] = (uint8_t)len;
    pseudo[39] = IPPROTO_ICMPV6;
    uint32_t sum = 0;
    for (int i = 0; i < 40; i += 2)
        sum += (uint32_t)(pseudo[i] << 8 | pseudo[i + 1]);
    uint16_t c = csum(icmp, len, sum);
    memcpy(icmp + 2, &c, 2);
    send_frame(f, n + 40 + len);
}

int main(int argc, char **argv) {
    if (argc >= 5 && strcmp(argv[1], "arp") == 0)
        arp(argv + 2);
    else if (argc >= 6 && strcmp(argv[1], "udp") == 0)
        udp(argv + 2);
    else if (argc >= 8 && strcmp(argv[1], "frame") == 0)
        frame(argv + 2);
    else if (argc >= 3 && strcmp(argv[1], "ra") == 0)
        ra(argv + 2);
    else {
        fprintf(stderr, "usage: spoofprobe arp|udp|frame|ra ...\n");
        return 2;
    }
    return 0;
}
