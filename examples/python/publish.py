"""Publishing and querying with the official Pusher Python SDK, unchanged.

    pip install pusher
    python3 publish.py

The SDK accepts only numeric app ids ("Invalid app id" otherwise), as Pusher issues
them; Crier's development app is "1".
"""

import json

from crier_config import sdk

client = sdk()

# One event; the SDK JSON-encodes `data`.
client.trigger("orders", "order-shipped", {"id": 1001, "carrier": "DHL"})

# Several events in one request.
client.trigger_batch(
    [
        {"channel": "orders", "name": "order-packed", "data": {"id": 1002}},
        {"channel": "dashboard", "name": "stats", "data": {"open_orders": 7}},
    ]
)

# Who is listening: occupied presence channels with their user counts (user_count needs
# the presence- prefix, as on Pusher), one channel's subscriptions, presence members.
print(json.dumps({"channels": client.channels_info(prefix_filter="presence-", attributes=["user_count"])}))
print(json.dumps({"orders": client.channel_info("orders", ["subscription_count"])}))
print(json.dumps({"presence-team": client.users_info("presence-team")}))
