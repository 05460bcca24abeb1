<?php
/*
 * Builds a SAML 2.0 AuthnRequest for Profil Zaufany, signs it (enveloped XML-DSig,
 * rsa-sha256, exclusive C14N) through the hsm-signer daemon, puts the certificate in
 * KeyInfo/X509Data, and prints the signed XML on standard output.
 *
 * Needs only what Debian ships: php-cli, php-curl (CURLOPT_UNIX_SOCKET_PATH) and php-xml
 * (DOMDocument, C14N).
 *
 *   php sign_authn_request.php [--socket PATH] [--key NAME] [--issuer ID]
 *       [--destination URL] [--acs URL]
 *
 * --socket defaults to $HSM_SIGNER_SOCKET, then /run/hsm-signer/hsm-signer.sock;
 * --key to $HSM_SIGNER_KEY, then "epuap". The caller's uid must be allowed by the
 * daemon's [server] allowed_uids / allowed_gids. See docs/integration.md.
 */

declare(strict_types=1);

const NS_SAMLP = 'urn:oasis:names:tc:SAML:2.0:protocol';
const NS_SAML = 'urn:oasis:names:tc:SAML:2.0:assertion';
const NS_DS = 'http://www.w3.org/2000/09/xmldsig#';
const EXC_C14N = 'http://www.w3.org/2001/10/xml-exc-c14n#';
const ENVELOPED = 'http://www.w3.org/2000/09/xmldsig#enveloped-signature';
const RSA_SHA256 = 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256';
const SHA256 = 'http://www.w3.org/2001/04/xmlenc#sha256';

/** A refusal from the daemon: HTTP status, stable error code, message. */
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

/**
 * A client for the daemon's HTTP/JSON API over its Unix socket. One curl handle, so the
 * connection is kept alive between calls; curl reconnects by itself when the daemon has
 * closed an idle connection (it does after read_timeout_ms, 5 s by default).
 */
final class HsmSigner
{
    private CurlHandle $curl;

    /**
     * @param float $budget seconds one call may take in total, retries included: keep
     *                      it below the time the citizen's browser is willing to wait
     */
    public function __construct(
        private readonly string $socket,
        private readonly float $budget = 10.0,
    ) {
        $this->curl = curl_init();
    }

    /** Signs $data (the exc-c14n bytes of SignedInfo): the daemon hashes and signs. */
    public function sign(string $key, string $algorithm, string $data): array
    {
        $body = json_encode(['algorithm' => $algorithm, 'data' => base64_encode($data)]);
        $answer = $this->call('POST', '/v1/keys/' . rawurlencode($key) . '/sign', $body);
        return json_decode($answer, true, 8, JSON_THROW_ON_ERROR);
    }

    /** The key's certificate, base64 DER: what X509Certificate and BinarySecurityToken hold. */
    public function certificateBase64(string $key): string
    {
        return $this->call('GET', '/v1/keys/' . rawurlencode($key) . '/certificate?format=base64');
    }

    /** One request, retried on 503 while the Retry-After wait fits in the budget. */
    private function call(string $method, string $path, ?string $body = null): string
    {
        $deadline = microtime(true) + $this->budget;
        while (true) {
            [$status, $retryAfter, $text] = $this->exchange($method, $path, $body, $deadline);
            if ($status === 200) {
                return $text;
            }
            $error = json_decode($text, true)['error'] ?? ['code' => 'unknown', 'message' => $text];
            $wait = $retryAfter ?? 1;
            if ($status !== 503 || microtime(true) + $wait >= $deadline) {
                throw new HsmSignerError($status, (string) $error['code'], (string) $error['message']);
            }
            fwrite(STDERR, "hsm-signer busy ({$error['code']}); retrying in {$wait} s\n");
            usleep($wait * 1_000_000);
        }
    }

    /** @return array{int, ?int, string} status, Retry-After seconds, body */
    private function exchange(string $method, string $path, ?string $body, float $deadline): array
    {
        $retryAfter = null;
        $remainingMs = max(1, (int) (($deadline - microtime(true)) * 1000));
        curl_setopt_array($this->curl, [
            CURLOPT_UNIX_SOCKET_PATH => $this->socket,
            // The host name is ignored on a Unix socket; the path is what matters.
            CURLOPT_URL => 'http://localhost' . $path,
            CURLOPT_CUSTOMREQUEST => $method,
            CURLOPT_POSTFIELDS => $body,
            CURLOPT_HTTPGET => $body === null,
            // "Expect:" stops curl from waiting for "100 Continue" before a body over 1 KiB.
            CURLOPT_HTTPHEADER => $body === null ? [] : ['Content-Type: application/json', 'Expect:'],
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_CONNECTTIMEOUT_MS => min(1000, $remainingMs),
            CURLOPT_TIMEOUT_MS => $remainingMs,
            CURLOPT_HEADERFUNCTION => function ($curl, string $line) use (&$retryAfter): int {
                if (preg_match('/^retry-after:\s*(\d+)/i', $line, $m)) {
                    $retryAfter = (int) $m[1];
                }
                return strlen($line);
            },
        ]);
        $text = curl_exec($this->curl);
        if ($text === false) {
            throw new RuntimeException(sprintf(
                'cannot reach hsm-signer at %s: %s (is the daemon running, and may this user open the socket?)',
                $this->socket,
                curl_error($this->curl),
            ));
        }
        return [curl_getinfo($this->curl, CURLINFO_RESPONSE_CODE), $retryAfter, $text];
    }
}

