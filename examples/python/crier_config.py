"""Where Crier is and which app to use: the development app unless the environment says
otherwise (the CRIER_APP_* names are the ones `crier serve` reads)."""

import os
from urllib.parse import urlsplit

CRIER_URL = os.environ.get("CRIER_URL", "http://127.0.0.1:6001")
APP_ID = os.environ.get("CRIER_APP_ID", "1")  # numeric: the SDK refuses other ids
APP_KEY = os.environ.get("CRIER_APP_KEY", "app-key")
APP_SECRET = os.environ.get("CRIER_APP_SECRET", "app-secret")


def sdk():
    """The official `pusher` SDK (pip install pusher), pointed at Crier."""
    import pusher

    url = urlsplit(CRIER_URL)
    return pusher.Pusher(
        app_id=APP_ID,
        key=APP_KEY,
        secret=APP_SECRET,
        host=url.hostname,
        port=url.port,
        ssl=url.scheme == "https",
    )
