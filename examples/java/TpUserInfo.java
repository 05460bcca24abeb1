/*
 * A TpUserInfo call to ePUAP signed with WS-Security by hsm-signer (wss/sign): the
 * unsigned SOAP 1.1 envelope goes in, the signed one comes out and is written as it is.
 * No XML crypto here; HsmSignerClient.java carries the HTTP over the Unix socket.
 *
 *   javac -d classes HsmSignerClient.java TpUserInfo.java
 *   java -cp classes TpUserInfo [--socket PATH] [--key epuap] ENVELOPE.xml > signed.xml
 */

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

public final class TpUserInfo {
    public static void main(String[] args) throws Exception {
        String socket = System.getenv().getOrDefault("HSM_SIGNER_SOCKET", "/run/hsm-signer/hsm-signer.sock");
        String key = "epuap";
        int i = 0;
        for (; i + 1 < args.length && args[i].startsWith("--"); i += 2) {
            switch (args[i]) {
                case "--socket" -> socket = args[i + 1];
                case "--key" -> key = args[i + 1];
                default -> throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        String envelope = Files.readString(Path.of(args[i]), StandardCharsets.UTF_8);
        HsmSignerClient signer = new HsmSignerClient(Path.of(socket), 10_000);
        String answer;
        try {
            answer = signer.post("/v1/keys/" + HsmSignerClient.segment(key) + "/wss/sign",
                    "{\"envelope\":" + HsmSignerClient.json(envelope) + ",\"timestamp_ttl_seconds\":300}");
        } catch (HsmSignerClient.HsmSignerException e) { // "hsm-signer answered 400 xml_doctype_forbidden: ..."
            System.err.println("TpUserInfo: " + e.getMessage());
            System.exit(1);
            return;
        }
        // Final bytes: send exactly these, e.g. as the body of an HttpClient POST to ePUAP.
        System.out.write(HsmSignerClient.jsonString(answer, "envelope").getBytes(StandardCharsets.UTF_8));
        System.out.flush();
    }
}
