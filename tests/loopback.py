"""A set folder served over http on 127.0.0.1 for streaming tests, optionally misbehaving."""

from __future__ import annotations

import functools
import http.server
import socket
import threading


class LoopbackServer:
    """Serves a set folder on 127.0.0.1; `cut` maps a file name to how many bytes to send of it (then drop);
    `replace` to other content sent in its place; `act` to a function (handler, the file's path) that answers the
    request itself, however it misbehaves. `stopping` is set when the server stops: a misbehaving answer waits on
    it, never longer."""

    def __init__(self, folder, cut=None, replace=None, act=None):
        cut, replace, act = cut or {}, replace or {}, act or {}
        self.stopping = stopping = threading.Event()

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                if name in act:
                    self.stopping = stopping
                    try:
                        act[name](self, folder / name)
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the client gave up, as it should
                    self.close_connection = True
                    return
                if name in replace:  # a complete-looking response with other content
                    body = replace[name]
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if name in cut:
                    body = (folder / name).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: cut[name]])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)  # the connection drops mid-shard
                    self.close_connection = True
                    return
                super().do_GET()

        handler = functools.partial(Handler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
