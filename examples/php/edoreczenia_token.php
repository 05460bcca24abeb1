<?php
/*
 * Gets an e-Doręczenia access token with a client assertion signed by hsm-signer: the
 * daemon builds and signs the RFC 7523 assertion (jwt/client-assertion) with the key on
 * the token, and this script sends it to the token endpoint with OIDC client_credentials.
 * No private key and no JOSE code here (php-curl only).
 *
 *   php edoreczenia_token.php [--socket PATH] [--key edoreczenia] [--audience URL] \
 *       --client-id ID TOKEN_URL
 *
 * Prints the token endpoint's JSON answer ({"access_token", "token_type", "expires_in"}).
 * The assertion's audience is TOKEN_URL unless --audience says otherwise. See
 * docs/edoreczenia.md.
 */

declare(strict_types=1);

require __DIR__ . '/hsm_signer.php';

const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

/** A fresh assertion from the daemon (one per token request: its jti is single-use). */
function client_assertion(string $socket, string $key, string $clientId, string $audience): string
{
    $answer = hsm_signer_post($socket, '/v1/keys/' . rawurlencode($key) . '/jwt/client-assertion', [
        'client_id' => $clientId,
        'audience' => $audience,
    ]);
    return $answer['jws'];
}

/** The token endpoint's answer to a client_credentials request with the assertion. */
function access_token(string $tokenUrl, string $clientId, string $assertion): array
{
    $curl = curl_init($tokenUrl);
    curl_setopt_array($curl, [
        CURLOPT_POSTFIELDS => http_build_query([
            'grant_type' => 'client_credentials',
            'client_id' => $clientId,
            'client_assertion_type' => JWT_BEARER,
            'client_assertion' => $assertion,
        ]),
        CURLOPT_HTTPHEADER => ['Accept: application/json', 'Expect:'],
        CURLOPT_RETURNTRANSFER => true,
        CURLOPT_TIMEOUT => 10,
    ]);
    $text = curl_exec($curl);
    if ($text === false) {
        throw new RuntimeException("cannot reach the token endpoint $tokenUrl: " . curl_error($curl));
    }
    $status = curl_getinfo($curl, CURLINFO_RESPONSE_CODE);
    if ($status !== 200) { // {"error": "invalid_client", ...}
        throw new RuntimeException("the token endpoint answered $status: $text");
    }
    return json_decode($text, true, 16, JSON_THROW_ON_ERROR);
}

$options = getopt('', ['socket:', 'key:', 'client-id:', 'audience:'], $rest);
$tokenUrl = $argv[$rest] ?? null;
if ($tokenUrl === null || !isset($options['client-id'])) {
    fwrite(STDERR, "usage: php edoreczenia_token.php [--socket PATH] [--key NAME] [--audience URL] --client-id ID TOKEN_URL\n");
    exit(2);
}
$socket = hsm_signer_socket($options);
$clientId = $options['client-id'];
try {
    $assertion = client_assertion($socket, $options['key'] ?? 'edoreczenia', $clientId, $options['audience'] ?? $tokenUrl);
    $token = access_token($tokenUrl, $clientId, $assertion);
} catch (RuntimeException $e) { // HsmSignerError included: "hsm-signer answered 403 audience_not_allowed: ..."
    fwrite(STDERR, 'edoreczenia_token.php: ' . $e->getMessage() . "\n");
    exit(1);
}
echo json_encode($token, JSON_UNESCAPED_SLASHES), "\n";