/** An AuthnRequest without its signature: ID, Issuer, where PZ sends the citizen back. */
function authn_request(string $issuer, string $destination, string $acs): DOMDocument
{
    $doc = new DOMDocument('1.0', 'UTF-8');
    $request = $doc->createElementNS(NS_SAMLP, 'saml2p:AuthnRequest');
    $doc->appendChild($request);
    // An xsd:ID must not start with a digit.
    $request->setAttribute('ID', '_' . bin2hex(random_bytes(20)));
    $request->setAttribute('Version', '2.0');
    $request->setAttribute('IssueInstant', gmdate('Y-m-d\TH:i:s\Z'));
    $request->setAttribute('Destination', $destination);
    $request->setAttribute('AssertionConsumerServiceURL', $acs);
    $request->setAttribute('ProtocolBinding', 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact');
    $request->setAttribute('ForceAuthn', 'false');
    $request->setAttribute('IsPassive', 'false');
    // Tell DOM that ID is an ID, so that Reference URI="#..." means this element.
    $request->setIdAttribute('ID', true);
    $request->appendChild($doc->createElementNS(NS_SAML, 'saml2:Issuer', $issuer));
    return $doc;
}

/** Appends a ds: element with optional text and attributes. */
function ds(DOMNode $parent, string $name, array $attributes = [], ?string $text = null): DOMElement
{
    $doc = $parent instanceof DOMDocument ? $parent : $parent->ownerDocument;
    $element = $doc->createElementNS(NS_DS, 'ds:' . $name);
    if ($text !== null) {
        $element->appendChild($doc->createTextNode($text));
    }
    foreach ($attributes as $attribute => $value) {
        $element->setAttribute($attribute, $value);
    }
    $parent->appendChild($element);
    return $element;
}

/**
 * Signs $doc's root enveloped: Reference URI="#ID" with the transforms
 * enveloped-signature + exc-c14n, then the exc-c14n of SignedInfo signed by the daemon.
 */
function sign_enveloped(DOMDocument $doc, HsmSigner $signer, string $key): void
{
    $root = $doc->documentElement;
    $issuer = $root->getElementsByTagNameNS(NS_SAML, 'Issuer')->item(0);

    // 1. DigestValue: the enveloped-signature transform removes the Signature, so the
    //    digest is over the exc-c14n of the element as it is now, before the Signature
    //    goes in. Nothing may change the element after this (no re-indenting).
    $digest = base64_encode(hash('sha256', $root->C14N(true, false), true));

    // 2. The Signature, after Issuer as the SAML schema wants it.
    $signature = $doc->createElementNS(NS_DS, 'ds:Signature');
    $root->insertBefore($signature, $issuer->nextSibling);
    $signedInfo = ds($signature, 'SignedInfo');
    ds($signedInfo, 'CanonicalizationMethod', ['Algorithm' => EXC_C14N]);
    ds($signedInfo, 'SignatureMethod', ['Algorithm' => RSA_SHA256]);
    $reference = ds($signedInfo, 'Reference', ['URI' => '#' . $root->getAttribute('ID')]);
    $transforms = ds($reference, 'Transforms');
    ds($transforms, 'Transform', ['Algorithm' => ENVELOPED]);
    ds($transforms, 'Transform', ['Algorithm' => EXC_C14N]);
    ds($reference, 'DigestMethod', ['Algorithm' => SHA256]);
    ds($reference, 'DigestValue', [], $digest);

    // 3. SignatureValue: the daemon hashes and signs the exc-c14n bytes of SignedInfo,
    //    taken in place (the document supplies its namespace context).
    $signed = $signer->sign($key, 'RS256', $signedInfo->C14N(true, false));
    ds($signature, 'SignatureValue', [], $signed['signature']);

    // 4. KeyInfo is outside SignedInfo, so it may be added after signing. The certificate
    //    must be the one that signed: compare with certificate_sha256 from the answer (a
    //    renewal between the two calls would show here).
    $certificate = $signer->certificateBase64($key);
    if (hash('sha256', base64_decode($certificate, true)) !== $signed['certificate_sha256']) {
        throw new RuntimeException('the key\'s certificate changed while signing; try again');
    }
    $x509Data = ds(ds($signature, 'KeyInfo'), 'X509Data');
    ds($x509Data, 'X509Certificate', [], $certificate);
}

function main(): int
{
    $options = getopt('', ['socket:', 'key:', 'issuer:', 'destination:', 'acs:', 'help']);
    if (isset($options['help'])) {
        fwrite(STDOUT, "usage: php sign_authn_request.php [--socket PATH] [--key NAME] [--issuer ID] [--destination URL] [--acs URL]\n");
        return 0;
    }
    $socket = $options['socket'] ?? (getenv('HSM_SIGNER_SOCKET') ?: '/run/hsm-signer/hsm-signer.sock');
    $key = $options['key'] ?? (getenv('HSM_SIGNER_KEY') ?: 'epuap');
    $doc = authn_request(
        $options['issuer'] ?? 'https://gsko.przykladowo.pl',
        $options['destination'] ?? 'https://pz.gov.pl/dt/SingleSignOnService',
        $options['acs'] ?? 'https://gsko.przykladowo.pl/saml/acs',
    );
    try {
        sign_enveloped($doc, new HsmSigner($socket), $key);
    } catch (RuntimeException $e) {
        fwrite(STDERR, 'sign_authn_request: ' . $e->getMessage() . "\n");
        return 1;
    }
    // For the HTTP-POST binding, GSKO puts base64_encode() of this in the SAMLRequest
    // form field. saveXML() keeps the signed bytes as they are.
    fwrite(STDOUT, $doc->saveXML());
    return 0;
}

exit(main());
