<?php
// Signs a SOAP envelope for ePUAP through hsm-signer on another host, over mutual TLS.
//
//   php mtls_wss.php https://hsm.gmina.local:8443 server-ca.pem gsko-web1.pem gsko-web1.key \
//       epuap unsigned.xml > signed.xml
//
// The signed envelope is written byte for byte as the daemon made it: send it as it is.

[$script, $url, $ca, $cert, $key, $keyName, $envelopeFile] = $argv;

$ch = curl_init(rtrim($url, '/') . '/v1/keys/' . rawurlencode($keyName) . '/wss/sign');
curl_setopt_array($ch, [
    CURLOPT_SSLCERT => $cert,
    CURLOPT_SSLKEY => $key,
    CURLOPT_CAINFO => $ca,
    CURLOPT_POST => true,
    CURLOPT_POSTFIELDS => json_encode(['envelope' => file_get_contents($envelopeFile)]),
    CURLOPT_HTTPHEADER => ['Content-Type: application/json'],
    CURLOPT_RETURNTRANSFER => true,
    CURLOPT_TIMEOUT => 10,
]);
$body = curl_exec($ch);
if ($body === false) {
    fwrite(STDERR, 'hsm-signer not reached: ' . curl_error($ch) . "\n");
    exit(1);
}
$status = curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
$answer = json_decode($body, true);
if ($status !== 200) {
    fwrite(STDERR, "hsm-signer answered $status {$answer['error']['code']}: {$answer['error']['message']}\n");
    exit(1);
}
fwrite(STDOUT, $answer['envelope']);
