<?php
// The endpoint your web app already has for pusher-js (Laravel's /broadcasting/auth is
// the same thing), written out in plain PHP, plus a token route for SSE and long-poll.
//
//   php -S 127.0.0.1:8080 auth.php
//
//   POST /pusher/auth       socket_id, channel_name      private-* and presence-* channels
//   POST /pusher/user-auth  socket_id                    pusher.signin() (user authentication)
//   GET  /token?channels=a,b                             a JWT for /app/{key}/sse and /poll
//
// Who is logged in comes from your session. To keep the example self-contained it comes
// from a `user_id` parameter (pusher-js sends it through `channelAuthorization.params`):
// never do that in production, anyone could claim to be anyone.

require __DIR__ . '/config.php';

$USERS = [
    '7' => ['name' => 'Alice (sales)'],
    '8' => ['name' => 'Bob (approvals)'],
];

/** The logged-in user, or null. Replace with your session lookup. */
function current_user(): ?array
{
    global $USERS;
    $id = (string) ($_REQUEST['user_id'] ?? '');
    return isset($USERS[$id]) ? ['id' => $id, 'info' => $USERS[$id]] : null;
}

/** Your access rules: here, private-user-{id} belongs to that user, other channels to anyone logged in. */
function may_read(?array $user, string $channel): bool
{
    if ($user === null) return false;
    if (preg_match('/^private-user-(.+)$/', $channel, $m)) return $m[1] === $user['id'];
    return true;
}

function reply(int $status, array $body): void
{
    http_response_code($status);
    header('Content-Type: application/json');
    header('Access-Control-Allow-Origin: *');   // demo pages on another port; restrict in production
    echo json_encode($body);
}

function base64url(string $bytes): string
{
    return rtrim(strtr(base64_encode($bytes), '+/', '-_'), '=');
}

/** An HS256 JSON Web Token signed with the app secret, as Crier's SSE and long-poll expect. */
function jwt(array $claims, string $secret): string
{
    $header = base64url(json_encode(['alg' => 'HS256', 'typ' => 'JWT']));
    $payload = base64url(json_encode($claims));
    return "$header.$payload." . base64url(hash_hmac('sha256', "$header.$payload", $secret, true));
}

$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
$user = current_user();
$socketId = (string) ($_POST['socket_id'] ?? '');
if (str_starts_with($path, '/pusher/') && !preg_match('/^\d+\.\d+$/', $socketId)) {
    reply(400, ['error' => 'socket_id missing or malformed']);
    return;
}

switch ($path) {
    case '/pusher/auth':
        $channel = (string) ($_POST['channel_name'] ?? '');
        if (!may_read($user, $channel)) {
            reply(403, ['error' => "not allowed: $channel"]);
            break;
        }
        if (str_starts_with($channel, 'presence-')) {
            // Presence: the member's id and info are signed along with the channel.
            $channelData = json_encode(['user_id' => $user['id'], 'user_info' => $user['info']]);
            $signature = hash_hmac('sha256', "$socketId:$channel:$channelData", $APP_SECRET);
            reply(200, ['auth' => "$APP_KEY:$signature", 'channel_data' => $channelData]);
        } else {
            $signature = hash_hmac('sha256', "$socketId:$channel", $APP_SECRET);
            reply(200, ['auth' => "$APP_KEY:$signature"]);
        }
        break;

    case '/pusher/user-auth':
        if ($user === null) {
            reply(403, ['error' => 'not logged in']);
            break;
        }
        $userData = json_encode(['id' => $user['id'], 'user_info' => $user['info']]);
        $signature = hash_hmac('sha256', "$socketId::user::$userData", $APP_SECRET);
        reply(200, ['auth' => "$APP_KEY:$signature", 'user_data' => $userData]);
        break;

    case '/token':
        $channels = array_values(array_filter(explode(',', (string) ($_GET['channels'] ?? ''))));
        foreach ($channels as $channel) {
            if (!may_read($user, $channel)) {
                reply(403, ['error' => "not allowed: $channel"]);
                return;
            }
        }
        $claims = ['channels' => $channels, 'exp' => time() + 3600];
        if ($user !== null) {
            $claims['sub'] = $user['id'];              // the member id on presence channels
            $claims['user_info'] = $user['info'];
        }
        reply(200, ['token' => jwt($claims, $APP_SECRET)]);
        break;

    default:
        reply(404, ['error' => "no route $path"]);
}
