/*
 * Builds a SAML 2.0 AuthnRequest for Profil Zaufany and signs it enveloped (rsa-sha256,
 * exclusive C14N) with the JDK's own XML-DSig API (javax.xml.crypto.dsig, JSR 105) and the
 * hsm-signer daemon; prints the signed XML. No dependencies beyond the JDK:
 *
 *   javac -d classes HsmSignerClient.java SignAuthnRequest.java
 *   java -cp classes SignAuthnRequest [--socket PATH] [--key NAME]
 *
 * JSR 105 computes the digest, the transforms and KeyInfo, but insists on signing with a
 * java.security.PrivateKey. It is given a throwaway key; the canonical SignedInfo it
 * produced is then signed by the daemon, and that signature replaces the throwaway
 * SignatureValue (which is outside SignedInfo, so nothing else changes).
 *
 * --socket defaults to $HSM_SIGNER_SOCKET, then /run/hsm-signer/hsm-signer.sock; --key to
 * $HSM_SIGNER_KEY, then "epuap". See docs/integration.md.
 */

import java.io.ByteArrayInputStream;
import java.io.StringWriter;
import java.nio.file.Path;
import java.security.KeyPairGenerator;
import java.security.MessageDigest;
import java.security.PrivateKey;
import java.security.SecureRandom;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.HexFormat;
import java.util.List;
import javax.xml.crypto.dsig.CanonicalizationMethod;
import javax.xml.crypto.dsig.DigestMethod;
import javax.xml.crypto.dsig.Reference;
import javax.xml.crypto.dsig.SignatureMethod;
import javax.xml.crypto.dsig.SignedInfo;
import javax.xml.crypto.dsig.Transform;
import javax.xml.crypto.dsig.XMLSignature;
import javax.xml.crypto.dsig.XMLSignatureFactory;
import javax.xml.crypto.dsig.dom.DOMSignContext;
import javax.xml.crypto.dsig.keyinfo.KeyInfoFactory;
import javax.xml.crypto.dsig.spec.C14NMethodParameterSpec;
import javax.xml.crypto.dsig.spec.TransformParameterSpec;
import javax.xml.parsers.DocumentBuilderFactory;
import javax.xml.transform.TransformerFactory;
import javax.xml.transform.dom.DOMSource;
import javax.xml.transform.stream.StreamResult;
import org.w3c.dom.Document;
import org.w3c.dom.Element;

public final class SignAuthnRequest {
    static final String SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol";
    static final String SAML = "urn:oasis:names:tc:SAML:2.0:assertion";
    static final String XMLNS = "http://www.w3.org/2000/xmlns/";

    /** Only for JSR 105's own signing step; its signature is thrown away. */
    private static final PrivateKey THROWAWAY = throwawayKey();

