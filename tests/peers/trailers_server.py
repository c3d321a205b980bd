"""HTTP/1.1 upstream (Python's http.server) whose responses end with chunked trailers,
for tests/trailers.rs.

Usage: trailers_server.py PORT. Every GET is answered `200`, `Transfer-Encoding:
chunked`, `Trailer: x-checksum`, a body of two chunks (`hello ` and `world`), then the
last chunk followed by the trailer field `x-checksum: abc123`. http.server writes no
chunked framing itself, so the framing below is written by hand, byte for byte as
RFC 9112 section 7.1 gives it. `GET /malformed` ends instead with a trailer line that
is not a field (`no colon here`); `GET /framing` adds a `transfer-encoding` trailer
field, which a proxy must not forward as a trailer. Prints `listening` once bound.
"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Trailer", "x-checksum")
        self.end_headers()
        for chunk in (b"hello ", b"world"):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        if self.path == "/malformed":
            self.wfile.write(b"0\r\nno colon here\r\n\r\n")
        elif self.path == "/framing":
            self.wfile.write(b"0\r\ntransfer-encoding: chunked\r\nx-checksum: abc123\r\n\r\n")
        else:
            self.wfile.write(b"0\r\nx-checksum: abc123\r\n\r\n")
        self.wfile.flush()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    print("listening", flush=True)
    server.serve_forever()
