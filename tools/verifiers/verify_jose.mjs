// Verifies compact JWS / JWT with Node's `jose` (npm, pinned in package-lock.json), a JOSE
// implementation this project did not write. tests/jose.rs sends a JSON array on stdin,
// one item per token:
//   {"jws", "alg", "cert_pem"} or {"jws", "alg", "jwk"}   the key to verify with;
//   "client_id", "audience"                                 check as an RFC 7523 assertion.
// It prints a JSON array: for each item the protected header, the payload (base64), the
// claims when checked as a JWT, and the JWK's RFC 7638 thumbprint when one was given.
// Any failed verification exits non-zero with the reason.
import * as jose from 'jose';

let text = '';
for await (const chunk of process.stdin) text += chunk;
const out = [];
for (const item of JSON.parse(text)) {
  const key = item.jwk
    ? await jose.importJWK(item.jwk, item.alg)
    : await jose.importX509(item.cert_pem, item.alg);
  const { payload, protectedHeader } = await jose.compactVerify(item.jws, key, {
    algorithms: [item.alg],
  });
  const result = {
    header: protectedHeader,
    payload_base64: Buffer.from(payload).toString('base64'),
  };
  if (item.audience) {
    const jwt = await jose.jwtVerify(item.jws, key, {
      algorithms: [item.alg],
      audience: item.audience,
      issuer: item.client_id,
      subject: item.client_id,
      requiredClaims: ['iat', 'nbf', 'exp', 'jti'],
      maxTokenAge: 300,
    });
    result.claims = jwt.payload;
  }
  if (item.jwk) result.thumbprint = await jose.calculateJwkThumbprint(item.jwk, 'sha256');
  out.push(result);
}
process.stdout.write(JSON.stringify(out));
