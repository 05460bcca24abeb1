<?php
/*
 * A login.gov.pl (Węzeł Krajowy) AuthnRequest signed by hsm-signer (saml/sign, ES256 with
 * the WK key), printed as the HTTP-POST binding form that sends the citizen's browser to
 * WK. The form value is the daemon's xml_base64: the signed bytes, untouched.
 *
 *   php wk_authn_request.php [--socket PATH] [--key wk] [--issuer ID] [--destination URL] [--acs URL]
 */

declare(strict_types=1);

require __DIR__ . '/hsm_signer.php';

$options = getopt('', ['socket:', 'key:', 'issuer:', 'destination:', 'acs:']);
$key = $options['key'] ?? 'wk';
$destination = $options['destination'] ?? 'https://symulator.login.gov.pl/login/SingleSignOnService';
$attr = fn (string $value): string => htmlspecialchars($value, ENT_XML1 | ENT_QUOTES);

// An xsd:ID must not start with a digit.
$request = sprintf(
    '<saml2p:AuthnRequest xmlns:saml2p="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion"'
    . ' xmlns:eidas="http://eidas.europa.eu/saml-extensions" ID="ID-%s" Version="2.0" IssueInstant="%s"'
    . ' Destination="%s" AssertionConsumerServiceURL="%s" ForceAuthn="true">'
    . '<saml2:Issuer>%s</saml2:Issuer>'
    . '<saml2p:Extensions><eidas:SPType>public</eidas:SPType></saml2p:Extensions>'
    . '<saml2p:NameIDPolicy AllowCreate="true" Format="urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"/>'
    . '</saml2p:AuthnRequest>',
    bin2hex(random_bytes(16)),
    gmdate('Y-m-d\TH:i:s\Z'),
    $attr($destination),
    $attr($options['acs'] ?? 'https://gsko.gmina.example/wk/acs'),
    $attr($options['issuer'] ?? 'https://gsko.gmina.example'),
);
try {
    $answer = hsm_signer_post(hsm_signer_socket($options), '/v1/keys/' . rawurlencode($key) . '/saml/sign', ['xml' => $request]);
} catch (Throwable $e) { // HsmSignerError: "hsm-signer answered 403 forbidden: ..."
    fwrite(STDERR, 'wk_authn_request: ' . $e->getMessage() . "\n");
    exit(1);
}
printf(
    "<form method=\"post\" action=\"%s\">\n  <input type=\"hidden\" name=\"SAMLRequest\" value=\"%s\"/>\n</form>\n",
    htmlspecialchars($destination),
    $answer['xml_base64'],
);
