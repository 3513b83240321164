"""A subscriber over Server-Sent Events with nothing but the standard library.

    python3 sse_subscriber.py orders,dashboard
    python3 sse_subscriber.py private-user-8 --token "$(curl -s 'http://127.0.0.1:8080/token?channels=private-user-8&user_id=8' | jq -r .token)"

Prints one JSON envelope per line: {"id", "channel", "event", "data"}. Private and
presence channels need a JWT (php/auth.php's /token hands one out). Each event's `id:`
line is a cursor: pass it back as --last-event-id (a browser's EventSource does so by
itself) and Crier replays what was missed, or announces a `crier:gap` first if its
history no longer reaches back that far.
"""

import argparse
import json
import urllib.parse
import urllib.request

from crier_config import APP_KEY, CRIER_URL

parser = argparse.ArgumentParser()
parser.add_argument("channels", help="comma-separated channel names")
parser.add_argument("--token", help="JWT for private and presence channels")
parser.add_argument("--last-event-id", help="resume after this cursor")
parser.add_argument("--count", type=int, default=0, help="exit after this many messages")
args = parser.parse_args()

query = {"channels": args.channels}
if args.token:
    query["token"] = args.token
url = f"{CRIER_URL}/app/{APP_KEY}/sse?{urllib.parse.urlencode(query)}"
request = urllib.request.Request(url, headers={"Accept": "text/event-stream"})
if args.last_event_id:
    request.add_header("Last-Event-ID", args.last_event_id)

received = 0
with urllib.request.urlopen(request) as stream:
    data = []
    for raw in stream:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line == "" and data:  # a blank line ends the event
            envelope = json.loads("\n".join(data))
            data = []
            print(json.dumps(envelope), flush=True)
            received += 1
            if received == args.count:
                break
        # `id:`, `retry:` and `:` heartbeat lines need nothing here
