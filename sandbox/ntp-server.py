"""The sandbox's time server: a stratum-1 NTP server (RFC 5905, server mode only) whose time is this
machine's clock plus a skew read from a file at every request, so a test can make every node's clock
look wrong (fast or slow) without touching a clock. Usage: ntp-server.py ADDRESS SKEW_FILE.
Stops by itself after 6 hours."""

import socket
import struct
import sys
import time

NTP_EPOCH = 2208988800  # 1900-01-01 to 1970-01-01, seconds


def ntp_time(t):
    seconds = int(t) + NTP_EPOCH
    return struct.pack("!II", seconds & 0xFFFFFFFF, int((t % 1) * 2**32) & 0xFFFFFFFF)


def skew(path):
    try:
        with open(path) as f:
            return float(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0.0


def main():
    address, skew_file = sys.argv[1], sys.argv[2]
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((address, 123))
    s.settimeout(1)
    end = time.time() + 6 * 3600
    while time.time() < end:
        try:
            request, peer = s.recvfrom(512)
        except socket.timeout:
            continue
        received = time.time() + skew(skew_file)
        if len(request) < 48 or request[0] & 7 != 3:  # client mode only
            continue
        version = (request[0] >> 3) & 7
        reply = struct.pack("!BBbb", (version << 3) | 4, 1, request[2], -20)
        reply += struct.pack("!II", 0, 1 << 8)  # root delay 0, root dispersion ~4 ms
        reply += b"SBOX" + ntp_time(received - 1) + request[40:48] + ntp_time(received)
        reply += ntp_time(time.time() + skew(skew_file))
        s.sendto(reply, peer)


main()
