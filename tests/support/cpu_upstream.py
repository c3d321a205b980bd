"""An upstream whose endpoints burn known CPU, for tests/resources.rs.

GET /reports/heavy burns 20 ms of CPU and answers 8 KiB (a report), GET /light
burns 2 ms and answers 3 bytes; CPU is measured with the thread's own clock so the
amount holds on a busy machine. Any query string is ignored. Usage: cpu_upstream.py PORT PID_FILE.
HTTP/1.1 keep-alive, a thread per connection.
"""
import http.server
import os
import sys
import time

# path: (CPU seconds, response bytes)
BURN = {"/reports/heavy": (0.020, 8192), "/light": (0.002, 3)}


def burn(seconds):
    end = time.thread_time() + seconds
    x = 0
    while time.thread_time() < end:
        for _ in range(200):
            x = (x * 31 + 7) % 1000003
    return x


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        cost = BURN.get(path)
        if cost is None:
            body = b"not found\n"
            self.send_response(404)
        else:
            burn(cost[0])
            body = b"x" * (cost[1] - 1) + b"\n"
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    port, pid_file = int(sys.argv[1]), sys.argv[2]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    with open(pid_file, "w") as f:
        f.write(f"{os.getpid()}\n")
    server.serve_forever()


if __name__ == "__main__":
    main()
