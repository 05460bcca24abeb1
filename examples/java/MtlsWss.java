import java.io.FileInputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import java.security.cert.CertificateFactory;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

/**
 * Signs a SOAP envelope for ePUAP through hsm-signer on another host, over mutual TLS.
 *
 * <pre>
 * openssl pkcs12 -export -in gsko-web1.pem -inkey gsko-web1.key -out gsko-web1.p12   # once
 * HSM_SIGNER_P12_PASSWORD=... java MtlsWss.java https://hsm.gmina.local:8443 server-ca.pem \
 *     gsko-web1.p12 epuap unsigned.xml &gt; signed.xml
 * </pre>
 *
 * The signed envelope is written byte for byte as the daemon made it: send it as it is.
 * (The JSON handling reuses HsmSignerClient's encoder and reader.)
 */
public class MtlsWss {
    public static void main(String[] args) throws Exception {
        String url = args[0], ca = args[1], p12 = args[2], key = args[3], envelopeFile = args[4];
        char[] password = System.getenv("HSM_SIGNER_P12_PASSWORD").toCharArray();
        KeyStore identity = KeyStore.getInstance("PKCS12");
        try (FileInputStream in = new FileInputStream(p12)) {
            identity.load(in, password);
        }
        KeyManagerFactory kmf = KeyManagerFactory.getInstance("PKIX");
        kmf.init(identity, password);
        KeyStore trust = KeyStore.getInstance("PKCS12");
        trust.load(null, null);
        try (FileInputStream in = new FileInputStream(ca)) {
            trust.setCertificateEntry("ca", CertificateFactory.getInstance("X.509").generateCertificate(in));
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance("PKIX");
        tmf.init(trust);
        SSLContext ssl = SSLContext.getInstance("TLS");
        ssl.init(kmf.getKeyManagers(), tmf.getTrustManagers(), null);
        HttpClient client = HttpClient.newBuilder().sslContext(ssl).version(HttpClient.Version.HTTP_1_1).build();

        String envelope = Files.readString(Path.of(envelopeFile), StandardCharsets.UTF_8);
        String body = "{\"envelope\":" + HsmSignerClient.json(envelope) + "}";
        HttpRequest request = HttpRequest.newBuilder(URI.create(url + "/v1/keys/" + key + "/wss/sign"))
                .header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(body, StandardCharsets.UTF_8))
                .build();
        HttpResponse<String> response = client.send(request, HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8));
        if (response.statusCode() != 200) {
            System.err.println("hsm-signer answered " + response.statusCode() + " "
                    + HsmSignerClient.jsonString(response.body(), "code") + ": "
                    + HsmSignerClient.jsonString(response.body(), "message"));
            System.exit(1);
        }
        System.out.write(HsmSignerClient.jsonString(response.body(), "envelope").getBytes(StandardCharsets.UTF_8));
        System.out.flush();
    }
}
