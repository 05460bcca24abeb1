<?php
/*
 * Signs KSeF's AuthTokenRequest with XAdES-BES through hsm-signer (xades/sign), sending
 * the document itself (`Content-Type: application/xml`): the unsigned request goes in, the
 * signed one comes out byte for byte, ready for KSeF's `POST /auth/xades-signature`. No
 * XML crypto in PHP, and no private key in this process.
 *
 *   php ksef_auth.php [--socket=PATH] [--key=ksef] AUTH_TOKEN_REQUEST.xml > signed.xml
 *
 * What the daemon says about the signature (X-Hsm-Signer-* headers: signature-id,
 * signing-time, algorithm, ...) goes to standard error. A refusal is JSON, as for every
 * endpoint (HsmSignerError, from hsm_signer.php). See docs/ksef.md.
 */

declare(strict_types=1);

require __DIR__ . '/hsm_signer.php';

/** POSTs $xml to xades/sign of $key; returns [signed document, X-Hsm-Signer-* headers]. */
function hsm_signer_xades_raw(string $socket, string $key, string $xml): array
{
    $curl = curl_init('http://localhost/v1/keys/' . rawurlencode($key) . '/xades/sign');
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

$options = getopt('', ['socket:', 'key:'], $rest);
$file = $argv[$rest] ?? null;
if ($file === null) {
    fwrite(STDERR, "usage: php ksef_auth.php [--socket=PATH] [--key=NAME] AUTH_TOKEN_REQUEST.xml\n");
    exit(2);
}
$xml = file_get_contents($file);
if ($xml === false) {
    fwrite(STDERR, "cannot read $file\n");
    exit(2);
}
try {
    [$signed, $meta] = hsm_signer_xades_raw(hsm_signer_socket($options), $options['key'] ?? 'ksef', $xml);
} catch (HsmSignerError $e) {
    fwrite(STDERR, $e->getMessage() . "\n");
    exit(1);
}
foreach ($meta as $name => $value) {
    fwrite(STDERR, "$name: $value\n");
}
// Final bytes: send exactly these to KSeF.
echo $signed;
