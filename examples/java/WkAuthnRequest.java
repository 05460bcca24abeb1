/*
 * A login.gov.pl (Węzeł Krajowy) AuthnRequest signed by hsm-signer (saml/sign, ES256 with
 * the WK key), printed as the HTTP-POST binding form for the citizen's browser. The form
 * value is the daemon's xml_base64: the signed bytes, untouched.
 *
 *   javac -d classes HsmSignerClient.java WkAuthnRequest.java
 *   java -cp classes WkAuthnRequest [--socket PATH] [--key wk] [--acs URL]
 */

import java.nio.file.Path;
import java.security.SecureRandom;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.HexFormat;

public final class WkAuthnRequest {
    static final String DESTINATION = "https://symulator.login.gov.pl/login/SingleSignOnService";

    public static void main(String[] args) throws Exception {
        String socket = System.getenv().getOrDefault("HSM_SIGNER_SOCKET", "/run/hsm-signer/hsm-signer.sock");
        String key = "wk";
        String acs = "https://gsko.gmina.example/wk/acs";
        for (int i = 0; i + 1 < args.length; i += 2) {
            switch (args[i]) {
                case "--socket" -> socket = args[i + 1];
                case "--key" -> key = args[i + 1];
                case "--acs" -> acs = args[i + 1];
                default -> throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        byte[] id = new byte[16];
        new SecureRandom().nextBytes(id);
        // An xsd:ID must not start with a digit: hence "ID-". The URLs are XML-escaped.
        String request = "<saml2p:AuthnRequest xmlns:saml2p=\"urn:oasis:names:tc:SAML:2.0:protocol\""
                + " xmlns:saml2=\"urn:oasis:names:tc:SAML:2.0:assertion\""
                + " xmlns:eidas=\"http://eidas.europa.eu/saml-extensions\""
                + " ID=\"ID-" + HexFormat.of().formatHex(id) + "\" Version=\"2.0\""
                + " IssueInstant=\"" + Instant.now().truncatedTo(ChronoUnit.SECONDS) + "\""
                + " Destination=\"" + DESTINATION + "\""
                + " AssertionConsumerServiceURL=\"" + acs.replace("&", "&amp;").replace("\"", "&quot;") + "\""
                + " ForceAuthn=\"true\"><saml2:Issuer>https://gsko.gmina.example</saml2:Issuer>"
                + "<saml2p:Extensions><eidas:SPType>public</eidas:SPType></saml2p:Extensions>"
                + "<saml2p:NameIDPolicy AllowCreate=\"true\""
                + " Format=\"urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified\"/></saml2p:AuthnRequest>";
        HsmSignerClient signer = new HsmSignerClient(Path.of(socket), 10_000);
        String answer;
        try {
            answer = signer.post("/v1/keys/" + HsmSignerClient.segment(key) + "/saml/sign",
                    "{\"xml\":" + HsmSignerClient.json(request) + "}");
        } catch (HsmSignerClient.HsmSignerException e) { // "hsm-signer answered 403 forbidden: ..."
            System.err.println("WkAuthnRequest: " + e.getMessage());
            System.exit(1);
            return;
        }
        System.out.println("<form method=\"post\" action=\"" + DESTINATION + "\">");
        System.out.println("  <input type=\"hidden\" name=\"SAMLRequest\" value=\""
                + HsmSignerClient.jsonString(answer, "xml_base64") + "\"/>");
        System.out.println("</form>");
    }
}
