#!/usr/bin/env python3
# A small QMP client for the iotests: connects to the monitor socket given
# as argv[1] (retrying while the daemon starts), prints the greeting, then
# sends each line of stdin as one command and prints it ("-> ") with what
# comes back ("<- ") up to and including its reply; events that arrive
# before a reply are printed in order.  Lines starting with '#' are
# printed as they are.  Version numbers and timestamps are filtered so
# that golden output holds for QEMU and for us.
import json
import re
import socket
import sys
import time


def filt(line):
    line = re.sub(r'\{"qemu": \{[^}]*\}, "package": "[^"]*"\}', 'VERSION', line)
    line = re.sub(r'"seconds": \d+, "microseconds": \d+', '"seconds": S, "microseconds": US',
                  line)
    return line


def main():
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    for _ in range(200):
        try:
            sock.connect(sys.argv[1])
            break
        except OSError:
            time.sleep(0.05)
    else:
        print('cannot connect to the monitor')
        return 1
    f = sock.makefile('rb', buffering=0)
    print(filt(f.readline().decode().rstrip('\r\n')))
    for line in sys.stdin:
        line = line.rstrip('\n')
        if not line:
            continue
        if line.startswith('#'):
            print(line)
            continue
        print('-> ' + line)
        sock.sendall(line.encode() + b'\n')
        while True:
            reply = f.readline().decode()
            if not reply:
                print('<- (connection closed)')
                return 0
            print('<- ' + filt(reply.rstrip('\r\n')))
            if not reply.startswith('{"event"') and '"event": ' not in reply:
                break
    return 0


if __name__ == '__main__':
    sys.exit(main())
