"""Receives Crier's webhooks (Pusher's format and signature) and checks each one with the
official SDK's `validate_webhook`, as a Pusher app would.

    python3 webhook_receiver.py [port]      # 0 picks a free port

Point an app's webhooks at it in crier.toml:

    [[apps]]
    id = "1"
    key = "app-key"
    secret = "app-secret"
    webhooks = [{ url = "http://127.0.0.1:3001/hook", events = ["channel_occupied", "channel_vacated", "member_added", "member_removed"] }]

Prints one JSON line per event; answers 401 to a request whose signature is wrong.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from crier_config import sdk

client = sdk()


class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        webhook = client.validate_webhook(
            key=self.headers.get("X-Pusher-Key", ""),
            signature=self.headers.get("X-Pusher-Signature", ""),
            body=body,
        )
        if webhook is None:  # wrong key or signature: not from our Crier
            print(json.dumps({"rejected": body}), flush=True)
            self.send_response(401)
            self.end_headers()
            return
        for event in webhook["events"]:
            print(json.dumps(event), flush=True)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):  # keep stdout for the events
        pass


server = HTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 3001), Hook)
print(json.dumps({"listening": server.server_address[1]}), flush=True)
server.serve_forever()
