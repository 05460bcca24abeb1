/*
 * Signs XML-DSig SignedInfo bytes through the hsm-signer daemon, and fetches the
 * certificate for KeyInfo. A Java 17 single-file program with no dependencies:
 *
 *   java HsmSignerClient.java [--socket PATH] [--key NAME] sign [--algorithm RS256] [FILE]
 *   java HsmSignerClient.java [--socket PATH] [--key NAME] certificate [--format base64|pem]
 *
 * `sign` reads the exc-c14n bytes of SignedInfo from FILE (or standard input) and prints
 * the base64 SignatureValue. `certificate` prints the certificate as base64 DER (for
 * KeyInfo/X509Data/X509Certificate or a BinarySecurityToken) or PEM with the chain.
 *
 * java.net.http cannot use a Unix socket, so this speaks HTTP/1.1 by hand over a
 * SocketChannel (JDK 16+), one connection per request ("Connection: close"): on a local
 * socket a connection costs microseconds. The JDK has no JSON parser; the daemon's
 * answers are small and flat, so a regular expression reads them.
 *
 * --socket defaults to $HSM_SIGNER_SOCKET, then /run/hsm-signer/hsm-signer.sock; --key to
 * $HSM_SIGNER_KEY, then "epuap". See docs/integration.md.
 */

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.net.URLEncoder;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Base64;
import java.util.Locale;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public final class HsmSignerClient {

    /** The daemon refused: HTTP status, stable error code, message. */
    public static final class HsmSignerException extends Exception {
        private static final long serialVersionUID = 1L;
        public final int status;
        public final String code;

        HsmSignerException(int status, String code, String message) {
            super("hsm-signer answered " + status + " " + code + ": " + message);
            this.status = status;
            this.code = code;
        }
    }

    /** One HTTP answer. */
    record Response(int status, Integer retryAfter, byte[] body) {
        String text() {
            return new String(body, StandardCharsets.UTF_8);
        }
    }

    /** Closes a channel whose exchange overruns its deadline, which unblocks the read. */
    private static final ScheduledExecutorService WATCHDOG =
            Executors.newSingleThreadScheduledExecutor(r -> {
                Thread t = new Thread(r, "hsm-signer-timeout");
                t.setDaemon(true);
                return t;
            });

    private final Path socket;
    private final long budgetMillis;

    /**
     * @param budgetMillis how long one call may take in total, retries on 503 included
     */
    public HsmSignerClient(Path socket, long budgetMillis) {
        this.socket = socket;
        this.budgetMillis = budgetMillis;
    }

    /** Signs data (the daemon hashes it) and returns the base64 SignatureValue. */
    public String sign(String key, String algorithm, byte[] data)
            throws IOException, HsmSignerException, InterruptedException {
        return jsonString(signAnswer(key, algorithm, data), "signature");
    }

    /**
     * Signs data and returns the daemon's whole JSON answer: signature, algorithm_uri,
     * certificate_sha256 (read fields with {@link #jsonString}).
     */
    public String signAnswer(String key, String algorithm, byte[] data)
            throws IOException, HsmSignerException, InterruptedException {
        if (!algorithm.matches("[A-Za-z0-9:/.#-]+")) {
            throw new IllegalArgumentException("not an algorithm name or URI: " + algorithm);
        }
        String body = "{\"algorithm\":\"" + algorithm + "\",\"data\":\""
                + Base64.getEncoder().encodeToString(data) + "\"}";
        return call("POST", "/v1/keys/" + segment(key) + "/sign", body).text();
    }

    /** The key's certificate: "base64" (DER, one line), "pem" (with the chain) or "der". */
    public byte[] certificate(String key, String format)
            throws IOException, HsmSignerException, InterruptedException {
        return call("GET", "/v1/keys/" + segment(key) + "/certificate?format=" + segment(format), null)
                .body();
    }

    /**
     * POSTs a JSON body (e.g. to "/v1/keys/epuap/wss/sign") and returns the JSON answer;
     * a refusal throws {@link HsmSignerException} with the daemon's code and message.
     */
    public String post(String path, String jsonBody)
            throws IOException, HsmSignerException, InterruptedException {
        return call("POST", path, jsonBody).text();
    }

    /** A key name as one URL path segment. */
    public static String segment(String text) {
        return URLEncoder.encode(text, StandardCharsets.UTF_8).replace("+", "%20");
    }

    /** One request, retried on 503 while the Retry-After wait fits in the budget. */
    private Response call(String method, String path, String body)
            throws IOException, HsmSignerException, InterruptedException {
        long deadline = System.currentTimeMillis() + budgetMillis;
        while (true) {
            Response response = exchange(method, path, body, deadline - System.currentTimeMillis());
            if (response.status() == 200) {
                return response;
            }
            String text = response.text();
            String code = jsonStringOr(text, "code", "unknown");
            String message = jsonStringOr(text, "message", text);
            long waitMillis = (response.retryAfter() == null ? 1 : response.retryAfter()) * 1000L;
            if (response.status() != 503 || System.currentTimeMillis() + waitMillis >= deadline) {
                throw new HsmSignerException(response.status(), code, message);
            }
            System.err.printf("hsm-signer busy (%s); retrying in %d s%n", code, waitMillis / 1000);
            Thread.sleep(waitMillis);
        }
    }

    private Response exchange(String method, String path, String body, long timeoutMillis)
            throws IOException {
        byte[] payload = body == null ? new byte[0] : body.getBytes(StandardCharsets.UTF_8);
        StringBuilder head = new StringBuilder()
                .append(method).append(' ').append(path).append(" HTTP/1.1\r\n")
                .append("Host: localhost\r\n")
                .append("Connection: close\r\n");
        if (body != null) {
            head.append("Content-Type: application/json\r\n")
                    .append("Content-Length: ").append(payload.length).append("\r\n");
        }
        head.append("\r\n");
        try (SocketChannel channel = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            var watchdog = WATCHDOG.schedule(() -> closeQuietly(channel),
                    Math.max(1, timeoutMillis), TimeUnit.MILLISECONDS);
            try {
                channel.connect(UnixDomainSocketAddress.of(socket));
                ByteArrayOutputStream request = new ByteArrayOutputStream();
                request.write(head.toString().getBytes(StandardCharsets.US_ASCII));
                request.write(payload);
                try {
                    writeAll(channel, request.toByteArray());
                } catch (IOException e) {
                    // The daemon may refuse (403, 404, 413) before reading the whole body
                    // and close; its answer is still there to read.
                    if (watchdog.isDone()) {
                        throw e;
                    }
                }
                return parse(readAll(channel));
            } catch (IOException e) {
                if (watchdog.isDone()) {
                    throw new IOException("no answer from hsm-signer within " + timeoutMillis + " ms", e);
                }
                throw e;
            } finally {
                watchdog.cancel(false);
            }
        }
    }

    private static void closeQuietly(SocketChannel channel) {
        try {
            channel.close();
        } catch (IOException ignored) {
            // Closed already.
        }
    }

    private static void writeAll(SocketChannel channel, byte[] bytes) throws IOException {
        ByteBuffer buffer = ByteBuffer.wrap(bytes);
        while (buffer.hasRemaining()) {
            channel.write(buffer);
        }
    }

    private static byte[] readAll(SocketChannel channel) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteBuffer buffer = ByteBuffer.allocate(16 * 1024);
        while (channel.read(buffer) >= 0) {
            out.write(buffer.array(), 0, buffer.position());
            buffer.clear();
        }
        return out.toByteArray();
    }

    /** Status line, headers and a Content-Length body (the daemon does not chunk). */
    private static Response parse(byte[] raw) throws IOException {
        int end = indexOf(raw, "\r\n\r\n".getBytes(StandardCharsets.US_ASCII));
        if (end < 0) {
            throw new IOException("incomplete HTTP answer from hsm-signer");
        }
        String[] lines = new String(raw, 0, end, StandardCharsets.ISO_8859_1).split("\r\n");
        String[] statusLine = lines[0].split(" ", 3);
        int status = Integer.parseInt(statusLine[1]);
        Integer retryAfter = null;
        int length = raw.length - end - 4;
        for (int i = 1; i < lines.length; i++) {
            String[] header = lines[i].split(":", 2);
            String name = header[0].trim().toLowerCase(Locale.ROOT);
            if (name.equals("retry-after")) {
                retryAfter = Integer.valueOf(header[1].trim());
            } else if (name.equals("content-length")) {
                length = Math.min(length, Integer.parseInt(header[1].trim()));
            }
        }
        byte[] body = new byte[length];
        System.arraycopy(raw, end + 4, body, 0, length);
        return new Response(status, retryAfter, body);
    }

    private static int indexOf(byte[] haystack, byte[] needle) {
        outer:
        for (int i = 0; i + needle.length <= haystack.length; i++) {
            for (int j = 0; j < needle.length; j++) {
                if (haystack[i + j] != needle[j]) {
                    continue outer;
                }
            }
            return i;
        }
        return -1;
    }

    /** The string value of "field" in the daemon's flat JSON answer (escapes undone). */
    public static String jsonString(String json, String field) throws IOException {
        String value = jsonStringOr(json, field, null);
        if (value == null) {
            throw new IOException("no \"" + field + "\" in hsm-signer's answer: " + json);
        }
        return value;
    }

    /**
     * Reads "field": "..." by hand, not with a regular expression: a signed envelope is a
     * long string, and java.util.regex recurses per character on alternations in a loop.
     */
    private static String jsonStringOr(String json, String field, String fallback) {
        String key = "\"" + field + "\"";
        int at = json.indexOf(key);
        while (at >= 0) {
            int i = at + key.length();
            while (i < json.length() && Character.isWhitespace(json.charAt(i))) {
                i++;
            }
            if (i < json.length() && json.charAt(i) == ':') {
                i++;
                while (i < json.length() && Character.isWhitespace(json.charAt(i))) {
                    i++;
                }
                if (i < json.length() && json.charAt(i) == '"') {
                    return unescape(json, i + 1);
                }
            }
            at = json.indexOf(key, at + 1);
        }
        return fallback;
    }

    /** The JSON string that starts at `from` (after its opening quote), unescaped. */
    private static String unescape(String json, int from) {
        StringBuilder out = new StringBuilder();
        for (int i = from; i < json.length(); i++) {
            char c = json.charAt(i);
            if (c == '"') {
                return out.toString();
            }
            if (c != '\\') {
                out.append(c);
                continue;
            }
            char e = json.charAt(++i);
            switch (e) {
                case 'n' -> out.append('\n');
                case 'r' -> out.append('\r');
                case 't' -> out.append('\t');
                case 'b' -> out.append('\b');
                case 'f' -> out.append('\f');
                case 'u' -> {
                    out.append((char) Integer.parseInt(json.substring(i + 1, i + 5), 16));
                    i += 4;
                }
                default -> out.append(e); // \" \\ \/
            }
        }
        return out.toString();
    }

    /** `text` as a JSON string literal, quotes included. */
    public static String json(String text) {
        StringBuilder out = new StringBuilder("\"");
        for (char c : text.toCharArray()) {
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                case '\n' -> out.append("\\n");
                case '\r' -> out.append("\\r");
                case '\t' -> out.append("\\t");
                default -> {
                    if (c < 0x20) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
            }
        }
        return out.append('"').toString();
    }

    private static void usage() {
        System.err.println("usage: java HsmSignerClient.java [--socket PATH] [--key NAME]"
                + " (sign [--algorithm RS256] [FILE] | certificate [--format base64|pem])");
        System.exit(2);
    }

    public static void main(String[] args) throws Exception {
        String env = System.getenv("HSM_SIGNER_SOCKET");
        String socket = env != null && !env.isEmpty() ? env : "/run/hsm-signer/hsm-signer.sock";
        env = System.getenv("HSM_SIGNER_KEY");
        String key = env != null && !env.isEmpty() ? env : "epuap";
        String command = null;
        String algorithm = "RS256";
        String format = "base64";
        String file = null;
        for (int i = 0; i < args.length; i++) {
            boolean hasValue = i + 1 < args.length;
            switch (args[i]) {
                case "--socket" -> socket = hasValue ? args[++i] : null;
                case "--key" -> key = hasValue ? args[++i] : null;
                case "--algorithm" -> algorithm = hasValue ? args[++i] : null;
                case "--format" -> format = hasValue ? args[++i] : null;
                case "sign", "certificate" -> command = args[i];
                default -> file = args[i];
            }
        }
        if (command == null || socket == null || key == null || algorithm == null || format == null) {
            usage();
        }
        HsmSignerClient client = new HsmSignerClient(Path.of(socket), 10_000);
        try {
            if (command.equals("sign")) {
                byte[] data = file == null ? System.in.readAllBytes() : Files.readAllBytes(Path.of(file));
                System.out.println(client.sign(key, algorithm, data));
            } else {
                byte[] certificate = client.certificate(key, format);
                System.out.write(certificate);
                if (format.equals("base64")) {
                    System.out.println();
                }
                System.out.flush();
            }
        } catch (HsmSignerException e) {
            System.err.println("HsmSignerClient: " + e.getMessage());
            System.exit(1);
        } catch (IOException e) {
            System.err.println("HsmSignerClient: cannot talk to hsm-signer at " + socket + ": " + e
                    + " (is the daemon running, and may this user open the socket?)");
            System.exit(1);
        }
    }
}
