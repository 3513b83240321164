<?php
// The ERP's "new order" hook: one UDP datagram per event, the way a PHP backend with a
// side UDP port pushes (no HTTP round trip, nothing to wait for).
//
//   php udp-order.php [order-id]
//
// Sends order <id> unsigned and order <id + 1> signed. Unsigned datagrams are accepted
// only while Crier's UDP port is on a loopback address (and `require_signature` is off);
// a signed datagram is "<hex HMAC-SHA256 of the JSON, keyed with the app secret> <JSON>"
// and is accepted everywhere. UDP has no answer: a dropped datagram is counted in
// Crier's /metrics (crier_ingest_dropped_total), not reported here. Use the HTTP API
// (http-publish.php) when the caller must know the event was stored.

require __DIR__ . '/config.php';

$first = (int) ($argv[1] ?? 1001);
$socket = stream_socket_client("udp://$CRIER_UDP", $errno, $error);
if ($socket === false) {
    fwrite(STDERR, "cannot open udp://$CRIER_UDP: $error\n");
    exit(1);
}

function order_event(string $appId, int $id, string $customer, string $total): string
{
    $order = ['id' => $id, 'customer' => $customer, 'total' => $total];
    return json_encode([
        'app_id' => $appId,
        'name' => 'order-created',
        'channel' => 'orders',
        'data' => json_encode($order),   // a string, as in the Pusher HTTP API
    ]);
}

// Unsigned: the JSON is the whole datagram.
$plain = order_event($APP_ID, $first, 'ACME GmbH', '249.00');
fwrite($socket, $plain);

// Signed: the signature, one space, then exactly the bytes that were signed.
$json = order_event($APP_ID, $first + 1, 'Globex Ltd', '1200.50');
$signature = hash_hmac('sha256', $json, $APP_SECRET);
fwrite($socket, "$signature $json");

fclose($socket);
echo "sent orders $first (unsigned) and " . ($first + 1) . " (signed) to udp://$CRIER_UDP\n";
