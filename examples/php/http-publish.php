<?php
// Publishing through the Pusher HTTP API with nothing but PHP: the request is signed by
// hand (hash_hmac + md5), as any Pusher server SDK does it. Crier answers only once the
// event has its id and is in history, so a 200 means "stored and on its way".
//
//   php http-publish.php

require __DIR__ . '/config.php';

/** POSTs a JSON body to /apps/{id}{path}, signed; returns [HTTP status, body]. */
function pusher_post(string $path, array $payload): array
{
    global $CRIER_URL, $APP_ID, $APP_KEY, $APP_SECRET;
    $body = json_encode($payload);
    $path = "/apps/$APP_ID$path";
    $query = [
        'auth_key' => $APP_KEY,
        'auth_timestamp' => time(),
        'auth_version' => '1.0',
        'body_md5' => md5($body),
    ];
    ksort($query);                                  // signed in key order
    $queryString = http_build_query($query);
    $signature = hash_hmac('sha256', "POST\n$path\n$queryString", $APP_SECRET);
    $context = stream_context_create(['http' => [
        'method' => 'POST',
        'header' => "Content-Type: application/json\r\n",
        'content' => $body,
        'ignore_errors' => true,                    // keep the body of a 4xx answer
        'timeout' => 5,
    ]]);
    $answer = file_get_contents("$CRIER_URL$path?$queryString&auth_signature=$signature", false, $context);
    $status = (int) explode(' ', $http_response_header[0] ?? 'HTTP/1.1 0')[1];
    return [$status, $answer];
}

// One event to one channel. `data` is a string: JSON-encode objects yourself.
[$status, $answer] = pusher_post('/events', [
    'name' => 'order-shipped',
    'channel' => 'orders',
    'data' => json_encode(['id' => 1001, 'carrier' => 'DHL']),
]);
echo "trigger: $status $answer\n";
if ($status !== 200) exit(1);

// Several events in one request (up to 10 in Pusher; each item as above).
[$status, $answer] = pusher_post('/batch_events', ['batch' => [
    ['name' => 'order-packed', 'channel' => 'orders', 'data' => json_encode(['id' => 1002])],
    ['name' => 'stats', 'channel' => 'dashboard', 'data' => json_encode(['open_orders' => 7])],
]]);
echo "batch: $status $answer\n";
if ($status !== 200) exit(1);
