<?php
// Where Crier is and which app to publish as. The defaults are Crier's development
// app (`cargo run --release` starts it); override them with environment variables.
// The CRIER_APP_* names are the ones `crier serve` itself reads.

$CRIER_URL = getenv('CRIER_URL') ?: 'http://127.0.0.1:6001';     // HTTP API and WebSocket
$CRIER_UDP = getenv('CRIER_UDP') ?: '127.0.0.1:6002';            // UDP ingest
$CRIER_REDIS = getenv('CRIER_REDIS') ?: '127.0.0.1:6379';        // Redis queue ingest
$CRIER_QUEUE_KEY = getenv('CRIER_QUEUE_KEY') ?: 'crier:publish';
$APP_ID = getenv('CRIER_APP_ID') ?: '1';
$APP_KEY = getenv('CRIER_APP_KEY') ?: 'app-key';
$APP_SECRET = getenv('CRIER_APP_SECRET') ?: 'app-secret';