    public static void main(String[] args) throws Exception {
        // Without this, the JDK wraps base64 (X509Certificate, SignatureValue) at 76
        // characters with "&#13;" line ends, which some SAML stacks reject.
        System.setProperty("com.sun.org.apache.xml.internal.security.ignoreLineBreaks", "true");
        String socket = env("HSM_SIGNER_SOCKET", "/run/hsm-signer/hsm-signer.sock");
        String key = env("HSM_SIGNER_KEY", "epuap");
        for (int i = 0; i + 1 < args.length; i += 2) {
            switch (args[i]) {
                case "--socket" -> socket = args[i + 1];
                case "--key" -> key = args[i + 1];
                default -> throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        HsmSignerClient hsm = new HsmSignerClient(Path.of(socket), 10_000);
        Document doc = authnRequest("https://gsko.przykladowo.pl",
                "https://pz.gov.pl/dt/SingleSignOnService", "https://gsko.przykladowo.pl/saml/acs");
        try {
            signEnveloped(doc, hsm, key);
        } catch (HsmSignerClient.HsmSignerException e) {
            System.err.println("SignAuthnRequest: " + e.getMessage());
            System.exit(1);
        }
        StringWriter out = new StringWriter();
        TransformerFactory.newInstance().newTransformer().transform(new DOMSource(doc), new StreamResult(out));
        System.out.println(out);
    }

    /** An AuthnRequest without its signature. */
    static Document authnRequest(String issuerId, String destination, String acs) throws Exception {
        DocumentBuilderFactory factory = DocumentBuilderFactory.newInstance();
        factory.setNamespaceAware(true);
        Document doc = factory.newDocumentBuilder().newDocument();
        Element request = doc.createElementNS(SAMLP, "saml2p:AuthnRequest");
        // Declare the namespaces as attributes too: the JDK's canonicalizer works on the DOM
        // and sees only declared namespaces, while the serializer adds the missing ones, so
        // without this the digest would not match the printed document.
        request.setAttributeNS(XMLNS, "xmlns:saml2p", SAMLP);
        doc.appendChild(request);
        byte[] random = new byte[20];
        new SecureRandom().nextBytes(random);
        request.setAttribute("ID", "_" + HexFormat.of().formatHex(random));
        request.setAttribute("Version", "2.0");
        request.setAttribute("IssueInstant", Instant.now().truncatedTo(ChronoUnit.SECONDS).toString());
        request.setAttribute("Destination", destination);
        request.setAttribute("AssertionConsumerServiceURL", acs);
        request.setAttribute("ProtocolBinding", "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact");
        Element issuer = doc.createElementNS(SAML, "saml2:Issuer");
        issuer.setAttributeNS(XMLNS, "xmlns:saml2", SAML);
        issuer.setTextContent(issuerId);
        request.appendChild(issuer);
        return doc;
    }

    /** Reference URI="#ID", enveloped-signature + exc-c14n, certificate in X509Data. */
    static void signEnveloped(Document doc, HsmSignerClient hsm, String key) throws Exception {
        Element request = doc.getDocumentElement();
        String id = request.getAttribute("ID");
        byte[] der = hsm.certificate(key, "der");
        X509Certificate certificate = (X509Certificate) CertificateFactory.getInstance("X.509")
                .generateCertificate(new ByteArrayInputStream(der));

        XMLSignatureFactory factory = XMLSignatureFactory.getInstance("DOM");
        Reference reference = factory.newReference("#" + id,
                factory.newDigestMethod(DigestMethod.SHA256, null),
                List.of(factory.newTransform(Transform.ENVELOPED, (TransformParameterSpec) null),
                        factory.newTransform(CanonicalizationMethod.EXCLUSIVE, (TransformParameterSpec) null)),
                null, null);
        SignedInfo signedInfo = factory.newSignedInfo(
                factory.newCanonicalizationMethod(CanonicalizationMethod.EXCLUSIVE, (C14NMethodParameterSpec) null),
                factory.newSignatureMethod(SignatureMethod.RSA_SHA256, null),
                List.of(reference));
        KeyInfoFactory keyInfos = factory.getKeyInfoFactory();
        XMLSignature signature = factory.newXMLSignature(signedInfo,
                keyInfos.newKeyInfo(List.of(keyInfos.newX509Data(List.of(certificate)))));
        // The Signature goes right after Issuer, as the SAML schema wants it.
        Element issuer = (Element) request.getElementsByTagNameNS(SAML, "Issuer").item(0);
        DOMSignContext context = issuer.getNextSibling() == null
                ? new DOMSignContext(THROWAWAY, request)
                : new DOMSignContext(THROWAWAY, request, issuer.getNextSibling());
        context.setIdAttributeNS(request, null, "ID");
        context.setDefaultNamespacePrefix("ds");
        signature.sign(context);

        // The exc-c14n bytes of SignedInfo, exactly as JSR 105 digested and signed them.
        byte[] canonical = signature.getSignedInfo().getCanonicalizedData().readAllBytes();
        String value = hsm.signAnswer(key, "RS256", canonical);
        String signedBy = HsmSignerClient.jsonString(value, "certificate_sha256");
        if (!signedBy.equals(HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(der)))) {
            throw new IllegalStateException("the key's certificate changed while signing; try again");
        }
        Element signatureValue = (Element) request
                .getElementsByTagNameNS(XMLSignature.XMLNS, "SignatureValue").item(0);
        signatureValue.setTextContent(HsmSignerClient.jsonString(value, "signature"));
    }

    private static String env(String name, String fallback) {
        String value = System.getenv(name);
        return value == null || value.isEmpty() ? fallback : value;
    }

    private static PrivateKey throwawayKey() {
        try {
            KeyPairGenerator generator = KeyPairGenerator.getInstance("RSA");
            generator.initialize(2048);
            return generator.generateKeyPair().getPrivate();
        } catch (Exception e) {
            throw new ExceptionInInitializerError(e);
        }
    }
}
