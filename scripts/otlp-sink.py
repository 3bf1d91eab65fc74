#!/usr/bin/env python3
"""An OTLP/HTTP receiver that accepts every trace export and keeps nothing: the collector for
measuring what exporting traces costs the server (docs/tracing.md). Prints the exports and
bytes received when stopped.

    scripts/otlp-sink.py [PORT]     # default 4318; then OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318
"""

import http.server
import signal
import sys

received = {"exports": 0, "bytes": 0}


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        received["exports"] += 1
        received["bytes"] += length
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 4318
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Sink)
    # Stopped by SIGTERM too (a background job ignores SIGINT).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    print(f"otlp-sink: {received['exports']} exports, {received['bytes']} bytes", flush=True)


if __name__ == "__main__":
    main()
