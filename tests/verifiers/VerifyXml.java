// Verifies the one ds:Signature in an XML file with the JDK's javax.xml.crypto.dsig and
// prints each reference it validated and the element it points at.
//
//   java VerifyXml.java SIGNED.xml CERT.pem
//
// ID attributes are marked as IDs first, as a real verifier must: `ID` (SAML), `Id` and
// `wsu:Id` (WS-Security). DOCTYPEs are refused. Exit 0 only if the signature and every
// reference are valid.

import java.io.FileInputStream;
import java.io.InputStream;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.util.List;
import javax.xml.XMLConstants;
import javax.xml.crypto.dsig.Reference;
import javax.xml.crypto.dsig.XMLSignature;
import javax.xml.crypto.dsig.XMLSignatureFactory;
import javax.xml.crypto.dsig.dom.DOMValidateContext;
import javax.xml.crypto.KeySelector;
import javax.xml.parsers.DocumentBuilderFactory;
import org.w3c.dom.Attr;
import org.w3c.dom.Document;
import org.w3c.dom.Element;
import org.w3c.dom.NamedNodeMap;
import org.w3c.dom.NodeList;

public class VerifyXml {
    static final String DS = "http://www.w3.org/2000/09/xmldsig#";
    static final String WSU =
        "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";

    public static void main(String[] args) throws Exception {
        DocumentBuilderFactory dbf = DocumentBuilderFactory.newInstance();
        dbf.setNamespaceAware(true);
        dbf.setFeature("http://apache.org/xml/features/disallow-doctype-decl", true);
        dbf.setFeature(XMLConstants.FEATURE_SECURE_PROCESSING, true);
        Document doc;
        try (InputStream in = new FileInputStream(args[0])) {
            doc = dbf.newDocumentBuilder().parse(in);
        }
        X509Certificate cert;
        try (InputStream in = new FileInputStream(args[1])) {
            cert = (X509Certificate) CertificateFactory.getInstance("X.509").generateCertificate(in);
        }
        markIds(doc.getElementsByTagNameNS("*", "*"));

        NodeList signatures = doc.getElementsByTagNameNS(DS, "Signature");
        if (signatures.getLength() != 1) {
            System.out.println("java: REJECTED (" + signatures.getLength() + " signatures)");
            System.exit(1);
        }
        DOMValidateContext ctx =
            new DOMValidateContext(KeySelector.singletonKeySelector(cert.getPublicKey()), signatures.item(0));
        ctx.setProperty("org.jcp.xml.dsig.secureValidation", Boolean.TRUE);
        XMLSignatureFactory factory = XMLSignatureFactory.getInstance("DOM");
        XMLSignature signature = factory.unmarshalXMLSignature(ctx);
        boolean valid = signature.validate(ctx);
        boolean all = valid;
        System.out.println("java: SignatureMethod " + signature.getSignedInfo().getSignatureMethod().getAlgorithm());
        System.out.println("java: SignatureValue valid=" + signature.getSignatureValue().validate(ctx));
        for (Object o : signature.getSignedInfo().getReferences()) {
            Reference ref = (Reference) o;
            boolean refValid = ref.validate(ctx);
            all &= refValid;
            String uri = ref.getURI();
            // URI="" (XAdES's enveloped reference) is the whole document.
            Element target = uri.isEmpty() ? doc.getDocumentElement() : doc.getElementById(uri.substring(1));
            String what = target == null ? "(not found)"
                : (uri.isEmpty() ? "the document " : "") + "{" + target.getNamespaceURI() + "}" + target.getLocalName();
            System.out.println("java: reference " + uri + " -> " + what + " valid=" + refValid);
        }
        System.out.println(all ? "java: OK core validity" : "java: REJECTED core validity false");
        System.exit(all ? 0 : 1);
    }

    static void markIds(NodeList elements) {
        for (int i = 0; i < elements.getLength(); i++) {
            Element el = (Element) elements.item(i);
            NamedNodeMap attrs = el.getAttributes();
            for (int j = 0; j < attrs.getLength(); j++) {
                Attr a = (Attr) attrs.item(j);
                String ns = a.getNamespaceURI();
                String name = a.getLocalName();
                boolean plain = ns == null && (name.equals("ID") || name.equals("Id"));
                boolean wsu = WSU.equals(ns) && name.equals("Id");
                if (plain || wsu) {
                    el.setIdAttributeNode(a, true);
                }
            }
        }
    }
}
