"""Real Exchange-port servers and clients for the live-capture tests (run inside namespaces).

    python tests/live_traffic.py serve ADDR      # SMTP 25 (aiosmtpd), HTTP 80, POP3 110, IMAP 143, UDP 2883
    python tests/live_traffic.py talk ADDR       # one conversation with each, then exit
    python tests/live_traffic.py udp ADDR N      # N datagrams to ADDR:2883, one per millisecond

``serve`` prints "ready" once every listener is up.
"""

from __future__ import annotations

import http.server
import imaplib
import poplib
import smtplib
import socket
import socketserver
import sys
import threading
import time
import urllib.request

from aiosmtpd.controller import Controller

HTTP_PATHS = ("/exchange/alice/Inbox/", "/Microsoft-Server-ActiveSync?Cmd=Ping&User=alice&DeviceId=d1&DeviceType=PPC")


class _Http(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"<html>{self.path}</html>".encode()
        self.send_response(200 if self.path.startswith(("/exchange/", "/Microsoft-Server-ActiveSync")) else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _Lines(socketserver.StreamRequestHandler):
    """Just enough POP3 or IMAP4 for poplib / imaplib to log in, look, and log out."""

    def handle(self) -> None:
        imap = self.server.server_address[1] == 143  # type: ignore[index]
        self.wfile.write(b"* OK [CAPABILITY IMAP4rev1] ready\r\n" if imap else b"+OK POP3 ready\r\n")
        for raw in self.rfile:
            line = raw.decode(errors="replace").strip()
            if not imap:
                cmd = line.split(" ")[0].upper()
                if cmd == "STAT":
                    self.wfile.write(b"+OK 0 0\r\n")
                else:
                    self.wfile.write(b"+OK\r\n")
                if cmd == "QUIT":
                    return
                continue
            tag, _, rest = line.partition(" ")
            cmd = rest.split(" ")[0].upper()
            if cmd == "CAPABILITY":
                self.wfile.write(b"* CAPABILITY IMAP4rev1\r\n")
            elif cmd == "SELECT":
                self.wfile.write(b"* 0 EXISTS\r\n* 0 RECENT\r\n")
            elif cmd == "LOGOUT":
                self.wfile.write(b"* BYE\r\n" + tag.encode() + b" OK LOGOUT done\r\n")
                return
            self.wfile.write(tag.encode() + b" OK " + cmd.encode() + b" done\r\n")


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class _Sink:
    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 OK"


def serve(addr: str) -> None:
    smtp = Controller(_Sink(), hostname=addr, port=25)
    smtp.start()
    servers = [http.server.ThreadingHTTPServer((addr, 80), _Http), _Server((addr, 110), _Lines), _Server((addr, 143), _Lines)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((addr, 2883))
    print("ready", flush=True)
    while True:
        udp.recv(65535)


def talk(addr: str) -> None:
    with smtplib.SMTP(addr, 25, timeout=10) as s:
        s.sendmail("alice@example.com", ["bob@example.com"], "Subject: hi\r\n\r\n" + ("x" * 70 + "\r\n") * 40)
    for path in HTTP_PATHS:
        with urllib.request.urlopen(f"http://{addr}{path}", timeout=10) as r:
            r.read()
    pop = poplib.POP3(addr, 110, timeout=10)
    pop.user("alice")
    pop.pass_("secret")
    pop.stat()
    pop.quit()
    imap = imaplib.IMAP4(addr, 143, timeout=10)
    imap.login("alice", "secret")
    imap.select("INBOX")
    imap.logout()
    udp_burst(addr, 20)


def udp_burst(addr: str, n: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(n):
        s.sendto(b"notify %d" % i, (addr, 2883))
        time.sleep(0.001)


if __name__ == "__main__":
    what, target = sys.argv[1], sys.argv[2]
    if what == "serve":
        serve(target)
    elif what == "talk":
        talk(target)
    else:
        udp_burst(target, int(sys.argv[3]))
