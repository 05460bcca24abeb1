<?php
/*
 * Signs a SOAP envelope with WS-Security by sending the envelope itself, not JSON:
 * `Content-Type: application/xml`, options as query parameters, the signed envelope back
 * as the body and what the daemon says about it in X-Hsm-Signer-* headers. For large
 * envelopes (a scanned PDF in base64): nothing is JSON-escaped on either side.
 *
 *   php raw_wss.php [--socket=PATH] [--key=epuap] [--ttl=SECONDS] ENVELOPE.xml > signed.xml
 *
 * The metadata goes to standard error. A refusal is JSON, as for every endpoint
 * (HsmSignerError, from hsm_signer.php). See docs/api.md, "The raw form".
 */

declare(strict_types=1);

require __DIR__ . '/hsm_signer.php';

/** POSTs $xml to wss/sign of $key; returns [signed envelope, X-Hsm-Signer-* headers]. */
function hsm_signer_wss_raw(string $socket, string $key, string $xml, ?int $ttl): array
{
    $query = $ttl === null ? '' : '?' . http_build_query(['timestamp_ttl_seconds' => $ttl]);
    $curl = curl_init('http://localhost/v1/keys/' . rawurlencode($key) . '/wss/sign' . $query);
    $headers = [];
    curl_setopt_array($curl, [
        CURLOPT_UNIX_SOCKET_PATH => $socket,
        CURLOPT_POSTFIELDS => $xml,
        CURLOPT_HTTPHEADER => ['Content-Type: application/xml', 'Expect:'],
        CURLOPT_RETURNTRANSFER => true,
        CURLOPT_TIMEOUT => 30,
        CURLOPT_HEADERFUNCTION => function ($curl, string $line) use (&$headers): int {
            if (preg_match('/^x-hsm-signer-([a-z0-9-]+):\s*(.*?)\s*$/i', $line, $m)) {
                $headers[strtolower($m[1])] = $m[2];
            }
            return strlen($line);
        },
    ]);
    $body = curl_exec($curl);
    if ($body === false) {
        throw new RuntimeException("cannot reach hsm-signer at $socket: " . curl_error($curl));
    }
    $status = curl_getinfo($curl, CURLINFO_RESPONSE_CODE);
    if ($status !== 200) {
        $error = json_decode($body, true)['error'] ?? ['code' => 'unknown', 'message' => $body];
        throw new HsmSignerError($status, (string) $error['code'], (string) $error['message']);
    }
    return [$body, $headers];
}

$options = getopt('', ['socket:', 'key:', 'ttl:'], $rest);
$file = $argv[$rest] ?? null;
if ($file === null) {
    fwrite(STDERR, "usage: php raw_wss.php [--socket=PATH] [--key=NAME] [--ttl=SECONDS] ENVELOPE.xml\n");
    exit(2);
}
$xml = file_get_contents($file);
if ($xml === false) {
    fwrite(STDERR, "cannot read $file\n");
    exit(2);
}
try {
    [$signed, $meta] = hsm_signer_wss_raw(
        hsm_signer_socket($options),
        $options['key'] ?? 'epuap',
        $xml,
        isset($options['ttl']) ? (int) $options['ttl'] : null,
    );
} catch (HsmSignerError $e) {
    fwrite(STDERR, $e->getMessage() . "\n");
    exit(1);
}
foreach ($meta as $name => $value) {
    fwrite(STDERR, "$name: $value\n");
}
echo $signed;
