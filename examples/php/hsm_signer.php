<?php
/*
 * The smallest client for hsm-signer's one-call XML endpoints: one JSON POST over the
 * daemon's Unix socket with curl (CURLOPT_UNIX_SOCKET_PATH, php-curl), the answer decoded,
 * a refusal turned into HsmSignerError with the daemon's stable error code.
 * Used by tpuserinfo.php and wk_authn_request.php. See docs/integration.md.
 */

declare(strict_types=1);

/** A refusal from the daemon: HTTP status, stable error code (`error.code`), message. */
final class HsmSignerError extends RuntimeException
{
    public function __construct(
        public readonly int $status,
        public readonly string $errorCode,
        string $message,
    ) {
        parent::__construct("hsm-signer answered $status $errorCode: $message");
    }
}

/** POSTs $body as JSON to $path on the daemon at $socket; returns the decoded answer. */
function hsm_signer_post(string $socket, string $path, array $body): array
{
    $curl = curl_init('http://localhost' . $path); // the host is ignored on a Unix socket
    curl_setopt_array($curl, [
        CURLOPT_UNIX_SOCKET_PATH => $socket,
        CURLOPT_POSTFIELDS => json_encode($body, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES),
        // "Expect:" stops curl from waiting for "100 Continue" before a body over 1 KiB.
        CURLOPT_HTTPHEADER => ['Content-Type: application/json', 'Expect:'],
        CURLOPT_RETURNTRANSFER => true,
        CURLOPT_TIMEOUT => 10,
    ]);
    $text = curl_exec($curl);
    if ($text === false) {
        throw new RuntimeException("cannot reach hsm-signer at $socket: " . curl_error($curl));
    }
    $status = curl_getinfo($curl, CURLINFO_RESPONSE_CODE);
    $answer = json_decode($text, true) ?? [];
    if ($status !== 200) {
        $error = $answer['error'] ?? ['code' => 'unknown', 'message' => $text];
        throw new HsmSignerError($status, (string) $error['code'], (string) $error['message']);
    }
    return $answer;
}

/** --socket, else $HSM_SIGNER_SOCKET, else the packaged path. */
function hsm_signer_socket(array $options): string
{
    return $options['socket'] ?? (getenv('HSM_SIGNER_SOCKET') ?: '/run/hsm-signer/hsm-signer.sock');
}
