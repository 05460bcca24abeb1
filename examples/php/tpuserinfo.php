<?php
/*
 * A TpUserInfo call to ePUAP signed with WS-Security by hsm-signer (wss/sign). No XML
 * crypto here: the daemon adds the BinarySecurityToken and the signature over the Body.
 *
 *   php tpuserinfo.php [--socket PATH] [--key epuap] ENVELOPE.xml > signed.xml
 *       signs an unsigned SOAP 1.1 envelope and writes the signed one, byte for byte
 *   php tpuserinfo.php [--socket PATH] [--key epuap] --send URL USER_ID
 *       SoapClient builds GetTpUserInfo, __doRequest has it signed and sends the signed
 *       bytes unchanged to URL; prints what it sent
 */

declare(strict_types=1);

require __DIR__ . '/hsm_signer.php';

/**
 * SoapClient whose requests hsm-signer signs. SoapClient serialises the envelope itself,
 * so the only place to sign is __doRequest, and the signed bytes go to the parent as they
 * are: never load them into a DOM again.
 */
final class SignedSoapClient extends SoapClient
{
    public string $lastSigned = '';

    public function __construct(?string $wsdl, array $options, private string $socket, private string $key)
    {
        parent::__construct($wsdl, $options);
    }

    public function __doRequest(string $request, string $location, string $action, int $version, bool $oneWay = false): ?string
    {
        $answer = hsm_signer_post($this->socket, '/v1/keys/' . rawurlencode($this->key) . '/wss/sign', ['envelope' => $request]);
        $this->lastSigned = $answer['envelope'];
        return parent::__doRequest($this->lastSigned, $location, $action, $version, $oneWay);
    }
}

$options = getopt('', ['socket:', 'key:', 'send:'], $rest);
$socket = hsm_signer_socket($options);
$key = $options['key'] ?? 'epuap';
$arg = $argv[$rest] ?? null;
if ($arg === null) {
    fwrite(STDERR, "usage: php tpuserinfo.php [--socket PATH] [--key NAME] (ENVELOPE.xml | --send URL USER_ID)\n");
    exit(2);
}
try {
    if (isset($options['send'])) {
        $client = new SignedSoapClient(null, [
            'location' => $options['send'],
            'uri' => 'http://wsdl.tpuserinfo.epuap.gov.pl/',
            'soap_version' => SOAP_1_1,
            'exceptions' => true,
        ], $socket, $key);
        $client->__soapCall('GetTpUserInfo', [new SoapParam($arg, 'userId')]);
        echo $client->lastSigned;
    } else {
        $answer = hsm_signer_post($socket, '/v1/keys/' . rawurlencode($key) . '/wss/sign', [
            'envelope' => file_get_contents($arg),
            'timestamp_ttl_seconds' => 300,
        ]);
        echo $answer['envelope']; // final bytes: send exactly these
    }
} catch (Throwable $e) { // HsmSignerError: "hsm-signer answered 400 xml_doctype_forbidden: ..."
    fwrite(STDERR, 'tpuserinfo: ' . $e->getMessage() . "\n");
    exit(1);
}
