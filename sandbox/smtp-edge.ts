// SMTP at the edges of a relay's limits, from one of the sandbox's client namespaces (run it there
// with ip netns exec): oversized mail really sent (nodemailer's SMTP client), a SIZE= declaration
// over the limit (a plain conversation: nodemailer refuses to send one the server advertised it
// would refuse), and connection counts and bursts on raw sockets. Prints one JSON line with what the
// server answered. Every run is bounded in count and time.
import * as net from "node:net";
import * as tls from "node:tls";
import { Readable } from "node:stream";
import { parseArgs } from "node:util";
import SMTPConnection from "nodemailer/lib/smtp-connection";

const { values } = parseArgs({
  options: {
    server: { type: "string" },
    check: { type: "string" },
    bytes: { type: "string", default: "0" },
    count: { type: "string", default: "1" },
  },
});
const server = values.server!;

/** A line-by-line SMTP conversation over STARTTLS, for what a client library will not send. */
async function conversation(commands: string[]): Promise<string[]> {
  let socket: net.Socket = net.connect({ host: server, port: 25 });
  let buffer = "";
  const waiting: ((line: string) => void)[] = [];
  const listen = (s: net.Socket) =>
    s.on("data", (d) => {
      buffer += d.toString("latin1");
      // A reply ends with a line "NNN text" (no dash after the code).
      const m = /(?:^|\r\n)(\d{3}) [^\r\n]*\r\n$/.exec(buffer);
      if (m) {
        const reply = buffer.trim().split("\r\n").pop()!;
        buffer = "";
        waiting.shift()?.(reply);
      }
    });
  const reply = () => new Promise<string>((resolve) => waiting.push(resolve));
  listen(socket);
  const say = (line: string) => {
    const r = reply();
    socket.write(`${line}\r\n`);
    return r;
  };
  const replies = [await reply(), await say("EHLO client.example"), await say("STARTTLS")];
  socket.removeAllListeners("data");
  socket = tls.connect({ socket, servername: server, rejectUnauthorized: false });
  await new Promise((r) => socket.once("secureConnect", r));
  listen(socket);
  replies.push(await say("EHLO client.example"));
  for (const c of commands) replies.push(await say(c));
  // Every reply is in: a reset while the server closes after QUIT (seen now and then) changes nothing.
  socket.on("error", () => undefined);
  socket.end("QUIT\r\n");
  return replies;
}

/** MAIL FROM with SIZE= over the limit: the server must refuse it before any data is sent. */
async function declaredSize(bytes: number): Promise<{ code?: number; reply: string }> {
  const reply = (await conversation([`MAIL FROM:<alice@old.example> SIZE=${bytes}`])).pop()!;
  return { code: Number(reply.slice(0, 3)), reply };
}

/** The server's reply to BYTES really sent, without SIZE= (nodemailer declares none unless asked). */
async function sentSize(bytes: number): Promise<{ code?: number; reply: string }> {
  const c = new SMTPConnection({
    host: server,
    port: 25,
    name: "client.example",
    requireTLS: true,
    tls: { rejectUnauthorized: false },
    connectionTimeout: 10_000,
    socketTimeout: 120_000,
  });
  await new Promise<void>((resolve, reject) => {
    c.once("error", reject);
    c.connect(() => resolve());
  });
  const line = "x".repeat(998) + "\r\n";
  const head = "From: alice@old.example\r\nTo: rcpt@partner.example\r\nSubject: too big\r\n\r\n";
  const body = Readable.from(
    (function* () {
      yield head;
      for (let sent = 0; sent < bytes; sent += line.length) yield line;
    })(),
  );
  const envelope = { from: "alice@old.example", to: ["rcpt@partner.example"] };
  try {
    const info = await new Promise<SMTPConnection.SentMessageInfo>((resolve, reject) =>
      c.send(envelope, body, (err, i) => (err ? reject(err) : resolve(i))),
    );
    return { code: 250, reply: info.response };
  } catch (e) {
    const err = e as { responseCode?: number; response?: string; message: string };
    return { code: err.responseCode, reply: err.response ?? err.message };
  } finally {
    c.close();
  }
}

/** Opens a connection and resolves with the server's greeting line (or how it ended). */
function greeting(): Promise<{ socket: net.Socket; line: string }> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: server, port: 25, timeout: 10_000 });
    let data = "";
    const done = (line: string) => resolve({ socket, line });
    socket.on("data", (d) => {
      data += d.toString("latin1");
      if (data.includes("\r\n")) done(data.split("\r\n")[0]);
    });
    socket.on("timeout", () => done("(timeout)"));
    socket.on("error", (e) => done(`(error ${e.message})`));
    socket.on("close", () => done(data ? data.trim() : "(closed)"));
  });
}

/** Holds COUNT connections open, then opens one more: what does that one hear? */
async function holdThenOneMore(count: number): Promise<{ held: number; extra: string }> {
  const held = [];
  for (let i = 0; i < count; i++) held.push(await greeting());
  await new Promise((r) => setTimeout(r, 500));
  const extra = await greeting();
  for (const h of [...held, extra]) h.socket.destroy();
  return { held: held.filter((h) => h.line.startsWith("220")).length, extra: extra.line };
}

/** COUNT connections one after another: how many got which greeting code. */
async function burst(count: number): Promise<Record<string, number>> {
  const codes: Record<string, number> = {};
  for (let i = 0; i < count; i++) {
    const { socket, line } = await greeting();
    codes[line.slice(0, 3)] = (codes[line.slice(0, 3)] ?? 0) + 1;
    socket.end("QUIT\r\n");
    socket.destroy();
  }
  return codes;
}

async function main(): Promise<unknown> {
  const bytes = Number(values.bytes);
  const count = Math.min(Number(values.count), 1000);
  switch (values.check) {
    case "declared-size":
      return declaredSize(bytes);
    case "sent-size":
      return sentSize(bytes);
    case "hold-connections":
      return holdThenOneMore(count);
    case "burst":
      return burst(count);
    default:
      throw new Error(`unknown --check ${values.check}`);
  }
}

const deadline = setTimeout(() => {
  console.error("smtp-edge: gave up after 170 s");
  process.exit(2);
}, 170_000);
main()
  .then((out) => {
    console.log(JSON.stringify(out));
    clearTimeout(deadline);
  })
  .catch((e) => {
    console.error(e);
    process.exit(1);
  });
