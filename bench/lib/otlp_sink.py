"""A collector stand-in for the traced edges: accepts OTLP/HTTP exports
(POST /v1/traces), reads them whole and answers 200 with an empty
ExportTraceServiceResponse, counting exports and bytes. Decoding is a real collector's
job; what the edge pays is building, queueing and sending the spans.

    python3 otlp_sink.py PORT STATS_FILE
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

stats = {"exports": 0, "bytes": 0}


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 (the stdlib's naming)
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        ok = self.path == "/v1/traces"
        if ok:
            stats["exports"] += 1
            stats["bytes"] += len(body)
            with open(sys.argv[2], "w") as out:
                json.dump(stats, out)
        self.send_response(200 if ok else 404)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
