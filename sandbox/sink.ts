// A capturing SMTP sink standing in for a tenant's *.mail.protection.outlook.com MX. Stores every
// accepted message as <id>.eml plus <id>.json (envelope, client, node, TLS, client certificate).
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import type { TLSSocket } from "node:tls";
import { parseArgs } from "node:util";
import { SMTPServer, type SMTPServerSession } from "smtp-server";

export interface SinkRecord {
  id: string;
  sink: string;
  mailFrom: string;
  rcptTo: string[];
  clientAddress: string;
  node: string | null;
  heloName: string;
  tls: { protocol: string; cipher: string } | null;
  clientCertificate: { subject: string; issuer: string; chainLength: number; serial: string } | null;
  messageId: string | null;
  size: number;
  receivedAt: string;
}

interface TlsInfo {
  tls: SinkRecord["tls"];
  clientCertificate: SinkRecord["clientCertificate"];
}

function certInfo(socket: TLSSocket): SinkRecord["clientCertificate"] {
  const cert = socket.getPeerCertificate(true);
  if (!cert || !cert.subject) return null;
  let chainLength = 0;
  const seen = new Set<string>();
  for (
    let c: typeof cert | undefined = cert;
    c && c.fingerprint256 && !seen.has(c.fingerprint256);
    c = c.issuerCertificate as typeof cert
  ) {
    seen.add(c.fingerprint256);
    chainLength++;
  }
  const dn = (o: Record<string, string | string[]>) =>
    Object.entries(o)
      .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join("+") : v}`)
      .join(", ");
  return {
    subject: dn(cert.subject as never),
    issuer: dn(cert.issuer as never),
    chainLength,
    serial: cert.serialNumber,
  };
}

function main(): void {
  const { values } = parseArgs({
    options: {
      name: { type: "string" },
      dir: { type: "string" },
      listen: { type: "string", default: "::" },
      key: { type: "string" },
      cert: { type: "string" },
      nodes: { type: "string" },
      port: { type: "string", default: "25" },
    },
  });
  const dir = values.dir!;
  fs.mkdirSync(dir, { recursive: true });
  const nodes = JSON.parse(values.nodes ?? "{}") as Record<string, string>;
  const tlsBySession = new Map<string, TlsInfo>();
  const log = (msg: string) =>
    fs.appendFileSync(path.join(dir, "sink.log"), `${new Date().toISOString()} ${msg}\n`);

  const server = new SMTPServer({
    name: values.name,
    banner: `${values.name} sandbox sink`,
    key: values.key ? fs.readFileSync(values.key) : undefined,
    cert: values.cert ? fs.readFileSync(values.cert) : undefined,
    requestCert: true,
    rejectUnauthorized: false,
    // Without a certificate the sink offers no STARTTLS at all (a tenant MX without TLS, for tests).
    disabledCommands: values.key ? ["AUTH"] : ["AUTH", "STARTTLS"],
    size: 200 * 1024 * 1024,
    logger: false,
    // No reverse lookup of clients: a namespace has only the sandbox's DNS, and a lookup through the
    // machine's resolver would stall each connection (and aim at an address outside the sandbox).
    disableReverseLookup: true,
    onSecure(socket, session, callback) {
      const s = socket as TLSSocket;
      tlsBySession.set(session.id, {
        tls: { protocol: s.getProtocol() ?? "unknown", cipher: s.getCipher()?.name ?? "unknown" },
        clientCertificate: certInfo(s),
      });
      callback();
    },
    onData(stream, session: SMTPServerSession, callback) {
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => {
        const raw = Buffer.concat(chunks);
        const id = `${Date.now()}-${crypto.randomBytes(4).toString("hex")}`;
        const headerEnd = raw.indexOf("\r\n\r\n");
        const headers = raw.subarray(0, headerEnd < 0 ? raw.length : headerEnd).toString("latin1");
        const client = session.remoteAddress.replace(/^::ffff:/, "");
        const info = tlsBySession.get(session.id);
        const record: SinkRecord = {
          id,
          sink: values.name!,
          mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
          rcptTo: session.envelope.rcptTo.map((r) => r.address),
          clientAddress: client,
          node: nodes[client] ?? null,
          heloName: session.hostNameAppearsAs,
          tls: info?.tls ?? null,
          clientCertificate: info?.clientCertificate ?? null,
          messageId: /^message-id:\s*(.+)$/im.exec(headers)?.[1].trim() ?? null,
          size: raw.length,
          receivedAt: new Date().toISOString(),
        };
        // .eml first, .json last: a reader that sees the .json sees the whole message.
        fs.writeFileSync(path.join(dir, `.${id}.eml`), raw);
        fs.renameSync(path.join(dir, `.${id}.eml`), path.join(dir, `${id}.eml`));
        fs.writeFileSync(path.join(dir, `.${id}.json`), JSON.stringify(record, null, 2) + "\n");
        fs.renameSync(path.join(dir, `.${id}.json`), path.join(dir, `${id}.json`));
        log(
          `accepted ${id} from ${client} (${record.node ?? "?"}) ${record.mailFrom} -> ` +
            `${record.rcptTo.join(",")} tls=${record.tls?.protocol ?? "none"}`,
        );
        callback(null, `Queued as ${id}`);
      });
    },
    onClose(session) {
      tlsBySession.delete(session.id);
    },
  });
  server.on("error", (e) => log(`error: ${e.message}`));
  // "::" takes IPv4 and IPv6 alike; the sink's namespace holds only its own addresses.
  server.listen(Number(values.port), values.listen, () =>
    log(`listening on [${values.listen}]:${values.port}`),
  );
  process.on("SIGTERM", () => server.close(() => process.exit(0)));
}

main();
