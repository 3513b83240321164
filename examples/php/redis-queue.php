<?php
// The approval workflow (OA) hands an "approval requested" event to Crier through a Redis
// list: LPUSH returns as soon as Redis has the item, even while Crier is restarting, and
// Crier publishes it (at least once) when it takes the item. Crier must run with
//
//   [ingest.redis_queue]
//   url = "redis://127.0.0.1:6379"
//   key = "crier:publish"
//
//   php redis-queue.php [approval-id]
//
// Uses the phpredis extension, which Debian packages (`apt-get install php-redis`), so no
// Composer package is needed. Without it, `redis-cli LPUSH crier:publish '<json>'` from
// a shell (or exec() from PHP) does the same.

require __DIR__ . '/config.php';

if (!class_exists('Redis')) {
    fwrite(STDERR, "the phpredis extension is missing: apt-get install php-redis\n");
    exit(1);
}

$approval = (int) ($argv[1] ?? 501);
[$host, $port] = explode(':', $CRIER_REDIS);
$redis = new Redis();
$redis->connect($host, (int) $port, 2.0);

// The same JSON as a UDP datagram. The approver (user 8) reads private-user-8.
$event = json_encode([
    'app_id' => $APP_ID,
    'name' => 'approval-requested',
    'channel' => 'private-user-8',
    'data' => json_encode(['approval' => $approval, 'document' => 'PO-2024-0042', 'amount' => '1200.50']),
]);
$length = $redis->lPush($CRIER_QUEUE_KEY, $event);
echo "queued approval $approval on $CRIER_QUEUE_KEY (queue length $length)\n";
