// Verifies an enveloped XAdES signature with xadesjs (PeculiarVentures), a verifier this
// project did not write: every ds:Reference (the document and SignedProperties) and the
// SignatureValue, with the key of the certificate in KeyInfo, which must be the one
// given. Used by tests/xades.rs. Exit 0 only when all of that holds.
//
//   node verify_xades.js SIGNED.xml CERT.pem
"use strict";
const fs = require("node:fs");
const nodeCrypto = require("node:crypto");
const xmldom = require("@xmldom/xmldom");
const xpath = require("xpath");
const xadesjs = require("xadesjs");

async function main() {
  const [xmlPath, certPath] = process.argv.slice(2);
  xadesjs.setNodeDependencies({
    XMLSerializer: xmldom.XMLSerializer,
    DOMParser: xmldom.DOMParser,
    DOMImplementation: xmldom.DOMImplementation,
    xpath,
  });
  // Node 20's WebCrypto, as issue 22 asks; Node 18 keeps it under node:crypto.
  xadesjs.Application.setEngine("NodeJS", globalThis.crypto ?? nodeCrypto.webcrypto);
  const doc = xadesjs.Parse(fs.readFileSync(xmlPath, "utf8"));
  const signatures = doc.getElementsByTagNameNS("http://www.w3.org/2000/09/xmldsig#", "Signature");
  if (signatures.length !== 1) throw new Error(`${signatures.length} ds:Signature elements`);
  const given = new nodeCrypto.X509Certificate(fs.readFileSync(certPath)).raw;
  const inKeyInfo = signatures[0].getElementsByTagNameNS("http://www.w3.org/2000/09/xmldsig#", "X509Certificate");
  if (inKeyInfo.length !== 1) throw new Error(`${inKeyInfo.length} X509Certificate elements`);
  const embedded = Buffer.from(inKeyInfo[0].textContent.replace(/\s+/g, ""), "base64");
  if (!embedded.equals(given)) throw new Error("KeyInfo holds another certificate");
  const signed = new xadesjs.SignedXml(doc);
  signed.LoadXml(signatures[0]);
  const references = signed.XmlSignature.SignedInfo.References.Count;
  if (references !== 2) throw new Error(`${references} references, expected 2`);
  const valid = await signed.Verify();
  if (!valid) throw new Error("xadesjs: signature INVALID");
  console.log(`xadesjs: OK (${references} references)`);
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
